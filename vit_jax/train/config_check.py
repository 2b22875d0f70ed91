"""Command-line config checks: misspelt fields and config files that fail to load.

`main` runs these right after flag parsing, so that such mistakes cost one line (exit code 2)
instead of a traceback, before anything is created, loaded or compiled.
"""

import difflib
import re

from ml_collections import config_dict

_OVERRIDE = re.compile(r'^--?config\.([A-Za-z0-9_.]+)')


def field_paths(config) -> list[str]:
  """Dotted paths of every field, nested ones included ('batch', 'pp', 'pp.crop', ...)."""
  paths = []
  for key, value in config.items():
    paths.append(key)
    if isinstance(value, config_dict.ConfigDict):
      paths += [f'{key}.{sub}' for sub in field_paths(value)]
  return paths


def unknown_field(path: str, paths: list[str]) -> str:
  """The one-line message for a field `path` that is not among `paths`."""
  close = difflib.get_close_matches(path, paths, n=1)
  hint = (f'did you mean {close[0]!r}?' if close else
          'see vit_jax/train/config.py for the fields.')
  return f'config has no field {path!r}; {hint}'


def _config_file(argv) -> str | None:
  found = None  # The last --config wins, as in absl.
  for i, arg in enumerate(argv):
    if arg.startswith(('--config=', '-config=')):
      found = arg.split('=', 1)[1]
    elif arg in ('--config', '-config') and i + 1 < len(argv):
      found = argv[i + 1]
  return found


def load_error(path: str, error: Exception) -> str:
  """The one-line message for a config file that cannot be loaded."""
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  return (f'cannot load --config={path}: {lines[-1] if lines else type(error).__name__}; pass '
          'an existing config file, e.g. --config=configs/default.py (configs/<file>.py[:args]).')


def check_overrides(argv, load) -> str | None:
  """Message for an unloadable config file or a `--config.<path>=...` naming no field.

  Args:
    argv: the command line.
    load: config file argument ('configs/vit.py:ViT-B_16,cifar10') -> ConfigDict.
  """
  path = _config_file(argv)
  if path is None:
    return None
  try:
    paths = field_paths(load(path))
  except Exception as e:  # pylint: disable=broad-except
    return load_error(path, e)
  for arg in argv[1:]:
    match = _OVERRIDE.match(arg)
    if match and match.group(1) not in paths:
      return unknown_field(match.group(1), paths)
  return None


def check_added_fields(config, base) -> str | None:
  """Message for a field that a config file added to `base` (a misspelt field), else None."""
  known = field_paths(base)
  for path in field_paths(config):
    parent = path.rpartition('.')[0]
    if path not in known and (not parent or parent in known) and parent != 'mesh':
      return (f'{unknown_field(path, known)} (the config file sets it; fix its name there)')
  return None
