"""The main job from Python: a config file in, a trained workdir and its metrics out.

    from vit_jax import experiment
    config = experiment.load_config('configs/default.py')   # locked, as the command line's
    config.total_steps = 300                                # any field, as --config.<field>
    final = experiment.train(config, '/tmp/run')            # {'test/accuracy': ..., 'step': 300}
    curves = experiment.read_metrics('/tmp/run')            # {'train/loss': (steps, values), ...}
    experiment.evaluate(config, '/tmp/run')                 # the newest checkpoint, evaluated

`train` is `python -m vit_jax.main` without what belongs to a process (flags, exit codes,
jax.distributed): the same validation, loop, workdir files and resuming. Called before JAX
starts, `train` and `evaluate` split a CPU host into one device per core and set the XLA:CPU
flags for the config's dtype as the command line does (setup_run.prepare_host); later, JAX's
devices stay as they are (call `vit_jax.system.cpu_devices.prepare()` first thing to get them). Errors are raised instead of exit codes: setup_run.ConfigError
(a config that cannot work, one line), loop.NonFiniteLossError, orbax_io.CheckpointError.
"""

import os
from typing import Any, Optional

from ml_collections import config_dict
import numpy as np

from vit_jax.run import orbax_io
from vit_jax.run import workdir as workdir_lib
from vit_jax.train import config_files
from vit_jax.train import loop
from vit_jax.train import session as session_lib
from vit_jax.train import setup_run


def load_config(path: str) -> config_dict.ConfigDict:
  """Loads `configs/<file>.py[:arg]` as `--config=` does (vit_jax.train.config_files.load_config):
  get_config([arg]), locked; fields can then be set as attributes (`config.total_steps = 300`),
  a misspelt one is an error, as on the command line.

  Raises:
    setup_run.ConfigError: (one line) a missing or broken file, or a misspelt field.
  """
  return config_files.load_config(path)


def train(config: config_dict.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config` into `workdir` (resuming what it holds); returns the final metrics.

  The workdir receives what the command line writes (checkpoints/, metrics.jsonl,
  tensorboard/, config.json, labels.json, final_metrics.json once finished).

  Returns:
    The last values: 'train/<name>' and '<split>/<name>' (e.g. 'test/accuracy', 0..1) and
    'step'; 'preempted_at' and 'stopped_by' when a SIGTERM or Ctrl-C stopped the run (rerun to
    resume).
  """
  setup_run.prepare_host(config)
  final = loop.train_and_evaluate(setup_run.build(config, os.fspath(workdir)))
  if 'preempted_at' not in final:
    loop.dump_final(os.fspath(workdir), final)
  return final


def read_metrics(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Every metric of a run's metrics.jsonl: name -> (steps int64 [N], values float64 [N]);
  see vit_jax.run.workdir.read_metrics.

  Raises:
    FileNotFoundError: (one line) no metrics.jsonl in `workdir`.
  """
  return workdir_lib.read_metrics(workdir)


def evaluate(
  config: config_dict.ConfigDict, workdir: str, step: Optional[int] = None
) -> dict[str, float]:
  """Evaluates the newest checkpoint of `workdir` (or `step`) on the config's eval splits.

  Returns:
    {'<split>/<name>': value} as `train` reports them ('test/accuracy', 'test/loss', ...),
    and 'step', the checkpoint's step. Nothing is written to the workdir.

  Raises:
    setup_run.ConfigError: no checkpoint in `workdir`, or one that does not fit `config`.
  """
  workdir = os.fspath(workdir)
  try:
    orbax_io.find_checkpoint(workdir)
  except ValueError as e:
    raise setup_run.ConfigError(f'{e} Train first (vit_jax.experiment.train).') from None
  session = session_lib.Session.start(config, workdir, step=step)
  out = {
    f'{split}/{name}': value
    for split, values in session.evaluate().items()
    for name, value in values.items()
  }
  out['step'] = session.step
  return out
