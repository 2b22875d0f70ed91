"""Shared test helpers: loading config files as `main` does; building something slow once per
test run for every pytest-xdist worker."""

import fcntl
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import traceback

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# How XLA:CPU compiles in the test run. Users run XLA's default (LLVM -O2); both are IEEE float32
# code, so the tests' tolerances, which follow from float32 rounding, hold either way. A test run
# compiles far more than it computes (perf, 2-core Intel Xeon: LLVM was ~20% of its CPU at -O2).
# - Commands that tests start (command_env: `python -m vit_jax.main`, `analyze`...) run up to a
#   few hundred steps: -O1, which halves LLVM's time with steps as fast as at -O2 (a tiny ViT's
#   sharded init compile 3.9 -> 1.7 s, its train step 3.7 -> 2.7 s).
# - The pytest workers' own tests (and the notebooks' kernels, which inherit their environment)
#   compile many programs and run each for a few steps: -O0 compiles ~25% faster still (two
#   sharded tiny-ViT trainings: 21.3 -> 16.2 s CPU, mean of 3) and runs ~45% slower, which only
#   long runs would pay (none runs in-process: the 500-step default run is a command,
#   conftest.default_run).
TEST_XLA_FLAGS = '--xla_backend_optimization_level=1'
IN_PROCESS_XLA_FLAGS = '--xla_backend_optimization_level=0'


def load_config(name: str, arg=None, **overrides):
  """configs/<name>.py's get_config(arg), with dotted overrides, locked like main's."""
  spec = importlib.util.spec_from_file_location(f'config_{name}', ROOT / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg) if arg is not None else module.get_config()
  config.lock()
  for dotted, value in overrides.items():
    node = config
    *parents, leaf = dotted.split('__')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def main_command(workdir, data_dir, *flags) -> list[str]:
  """`python -m vit_jax.main` on the README's default job (configs/default.py) in `workdir`,
  reading a prepared TFDS `data_dir` (None: the default one), with more `--flag=value`s."""
  data = [f'--config.data_dir={data_dir}'] if data_dir else []
  return [
    sys.executable,
    '-m',
    'vit_jax.main',
    '--config=configs/default.py',
    f'--workdir={workdir}',
    *data,
    *flags,
  ]


def command_env(devices: int | None = None) -> dict[str, str]:
  """The environment of a command a test starts: `devices` simulated CPU devices, or with None
  the command's own choice (one per core) rather than the suite's 8; output unbuffered, so
  that a test can follow it line by line."""
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['XLA_FLAGS'] = TEST_XLA_FLAGS
  if devices:
    env['XLA_FLAGS'] += f' --xla_force_host_platform_device_count={devices}'
  env['PYTHONUNBUFFERED'] = '1'
  return env


def run_command(argv, *, devices: int | None = None, timeout: float = 600):
  """Runs `argv` (e.g. main_command(...)) from the checkout's root in command_env(devices);
  the finished process, with its stdout and stderr as text."""
  return subprocess.run(
    argv,
    cwd=ROOT,
    env=command_env(devices),
    capture_output=True,
    text=True,
    timeout=timeout,
    check=False,
  )


def train_command(workdir, data_dir, **config) -> tuple[dict, str]:
  """`python -m vit_jax.main` on the default job with `--config.<key>=<value>` for each of
  `config` (a '__' in a key is a '.'): (its final_metrics.json, what it printed). Fails with
  the end of stderr."""
  flags = (f'--config.{k.replace("__", ".")}={v}' for k, v in config.items())
  result = run_command(main_command(workdir, data_dir, *flags), timeout=1200)
  if result.returncode:
    raise RuntimeError(f'{result.args} exited {result.returncode}:\n{result.stderr[-3000:]}')
  return json.loads((ROOT / workdir / 'final_metrics.json').read_text()), result.stdout


def build_once(tmp_path_factory, name: str, build) -> pathlib.Path:
  """A folder `name` that `build(folder)` fills once per test run, shared by all workers.

  `pytest -n 2` runs tests in two worker processes, each with its own session (a session
  fixture is built once per worker that needs it). The folder lives in the temp root that the
  workers share (the parent of each worker's basetemp, the standard pytest-xdist recipe); the
  first worker to get here builds it while holding a file lock (fcntl: no extra package), the
  other waits for it and reuses it. A build that failed is not retried by the other worker
  (it fails at once, pointing at the first error). Users of the folder must not change it:
  copy it first.
  """
  base = tmp_path_factory.getbasetemp()
  root = base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base
  folder, done, failed = root / name, root / f'{name}.done', root / f'{name}.failed'
  with open(root / f'{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes.
    if failed.exists():
      pytest.fail(f'building {name} failed earlier in this run:\n{failed.read_text()}')
    if not done.exists():
      shutil.rmtree(folder, ignore_errors=True)
      folder.mkdir()
      try:
        build(folder)
      except BaseException:
        failed.write_text(traceback.format_exc()[-5000:])
        raise
      done.touch()
  return folder


# The README's default job (configs/default.py) shortened from 1,500 to 500 steps, the same
# recipe otherwise; trained once per test run by conftest's `default_run` fixture.
DEFAULT_RUN = dict(total_steps=500, warmup_steps=50, eval_every=250, checkpoint_every=250)
