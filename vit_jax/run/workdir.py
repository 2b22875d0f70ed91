"""A training run's folder, the one place that names its files and reads or writes them.

    WORKDIR/
      checkpoints/<step>/     Orbax: the train state and the data position (vit_jax.run.orbax_io)
      config.json             the run's config, as trained
      labels.json             class names and eval preprocessing, for predict / analyze
      metrics.jsonl           one JSON object per record, each with `step`
      tensorboard/            event files of the same scalars
      profile/                jax.profiler traces (config.profile_steps)
      final_metrics.json      the last metrics, once the run finished
      .lock                   held while a run trains here (see `locked`)

Files go through etils.epath, so `gs://` workdirs work. Only process 0 writes them.
"""

import contextlib
import errno
import fcntl
import json
import os
import socket
from typing import Any, Optional, Sequence

from etils import epath
import numpy as np

CHECKPOINTS = 'checkpoints'
CONFIG = 'config.json'
LABELS = 'labels.json'
METRICS = 'metrics.jsonl'
TENSORBOARD = 'tensorboard'
PROFILE = 'profile'
FINAL_METRICS = 'final_metrics.json'
LOCK = '.lock'


class RunFileError(ValueError):
  """A run's file that cannot be used; the message says which file and what to do."""


class WorkdirInUseError(RunFileError):
  """Another process trains in the workdir (it holds its lock)."""


# Lock files this process holds -> their open files (a run inside a run's lock: no new lock).
_HELD: dict[str, Any] = {}


@contextlib.contextmanager
def locked(workdir):
  """Holds WORKDIR/.lock while a run trains there: a second job on the same workdir would
  interleave its checkpoints and metrics with the first's, so it is refused instead.

  An flock(2) lock, which the kernel releases when its process ends however it ends (kill -9
  included): no stale lock is ever left to delete. Local disks and NFS; object stores
  (gs://...) have no such lock, and on a filesystem without locks the run goes on unlocked:
  there, one job per workdir is the scheduler's to ensure.

  Raises:
    WorkdirInUseError: (one line) another process holds the lock.
  """
  root = absolute(workdir)
  file = os.path.join(root, LOCK)
  if '://' in root or file in _HELD:
    yield
    return
  os.makedirs(root, exist_ok=True)
  with open(file, 'a+') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
      held = True
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        held = False  # no locks on this filesystem (e.g. ENOLCK).
      else:
        f.seek(0)
        holder = f.read().strip() or 'another process'
        raise WorkdirInUseError(
          f'{root} is in use by another run ({holder}); wait for it to end (or stop it), or '
          'pass another --workdir.'
        ) from None
    if held:
      f.seek(0)
      f.truncate()
      f.write(f'pid {os.getpid()} on {socket.gethostname()}')
      f.flush()
      _HELD[file] = f
    try:
      yield
    finally:
      _HELD.pop(file, None)  # closing the file releases the lock.


def absolute(workdir) -> str:
  """`workdir` as an absolute path (a URL such as gs://... as it is): Orbax saves only to
  absolute paths, and a run that resumes from another directory must find the same folder."""
  workdir = os.fspath(workdir)
  if '://' in workdir:
    return workdir
  return os.path.abspath(os.path.expanduser(workdir))


def path(workdir, name: str) -> epath.Path:
  """WORKDIR/<name> (one of the names above), absolute."""
  return epath.Path(absolute(workdir)) / name


def root_of(folder) -> epath.Path:
  """The workdir a checkpoints folder or a workdir belongs to."""
  folder = epath.Path(folder)
  return folder.parent if folder.name == CHECKPOINTS else folder


def _read_json(file: epath.Path, what: str) -> Optional[Any]:
  if not file.exists():
    return None
  try:
    return json.loads(file.read_text())
  except ValueError as e:
    raise RunFileError(f'{file} is damaged ({e}); {what}.') from None


def write_config(workdir, config) -> None:
  """config.json: the run's ConfigDict as JSON."""
  path(workdir, CONFIG).write_text(config.to_json_best_effort(indent=2, sort_keys=True))


def read_config(workdir) -> Optional[dict[str, Any]]:
  """config.json as a dict; None when the folder has none."""
  return _read_json(path(workdir, CONFIG), 'restore it or pass a .npz with --model')


def model_of(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
  """(model_name, the model fields it overrides) as a run's config.json records them (JSON
  lists back to tuples, unset fields left out)."""
  overrides = {
    k: tuple(v) if isinstance(v, list) else v
    for k, v in (config.get('model') or {}).items()
    if v is not None
  }
  return config.get('model_name'), overrides


def write_labels(
  workdir,
  *,
  dataset: str,
  class_names: Optional[Sequence[str]],
  num_classes: int,
  crop: int,
  resize_mode: str,
  resize_small: Optional[int],
) -> None:
  """labels.json: the dataset, its class names (None when it has none) and the eval
  preprocessing (crop, resize mode, short side), so that new images are classified exactly as
  the run evaluated:

    {"dataset": "sklearn_digits", "num_classes": 10, "class_names": ["0", ..., "9"],
     "eval_preprocess": {"crop": 16, "resize_mode": "resize", "resize_small": 18}}
  """
  record = {
    'dataset': str(dataset),
    'num_classes': int(num_classes),
    'class_names': list(class_names) if class_names is not None else None,
    'eval_preprocess': {
      'crop': int(crop),
      'resize_mode': resize_mode,
      'resize_small': resize_small,
    },
  }
  path(workdir, LABELS).write_text(json.dumps(record, indent=2))


def read_labels(workdir) -> Optional[dict[str, Any]]:
  """labels.json as `write_labels` wrote it; None when the run predates it.

  Raises:
    RunFileError: the file is damaged (one line: delete it, or pass --labels=FILE).
  """
  from vit_jax.data import preprocess  # TF-free import

  file = path(workdir, LABELS)
  if not file.exists():
    return None
  try:
    record = json.loads(file.read_text())
    names = record['class_names']
    if names is not None and len(names) != record['num_classes']:
      raise ValueError(f'{len(names)} class names for {record["num_classes"]} classes')
    pp = record['eval_preprocess']
    if int(pp['crop']) < 1 or pp['resize_mode'] not in preprocess.RESIZE_MODES:
      raise ValueError(f'eval_preprocess {pp}')
  except (ValueError, KeyError, TypeError) as e:
    raise RunFileError(
      f'{file} is damaged ({type(e).__name__}: {e}); delete it to predict '
      'with class indices, or pass --labels=FILE.'
    ) from None
  return record


def read_metrics(workdir) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Every metric of metrics.jsonl: name -> (steps int64 [N], values float64 [N]).

  Names are as recorded ('train/loss', 'test/accuracy', ...), steps ascending, one value per
  step (the writer keeps one across resumes); a line cut short by a killed run is skipped.

  Raises:
    FileNotFoundError: (one line) no metrics.jsonl in `workdir`.
  """
  file = path(workdir, METRICS)
  if not file.exists():
    raise FileNotFoundError(
      f'{file} does not exist; pass the workdir of a run (trained with '
      'vit_jax.experiment.train or python -m vit_jax.main).'
    )
  series: dict[str, dict[int, float]] = {}
  for line in file.read_text().splitlines():
    try:
      record = json.loads(line)
    except ValueError:
      continue
    step = int(record.pop('step'))
    for name, value in record.items():
      series.setdefault(name, {})[step] = float(value)
  return {
    name: (
      np.array(sorted(values), np.int64),
      np.array([values[s] for s in sorted(values)], np.float64),
    )
    for name, values in sorted(series.items())
  }


def write_final(workdir, final: dict[str, Any]) -> None:
  """final_metrics.json: written once a run has finished (never by a preempted one)."""
  path(workdir, FINAL_METRICS).write_text(json.dumps(final, indent=2, sort_keys=True))


def read_final(workdir) -> Optional[dict[str, Any]]:
  """final_metrics.json; None while the run has not finished."""
  return _read_json(path(workdir, FINAL_METRICS), 'delete it and rerun to finish the run')


def finished(workdir, total_steps: int) -> Optional[dict[str, Any]]:
  """final_metrics.json of a run that finished at `total_steps` or later; None otherwise
  (not finished, or asked now to train on to more steps)."""
  final = read_final(workdir)
  return final if final is not None and final.get('step', -1) >= total_steps else None
