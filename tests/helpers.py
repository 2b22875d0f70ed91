"""Shared test helpers: loading config files as `main` does."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


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
