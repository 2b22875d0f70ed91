"""Config files loaded as `--config=` loads them: `configs/<file>.py[:arg]`, where the optional
argument after the colon reaches `get_config(arg)` (and a sweep's `get_sweep(arg)`)."""

import importlib.util
import os
import types
from typing import Optional

from ml_collections import config_dict

from vit_jax.train import config as config_lib
from vit_jax.train import config_check


def split_spec(spec: str) -> tuple[str, Optional[str]]:
  """'configs/vit.py:ViT-B_16,cifar10' -> ('configs/vit.py', 'ViT-B_16,cifar10'); no argument:
  (spec, None). Only a ':' after '.py' starts the argument (a Windows drive 'C:' does not)."""
  spec = os.fspath(spec)
  file, sep, arg = spec.partition('.py:')
  return (file + '.py', arg) if sep else (spec, None)


def load_module(spec: str) -> tuple[types.ModuleType, Optional[str]]:
  """(the config file's module, its argument) of a spec (`split_spec`).

  Raises:
    FileNotFoundError: the file does not exist; any error the file raises when it runs.
  """
  file, arg = split_spec(spec)
  module_spec = importlib.util.spec_from_file_location('vit_jax_config_file', file)
  if module_spec is None or not os.path.isfile(file):
    raise FileNotFoundError(f'{file} does not exist')
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module, arg


def load_config(spec: str) -> config_dict.ConfigDict:
  """Loads `configs/<file>.py[:arg]` as `--config=` does: get_config([arg]), locked.

  Fields can then be set as attributes (`config.total_steps = 300`); a misspelt one is an
  error, as on the command line.

  Raises:
    config_check.ConfigError: (one line) a missing or broken file, or a file that adds a field
      that `config.base_config()` does not have (a misspelt field).
  """
  spec = os.fspath(spec)
  try:
    module, arg = load_module(spec)
    config = module.get_config(arg) if arg is not None else module.get_config()
  except Exception as e:  # any error of the user's file
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    raise config_check.ConfigError(
      f'cannot load config file {spec}: {lines[-1] if lines else type(e).__name__}; pass an '
      'existing config file, e.g. configs/default.py (configs/<file>.py[:arg]).'
    ) from None
  message = config_check.check_added_fields(config, config_lib.base_config())
  if message:
    raise config_check.ConfigError(f'{spec}: {message}')
  config.lock()
  return config
