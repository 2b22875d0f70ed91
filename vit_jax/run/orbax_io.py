"""Orbax checkpoints of the train state and the data position under `WORKDIR/checkpoints`.

Saves are asynchronous (training continues while arrays are written), atomic (a step folder
appears only when complete, so a run killed mid-save resumes from the previous one) and the
last `keep` are kept. Restoring takes the *target* shardings, so a checkpoint written under
one mesh (say 8-device FSDP) restores onto another (say 1 device), and the target's encoder
block layout: a checkpoint of a `scan=True` run restores into a loop-layout run and vice
versa (see vit_jax.models.layouts; params and optimizer state alike).

Every restore is checked: a step folder that lacks a part or whose arrays cannot be read is
passed over for the next older one, with a one-line warning (training also moves it aside, see
vit_jax.run.health), whether the trainer resumes, a Session starts or `predict`, `export`,
`analyze` and fine-tuning read a run's params.
"""

import contextlib
import functools
import json
import sys
from typing import Any, Callable, Optional

from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

from vit_jax.models import layouts
from vit_jax.run import health
from vit_jax.run import workdir as workdir_lib
from vit_jax.system import quiet_logs

CheckpointError = health.CheckpointError
_LOSS_KEY = 'train_loss'  # the training loss at the saved step, kept in the `data` item.


class CheckpointIO:
  """The run's CheckpointManager: items `state` (TrainState) and `data` (iterator position)."""

  def __init__(self, workdir: str, *, keep: int = 3, asynchronous: bool = True):
    self.directory = workdir_lib.path(workdir, workdir_lib.CHECKPOINTS)
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=asynchronous
      ),
      item_names=('state', 'data'),
    )
    self._last_saved: Optional[int] = None
    self.failed = False  # a save failed (and was raised as a CheckpointError).
    # Every Orbax failure is raised as one CheckpointError line (or a warning): its own error
    # logs (tracebacks from the save threads) would only bury that line.
    self._cleanup = contextlib.ExitStack()
    self._cleanup.enter_context(quiet_logs.orbax_errors_reported_by_caller())

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(
    self, state: Any, data_state: dict[str, Any], train_loss: Optional[float] = None
  ) -> None:
    """Starts saving `state` at its step (returns before the write finishes).

    Raises CheckpointError (one line) when this or the previous, still running, save failed.
    """
    step = int(jax.device_get(state.step))
    if step == self._last_saved or step in self._manager.all_steps():
      return  # e.g. a preemption save right after a periodic one (maybe still in flight).
    self.wait()  # the previous save's error, if any, surfaces here (Orbax waits for it anyway).
    self._last_saved = step
    data = dict(data_state)
    if train_loss is not None:
      data[_LOSS_KEY] = float(train_loss)
    with _SaveFailure(self, step):
      self._manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data)),
        force=True,
      )
      self._manager.check_for_errors()

  def wait(self) -> None:
    """Waits for the save in flight; a failure is raised as a one-line CheckpointError."""
    with _SaveFailure(self, self._last_saved):
      self._manager.wait_until_finished()

  def last_complete_step(self) -> Optional[int]:
    done = [
      s
      for s in ocp.utils.checkpoint_steps(self.directory)
      if not health.missing_part(self.directory / str(s))
    ]
    return max(done) if done else None

  def train_loss(self, step: int) -> Optional[float]:
    """The training loss recorded with checkpoint `step` (None for older checkpoints)."""
    try:
      return json.loads((self.directory / str(step) / 'data' / 'metadata').read_text()).get(
        _LOSS_KEY
      )
    except (OSError, ValueError):
      return None

  def restore(self, abstract_state: Any, step: Optional[int] = None):
    """(state, data_state) of `step` (default: latest), placed by abstract_state's shardings.

    A checkpoint in the other block layout is restored as stored, then converted on device.
    """
    step = self.latest_step() if step is None else step
    problem = health.missing_part(self.directory / str(step))
    if problem:
      raise CheckpointError(problem)
    target = layouts.layout_of(abstract_state.params)
    stored = layouts.layout_of(state_metadata(self.directory, step)['params'])
    convert = target is not None and stored is not None and stored != target
    with quiet_logs.absl_errors_only():
      restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(
            layouts.convert(abstract_state, stored) if convert else abstract_state
          ),
          data=ocp.args.JsonRestore(),
        ),
      )
    state = restored['state']
    if convert:
      shardings = jax.tree.map(lambda x: x.sharding, abstract_state)
      state = jax.jit(functools.partial(layouts.convert, layout=target), out_shardings=shardings)(
        state
      )
    data_state = dict(restored['data'])
    data_state.pop(_LOSS_KEY, None)
    return state, data_state

  def restore_intact(
    self,
    abstract_state: Any,
    log: Callable[[str], None],
    step: Optional[int] = None,
    move_aside: bool = True,
  ):
    """(state, data_state, step) of the newest intact checkpoint (or of `step` if given).

    A damaged step folder is reported through `log` (one line) and the next older one is
    tried. With `move_aside` (the trainer, which goes on writing here) the damaged folder is
    moved aside (health.move_aside), and restoring an earlier `step` moves the later ones
    aside too (the run continues from `step`; they would not be overwritten); readers pass
    False and change nothing. Raises CheckpointError when no checkpoint is intact.
    """
    if step is not None and move_aside:
      for later in [s for s in self.all_steps() if s > step]:
        moved = health.move_aside(self.directory, later, f'after-restore-{step}')
        log(f'Restoring step {step}: moved the later step {later} aside to {moved}.')
      self._manager.reload()
    candidates = [step] if step is not None else sorted(self.all_steps(), reverse=True)

    def damaged(s: int, reason: str, detail: str) -> None:
      if move_aside:
        moved = health.move_aside(self.directory, s, reason)
        self._manager.reload()
        log(
          f'Warning: checkpoint step {s} is damaged ({detail}); moved it to {moved}; '
          'trying the previous one.'
        )
      else:
        log(f'Warning: checkpoint step {s} is damaged ({detail}); trying the previous one.')

    (state, data_state), s = first_intact(
      candidates, lambda s: self.restore(abstract_state, s), damaged, self.directory
    )
    return state, data_state, s

  def close(self) -> None:
    if self.failed:  # already reported; Orbax's threads of the failed save may never end.
      self._cleanup.close()
      return
    try:
      self.wait()
    finally:
      self._manager.close()
      self._cleanup.close()


class _SaveFailure:
  """Turns an exception of a save into one CheckpointError line (disk full, permissions)."""

  def __init__(self, io: CheckpointIO, step: Optional[int]):
    self._io, self._step = io, step

  def __enter__(self):
    return self

  def __exit__(self, kind, error, tb):
    if error is None or isinstance(error, CheckpointError) or not isinstance(error, Exception):
      return False
    self._io.failed = True
    raise CheckpointError(
      health.save_failure(error, self._step, self._io.directory, self._io.last_complete_step())
    ) from None


def first_intact(
  candidates, restore: Callable[[int], Any], damaged: Callable[[int, str, str], None], directory
) -> tuple[Any, int]:
  """(restore(step), step) for the first of `candidates` that restores; the checked restore.

  A step that fails (a missing part: CheckpointError; unreadable arrays: any error) is passed
  to `damaged(step, reason, detail)` and the next one is tried. Raises CheckpointError (one
  line) when none restores.
  """
  for step in candidates:
    try:
      with quiet_logs.unraisable_silenced():
        return restore(step), step
    except Exception as e:  # any read error = damaged
      if isinstance(e, CheckpointError):
        reason, detail = str(e), str(e).replace('-', ' ')
      else:
        reason, detail = 'unreadable-arrays', f'unreadable arrays: {quiet_logs.first_line(e)}'
      damaged(step, reason, detail)
  raise CheckpointError(
    f'No intact checkpoint left in {directory} (damaged ones are in '
    f'{epath.Path(directory) / health.DAMAGED}); rerun with a new --workdir to start '
    'from scratch.'
  )


def is_step_folder(path) -> bool:
  """A step folder Orbax wrote here: an integer name holding the `state` item."""
  path = epath.Path(path)
  return path.name.isdigit() and (path / 'state').is_dir()


def steps(directory) -> list[int]:
  """The steps of a checkpoints folder as Orbax lists them, ascending (damaged ones too)."""
  directory = epath.Path(directory)
  return sorted(ocp.utils.checkpoint_steps(directory)) if directory.is_dir() else []


def find_checkpoint(path) -> tuple[epath.Path, int]:
  """Resolves a run's workdir, its `checkpoints` folder or one step folder -> (folder, step),
  the newest step for a workdir or checkpoints folder.

  Raises:
    ValueError: (one line) no step folder there.
  """
  path = epath.Path(path)
  if is_step_folder(path):
    return path.parent, int(path.name)
  for directory in (path / workdir_lib.CHECKPOINTS, path):
    found = steps(directory)
    if any(is_step_folder(directory / str(s)) for s in found):
      return directory, found[-1]
  raise ValueError(
    f'No Orbax checkpoint found at {path}; give a run workdir, its checkpoints '
    'folder or one step folder.'
  )


def is_orbax_checkpoint(path) -> bool:
  """True for a run's workdir, checkpoints folder or step folder where Orbax wrote a step (a
  folder of other things, with numbered subfolders or not, is none)."""
  try:
    find_checkpoint(path)
  except (ValueError, OSError):
    return False
  return True


def state_metadata(directory: epath.Path, step: int) -> Any:
  """The tree of array metadata of a step's `state` item (no array is read)."""
  with quiet_logs.absl_errors_only():
    return (
      ocp.PyTreeCheckpointer()
      .metadata(epath.Path(directory) / str(step) / 'state')
      .item_metadata.tree
    )


def warn_on_stderr(message: str) -> None:
  """Prints a one-line warning to stderr (the default `log` of the readers' checked restore)."""
  print(message, file=sys.stderr, flush=True)


def _read_params(directory: epath.Path, step: int) -> dict[str, Any]:
  problem = health.missing_part(directory / str(step))
  if problem:
    raise CheckpointError(problem)
  params_meta = state_metadata(directory, step)['params']
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), params_meta)
  with quiet_logs.absl_errors_only():
    restored = ocp.PyTreeCheckpointer().restore(
      directory / str(step) / 'state',
      args=ocp.args.PyTreeRestore(
        item={'params': params_meta}, restore_args={'params': restore_args}, partial_restore=True
      ),
    )
  return restored['params']


def read_params(
  path, log: Callable[[str], None] = warn_on_stderr
) -> tuple[dict[str, Any], epath.Path, int]:
  """(params as host NumPy arrays, checkpoints folder, step) of a run's checkpoint, read with
  the checked restore: for a workdir or checkpoints folder the newest intact step (a damaged
  one is reported through `log` and passed over, never moved), for a step folder that step.

  The params are in the block layout of that run (fit.load_pretrained converts to another).

  Raises:
    ValueError: no checkpoint at `path`. CheckpointError: none of its steps is intact.
  """
  directory, newest = find_checkpoint(path)
  candidates = (
    [newest] if is_step_folder(path) else [s for s in reversed(steps(directory)) if s <= newest]
  )

  def damaged(step, reason, detail):
    del reason
    log(
      f'Warning: checkpoint step {step} in {directory} is damaged ({detail}); '
      'trying the previous one.'
    )

  params, step = first_intact(candidates, lambda s: _read_params(directory, s), damaged, directory)
  return params, directory, step


def load_params(path, log: Callable[[str], None] = warn_on_stderr) -> dict[str, Any]:
  """Params (host NumPy arrays) of a run's newest intact checkpoint; see `read_params`."""
  return read_params(path, log)[0]
