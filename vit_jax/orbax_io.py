"""Orbax checkpoints of the train state and the data position under `WORKDIR/checkpoints`.

Saves are asynchronous (training continues while arrays are written), atomic (a step folder
appears only when complete, so a run killed mid-save resumes from the previous one) and the
last `keep` are kept. Restoring takes the *target* shardings, so a checkpoint written under
one mesh (say 8-device FSDP) restores onto another (say 1 device), and the target's encoder
block layout: a checkpoint of a `scan=True` run restores into a loop-layout run and vice
versa (see vit_jax.layouts; params and optimizer state alike).
"""

import functools
import os
from typing import Any, Optional

from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

from vit_jax import layouts
from vit_jax import quiet_logs


class CheckpointIO:
  """The run's CheckpointManager: items `state` (TrainState) and `data` (iterator position)."""

  def __init__(self, workdir: str, *, keep: int = 3, asynchronous: bool = True):
    self.directory = epath.Path(workdir) / 'checkpoints'
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=asynchronous),
        item_names=('state', 'data'))
    self._last_saved: Optional[int] = None

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, state: Any, data_state: dict[str, Any]) -> None:
    """Starts saving `state` at its step (returns before the write finishes)."""
    step = int(jax.device_get(state.step))
    if step == self._last_saved or step in self._manager.all_steps():
      return  # e.g. a preemption save right after a periodic one (maybe still in flight).
    self._last_saved = step
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=True)

  def restore(self, abstract_state: Any, step: Optional[int] = None):
    """(state, data_state) of `step` (default: latest), placed by abstract_state's shardings.

    A checkpoint in the other block layout is restored as stored, then converted on device.
    """
    step = self.latest_step() if step is None else step
    target = layouts.layout_of(abstract_state.params)
    stored = layouts.layout_of(_state_metadata(self.directory, step)['params'])
    convert = target is not None and stored is not None and stored != target
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(
            layouts.convert(abstract_state, stored) if convert else abstract_state),
        data=ocp.args.JsonRestore()))
    state = restored['state']
    if convert:
      shardings = jax.tree.map(lambda x: x.sharding, abstract_state)
      state = jax.jit(functools.partial(layouts.convert, layout=target),
                      out_shardings=shardings)(state)
    return state, restored['data']

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def find_checkpoint(path: str) -> tuple[epath.Path, int]:
  """Resolves a run's workdir, its `checkpoints` folder or one step folder -> (folder, step)."""
  path = epath.Path(path)
  for directory in (path / 'checkpoints', path):
    if directory.is_dir():
      steps = ocp.utils.checkpoint_steps(directory)
      if steps:
        return directory, max(steps)
  if (path / 'state').is_dir() and path.name.isdigit():
    return path.parent, int(path.name)
  raise ValueError(f'No Orbax checkpoint found at {path}; give a run workdir, its checkpoints '
                   'folder or one step folder.')


def _state_metadata(directory: epath.Path, step: int) -> Any:
  """The tree of array metadata of a step's `state` item (no array is read)."""
  with quiet_logs.absl_errors_only():
    return ocp.PyTreeCheckpointer().metadata(
        directory / str(step) / 'state').item_metadata.tree


def load_params(path: str) -> dict[str, Any]:
  """Params (host NumPy arrays) of an earlier run's Orbax checkpoint, for fine-tuning.

  In the block layout of that run (checkpoint.load_pretrained converts to the new model's).
  """
  directory, step = find_checkpoint(path)
  item = directory / str(step) / 'state'
  checkpointer = ocp.PyTreeCheckpointer()
  params_meta = _state_metadata(directory, step)['params']
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), params_meta)
  restored = checkpointer.restore(item, args=ocp.args.PyTreeRestore(
      item={'params': params_meta}, restore_args={'params': restore_args},
      partial_restore=True))
  return restored['params']


def is_orbax_checkpoint(path: str) -> bool:
  """True for a run workdir / checkpoints folder / step folder; False for a `.npz` file."""
  return not os.fspath(path).endswith('.npz') and epath.Path(path).is_dir()
