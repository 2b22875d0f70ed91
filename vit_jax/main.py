r"""Trains and evaluates a model from a config.

  python -m vit_jax.main --config=configs/default.py --workdir=/tmp/vit_default
  python -m vit_jax.main --config=configs/vit.py:ViT-B_16,cifar10 --workdir=DIR \
      --config.pretrained_path=ViT-B_16.npz --config.batch=128

The workdir receives `checkpoints/` (Orbax; rerunning the same command resumes),
`metrics.jsonl`, `tensorboard/` event files, `config.json` and, once finished,
`final_metrics.json`; a finished run is left as it is. Exit codes: 0 finished, 2 config error
(also: a workdir another run trains in, a step larger than the devices' free memory),
3 non-finite loss, 4 checkpoint error (damaged beyond fallback, disk full, permissions),
75 preempted (SIGTERM), 130 interrupted (Ctrl-C): both checkpointed, rerun to resume; a second
Ctrl-C stops at once, without saving.
Multi-host (one process per host): add `--jax_distributed`, which calls
jax.distributed.initialize() (cluster auto-detection on Cloud TPU, SLURM, Open MPI, k8s), or
give `--coordinator_address=host:port --num_processes=N --process_id=i` explicitly.
"""

import gc
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from vit_jax.data import stderr_filter
from vit_jax.run import orbax_io
from vit_jax.run import workdir as workdir_lib
from vit_jax.system import quiet_logs
from vit_jax.system import runtime
from vit_jax.train import config as config_lib
from vit_jax.train import config_check
from vit_jax.train import loop
from vit_jax.train import metrics
from vit_jax.train import preemption
from vit_jax.train import setup_run

_CONFIG = config_flags.DEFINE_config_file(
  'config',
  None,
  'Config file: configs/<file>.py[:args]; fields overridable with --config.<field>=value.',
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints and metrics are written.')
_DISTRIBUTED = flags.DEFINE_bool(
  'jax_distributed', False, 'Call jax.distributed.initialize() (multi-host jobs).'
)
_COORDINATOR = flags.DEFINE_string(
  'coordinator_address', None, 'host:port of process 0, for --jax_distributed.'
)
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'For --jax_distributed.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'For --jax_distributed.')
flags.mark_flags_as_required(['config'])


def _config_error(message: str, prefix: str = 'Config error'):
  print(f'{prefix}: {message}', file=sys.stderr)
  sys.exit(2)


def _exit_now(message: str, code: int):
  """Prints `message` and exits without waiting for other threads (e.g. an Orbax save's, which
  can wait minutes for signals that never come); metrics and logs are closed already."""
  print(message, file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  stderr_filter.drain()
  os._exit(code)


def _parse_flags(argv):
  """absl's flag parsing, with misspelt config fields and unloadable files as one line."""
  try:
    remaining = flags.FLAGS(argv)
  except Exception as e:
    message = config_check.check_overrides(argv, flags.FLAGS['config'].parser.parse)
    if message:
      _config_error(message)
    if not isinstance(e, flags.Error):
      raise
    # One line, not absl's usage path: it would parse the flags again, and the config's
    # override flags would fail that ("defined twice") whatever the first error was.
    _config_error(f'{quiet_logs.first_line(e)}; see --help.', prefix='Error')
  if not (_WORKDIR.value or '').strip():
    _config_error(
      '--workdir is missing or empty; pass the folder for checkpoints and metrics, e.g. '
      '--workdir=/tmp/vit_run.',
      prefix='Error',
    )
  try:  # The flag's value reports a failed load when it is first used.
    message = config_check.check_added_fields(_CONFIG.value, config_lib.base_config())
  except (IOError, ValueError) as e:
    message = config_check.load_error(flags.FLAGS['config'].config_filename, e)
  if message:
    _config_error(message)
  return remaining


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    _train(_CONFIG.value, workdir_lib.absolute(_WORKDIR.value))
  except KeyboardInterrupt:  # before training started, or a second Ctrl-C during it.
    _exit_now(
      'Stopped (Ctrl-C) without saving; rerunning the same command resumes from the last '
      'checkpoint, if any.',
      preemption.EXIT_CODES['SIGINT'],
    )


def _train(config, workdir: str):
  start = time.time()
  if _DISTRIBUTED.value:
    # Collectives between CPU processes (tests, CPU clusters); accelerators use their own.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(
      coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value,
    )
  else:
    setup_run.prepare_host(config)  # one device per core, XLA:CPU flags: before JAX starts.
  logging.set_verbosity(logging.WARNING)
  try:
    config_check.validate(config)  # before total_steps is compared (setup_run checks the rest).
    done = workdir_lib.finished(workdir, config.total_steps)
  except setup_run.ConfigError as e:
    _config_error(str(e))
  except workdir_lib.RunFileError as e:
    _config_error(str(e), prefix='Error')
  if done is not None:  # started again (by hand or by a script): nothing trains or is rewritten.
    if jax.process_index() == 0:
      print(
        f'Nothing to do: the run in {workdir} finished at step {done["step"]} and is left as '
        'it is; pass a new --workdir to train again, or a larger --config.total_steps to train '
        'on.'
      )
    return
  try:
    run = setup_run.build(config, workdir)
  except setup_run.ConfigError as e:
    _config_error(str(e))
  # What exists now (JAX, TensorFlow and their modules, the model, the input pipeline) lives as
  # long as the run: out of the garbage collector's sight, its full collections no longer walk
  # it again and again during training.
  gc.freeze()
  try:
    final = loop.train_and_evaluate(run)
  except loop.NonFiniteLossError as e:
    print(f'Error: {e}', file=sys.stderr)
    sys.exit(3)
  except orbax_io.CheckpointError as e:
    _exit_now(f'Checkpoint error: {e}', 4)
  except (workdir_lib.WorkdirInUseError, runtime.OutOfMemoryError) as e:
    _config_error(str(e), prefix='Error')
  if 'preempted_at' in final:  # Checkpointed; rerunning the command resumes.
    sys.exit(preemption.EXIT_CODES[final['stopped_by']])
  loop.dump_final(run.workdir, final)
  if jax.process_index() == 0:
    print(metrics.summary_line(run.workdir, final, seconds=time.time() - start))


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
