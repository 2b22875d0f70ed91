"""Checks of a run's `checkpoints/` folder: writable, step folders intact, fits the config; why a
save failed.

Every finding is one line that says what to do. A damaged step folder is moved aside to
`checkpoints/damaged/<step>-<reason>` (never deleted, and no longer listed as a step by Orbax).
"""

import errno
import os
from typing import Any, Optional

from etils import epath
import jax

from vit_jax.models import layouts
from vit_jax.system import quiet_logs

DAMAGED = 'damaged'
_MAX_SHOWN = 3


class CheckpointError(RuntimeError):
  """A checkpoint problem the user must act on; the message is one line saying what to do."""


def reason(error: Exception) -> str:
  """strerror of an OSError (e.g. 'Permission denied'); else the first line of the message."""
  return getattr(error, 'strerror', None) or (str(error).splitlines() or [repr(error)])[0]


def write_error(path) -> Optional[str]:
  """None if a file can be written in the folder `path` (local or gs://), else the reason."""
  probe = epath.Path(path) / f'.write_test_{jax.process_index()}'
  try:
    probe.write_text('ok')
    probe.unlink()
  except Exception as e:  # OSError; object stores' own errors
    return reason(e)
  return None


def unwritable(path: str) -> Optional[str]:
  """None if `path` (a folder) and every folder below it are writable, else a short reason.

  On object stores (gs://) only the probe write is made: they have no folder permissions.
  """
  error = write_error(path)
  if error:
    return f'{path} is not writable ({error})'
  if '://' in str(path):
    return None
  for root, dirs, _ in os.walk(path):
    for d in dirs:
      if not os.access(os.path.join(root, d), os.W_OK | os.X_OK):
        return f'{os.path.join(root, d)} is not writable (Permission denied)'
  return None


def missing_part(step_dir: epath.Path) -> Optional[str]:
  """A short reason ('missing-state', ...) when a step folder lacks a part; else None."""
  if not (step_dir / 'state').is_dir():
    return 'missing-state'
  if not (step_dir / 'state' / '_METADATA').exists():
    return 'missing-metadata'
  if not (step_dir / 'data').is_dir():
    return 'missing-data'
  return None


def move_aside(directory: epath.Path, step: int, reason: str) -> epath.Path:
  """Renames checkpoints/<step> to checkpoints/damaged/<step>-<reason>[-k]; returns the path."""
  target_dir = directory / DAMAGED
  target_dir.mkdir(parents=True, exist_ok=True)
  target, k = target_dir / f'{step}-{reason}', 1
  while target.exists():
    target, k = target_dir / f'{step}-{reason}-{k}', k + 1
  (directory / str(step)).rename(target)
  return target


def _path_key(path) -> str:
  parts = []
  for entry in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(entry, attr):
        parts.append(str(getattr(entry, attr)))
        break
  return '/'.join(parts)


def _shapes(tree: Any) -> dict[str, tuple]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {_path_key(p): tuple(getattr(l, 'shape', ())) for p, l in leaves}


def mismatch(stored_tree: Any, abstract_state: Any) -> Optional[str]:
  """None if the stored state tree (Orbax metadata) fits abstract_state up to the block layout.

  Else a short description of the first differences, e.g.
  `params/Transformer/encoder_norm/bias stored (192,) vs config (64,)`.
  """
  stored_layout = layouts.layout_of(stored_tree.get('params', {}))
  target = abstract_state
  if stored_layout is not None and layouts.layout_of(abstract_state.params) not in (
    None,
    stored_layout,
  ):
    target = layouts.convert(abstract_state, stored_layout)
  stored, wanted = _shapes(stored_tree), _shapes(target)
  order = lambda k: (not k.startswith('params/'), k)  # params first: they name the model.
  diffs = [
    f'{k} stored {stored[k]} vs config {wanted[k]}'
    for k in sorted(stored.keys() & wanted.keys(), key=order)
    if stored[k] != wanted[k]
  ]
  diffs += [f'{k} only in the checkpoint' for k in sorted(stored.keys() - wanted.keys(), key=order)]
  diffs += [f'{k} only in the config' for k in sorted(wanted.keys() - stored.keys(), key=order)]
  if not diffs:
    return None
  more = f' and {len(diffs) - _MAX_SHOWN} more' if len(diffs) > _MAX_SHOWN else ''
  return '; '.join(diffs[:_MAX_SHOWN]) + more


def save_failure(
  error: BaseException, step: Optional[int], directory, last_complete: Optional[int]
) -> str:
  """The one line for a failed save of `step` to `directory`: disk full, a folder's
  permissions, or another error; and where the run can resume from."""
  where = f'while saving step {step} to {directory}'
  tail = (
    f'step {last_complete} is the last complete checkpoint'
    if last_complete is not None
    else 'no checkpoint is complete'
  )
  cause = _os_error(error)
  if cause is not None and cause.errno == errno.ENOSPC:
    return f'No space left on device {where}; {tail}; free space and rerun to resume.'
  if cause is not None:
    return f'{cause.strerror or cause} {where}; {tail}; fix the folder and rerun to resume.'
  return f'Saving failed {where} ({quiet_logs.first_line(error)}); {tail}; rerun to resume.'


def _os_error(error: BaseException) -> Optional[OSError]:
  """The first OSError with an errno in the chain of causes of `error`."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno:
      return error
    error = error.__cause__ or error.__context__
  return None
