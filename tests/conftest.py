"""Test setup: eight simulated CPU devices, so that sharding code runs on a real mesh; JAX's
persistent compilation cache for the test run; slow artefacts built once per run.

XLA_FLAGS and the cache's environment must be set before jax is imported anywhere, hence here
at the top.
"""

import gc
import importlib.util
import json
import os
import pathlib
import shutil
import tempfile
import time

import pytest

from helpers import build_once
from helpers import DEFAULT_RUN
from helpers import IN_PROCESS_XLA_FLAGS
from helpers import ROOT
from helpers import train_command

os.environ['XLA_FLAGS'] = (
  f'{os.environ.get("XLA_FLAGS", "")} {IN_PROCESS_XLA_FLAGS} '
  '--xla_force_host_platform_device_count=8'
).strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# JAX's persistent compilation cache, private to this test run: the many `python -m
# vit_jax.main` processes that tests start (resumes, kills, 2-process runs) and tests that
# compile the same step again load it instead of compiling (~13 s of a ~28 s launch, measured).
# The executable is the one XLA compiled, so results are unchanged. pytest-xdist's workers
# start from this process (and inherit the variable); the process that made it removes it.
_OWN_CACHE = 'JAX_COMPILATION_CACHE_DIR' not in os.environ
if _OWN_CACHE:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='vit_jax_tests_jax_cache_')
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')
  # A size limit makes JAX lock the cache (with `filelock`) while reading and writing, so that
  # one process never reads an entry that another is still writing.
  if importlib.util.find_spec('filelock'):
    os.environ.setdefault('JAX_COMPILATION_CACHE_MAX_SIZE', str(8 << 30))

# `../shared` beside the checkout holds real data (MNIST) for some tests; absent in some places.
SHARED_DIR = pathlib.Path(__file__).resolve().parents[1].parent / 'shared'


@pytest.fixture
def shared_dir():
  """Path of ../shared; skips the test cleanly when it is absent."""
  if not (SHARED_DIR / 'data').is_dir():
    pytest.skip('../shared is not present beside the checkout')
  return SHARED_DIR


def _prepare_digits(path):
  from vit_jax import data

  data.get_dataset_info('sklearn_digits', data_dir=str(path))


@pytest.fixture(scope='session')
def digits_data_dir(tmp_path_factory):
  """A TFDS data_dir with `sklearn_digits` prepared, private to this test run: prepared once
  and read by every pytest-xdist worker and the processes that tests start."""
  return str(build_once(tmp_path_factory, 'tfds', _prepare_digits))


def _train_default_run(folder, data_dir):
  start = time.time()
  # A relative --workdir, as users type one (the command runs in the checkout's root).
  workdir = os.path.relpath(folder / 'workdir', ROOT)
  final, printed = train_command(workdir, data_dir, **DEFAULT_RUN)
  (folder / 'final.json').write_text(json.dumps(dict(final, seconds=time.time() - start)))
  (folder / 'stdout.txt').write_text(printed)


@pytest.fixture(scope='session')
def default_run(tmp_path_factory, digits_data_dir):
  """(workdir, final metrics + 'seconds' + 'printed', its stdout) of the README's default job
  shortened to 500 steps (helpers.DEFAULT_RUN), run once per test run as the README runs it:
  `python -m vit_jax.main` with its own device count (one per core; helpers.command_env).
  test_train_loop checks it learns, fine-tuning and transfer tests start from it. Shared by
  every test and worker that needs it: copy it before changing anything in it."""
  folder = build_once(
    tmp_path_factory, 'default_run', lambda f: _train_default_run(f, digits_data_dir)
  )
  final = json.loads((folder / 'final.json').read_text())
  return folder / 'workdir', dict(final, printed=(folder / 'stdout.txt').read_text())


def pytest_configure(config):
  # Reading a damaged checkpoint (test_checkpoint_faults) fails in Orbax's async reads; vit_jax
  # catches that and falls back, but Orbax leaves the other reads' coroutines unfinished and
  # each one's error is reported when the garbage collector frees it, in whichever test runs
  # then (~200 warnings). Expected, and not a result of the test that shows them.
  config.addinivalue_line(
    'filterwarnings',
    'ignore:Exception ignored in. <coroutine object _read_array_index_and_device_put'
    ':pytest.PytestUnraisableExceptionWarning',
  )


def pytest_collection_finish(session):
  """Moves everything imported so far (TensorFlow, PyTorch, JAX, every test module) out of the
  garbage collector's sight: its full collections walked all of it again and again, ~3% of the
  run's CPU in the two workers (perf). Those objects live until the process ends anyway."""
  del session
  gc.freeze()


def pytest_unconfigure(config):
  del config
  if _OWN_CACHE:
    shutil.rmtree(os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)


# The slowest tests (measured with `--durations`, each 25-140 s on a 2-core CPU), in two
# groups, each group's shared artefact built once by one worker: a 2-process run and a resumed
# run (group 0); the default job's 500-step run that fine-tuning starts from (group 1). Also the
# modules whose module-scoped fixture is slow: on one worker it is built once, not twice, and
# a build_once artefact is never awaited by the other worker, idle (measured: 30-40 s each).
SLOW_GROUPS = (
  (
    'test_train_multiprocess.py::',
    'test_train_resume.py::',
    'test_colabs.py::test_notebook_runs[finetune]',
    'test_colabs.py::test_notebook_runs[sharding]',
    'test_benchmarks.py::',
    'test_no_tensorflow_import.py::',  # its module fixture: one fresh interpreter, ~8 s.
    'test_predict.py::',  # a trained run, built once (build_once): ~15 s.
  ),
  (
    'test_train_loop.py::test_default_config_learns',
    'test_train_finetune.py::',
    'test_train_transfer.py::',
    'test_colabs.py::test_notebook_runs[analysis]',
    'test_colabs.py::test_notebook_runs[quickstart]',
    'test_analyze_cli.py::',
    'test_train_sharding.py::',  # its module fixture: a 1-device run, ~10-16 s.
    'test_checkpoint_faults.py::',  # a trained run, built once (build_once): ~12 s.
  ),
)


def pytest_collection_modifyitems(config, items):
  """With `-n 2`, starts each worker on one of SLOW_GROUPS, the rest of the tests after them.

  pytest-xdist's default (load) scheduling gives each worker a first chunk of n / 8
  consecutive tests, then more as it finishes. In file order the slowest tests come last
  (test_train_*), and tests of one shared artefact can run on both workers at once (one then
  waits for the other's build): a long tail with one worker idle. Placing each group at the
  start of one worker's first chunk runs the two groups side by side from the start, each on
  one worker, and the short tests fill in at the end.
  """
  if getattr(config, 'workerinput', {}).get('workercount') != 2:
    return
  key = lambda item: f'{item.path.name}::{item.name}'
  groups = [[i for i in items if key(i).startswith(g)] for g in SLOW_GROUPS]
  rest = [i for i in items if not any(i in g for g in groups)]
  chunk = max(len(items) // 2 // 4, 2)  # xdist's first chunk per worker.
  head = groups[0] + rest[: max(chunk - len(groups[0]), 0)]
  items[:] = head + groups[1] + rest[len(head) - len(groups[0]) :]
