"""Where metrics go: a stdout line (or a progress bar on a terminal), TensorBoard event files,
and `WORKDIR/metrics.jsonl` (one JSON object per line, each with `step`).

Only the main process (process 0) writes; the others get a writer that does nothing. Files
go through etils.epath, so a `gs://` workdir works (object stores cannot append: there the
JSONL file is rewritten whole at each record; it stays small).
"""

import json
import sys
from typing import Mapping, Optional, TextIO

from etils import epath

from vit_jax.run import workdir as workdir_lib
from vit_jax.train import tensorboard_events


class _JsonLines:
  """An append-only text file of lines: appended locally, rewritten whole on object stores."""

  def __init__(self, path: epath.Path):
    self.path = path
    self._remote = '://' in str(path)
    self._lines: list[str] = []
    if self._remote:
      self._lines = path.read_text().splitlines(keepends=True) if path.exists() else []
      self._file = None
    else:
      self._file = path.open('a', encoding='utf-8')

  def read(self) -> list[str]:
    if self._remote:
      return list(self._lines)
    self._file.flush()
    return self.path.read_text(encoding='utf-8').splitlines(keepends=True)

  def append(self, line: str) -> None:
    if self._remote:
      self._lines.append(line)
      self.path.write_text(''.join(self._lines))
    else:
      self._file.write(line)
      self._file.flush()

  def replace_all(self, lines: list[str]) -> None:
    if self._remote:
      self._lines = list(lines)
      self.path.write_text(''.join(lines))
      return
    self._file.close()
    tmp = self.path.parent / (self.path.name + '.tmp')
    tmp.write_text(''.join(lines), encoding='utf-8')
    tmp.replace(self.path)
    self._file = self.path.open('a', encoding='utf-8')

  def close(self) -> None:
    if self._file is not None:
      self._file.close()


def format_duration(seconds: float) -> str:
  """H:MM:SS, as ETAs and wall times are shown."""
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def summary_line(workdir, final: Mapping[str, float], seconds: Optional[float] = None) -> str:
  """One line on a finished run: its step and test accuracy, where its files are and the
  command that classifies images with it."""
  root = workdir_lib.absolute(workdir)
  scores = [
    f'{k} {final[k]:.4f}'
    for k in sorted(final)
    if k.endswith('/accuracy') and not k.startswith('train/')
  ]
  took = f' in {format_duration(seconds)}' if seconds is not None else ''
  return (
    f'Finished step {final.get("step")}{took}: {", ".join(scores) or "no eval"}. '
    f'Checkpoints: {workdir_lib.path(root, workdir_lib.CHECKPOINTS)}; metrics: '
    f'{workdir_lib.path(root, workdir_lib.METRICS)}; TensorBoard: tensorboard '
    f'--logdir={workdir_lib.path(root, workdir_lib.TENSORBOARD)}. Try: python -m '
    f'vit_jax.predict --checkpoint={root} IMAGES...'
  )


class MetricWriter:
  """Writes train/eval metrics of the main process to stdout, TensorBoard and metrics.jsonl."""

  def __init__(
    self, workdir: str, *, total_steps: int, is_main: bool = True, stream: Optional[TextIO] = None
  ):
    self.total_steps = total_steps
    self.is_main = is_main
    self.stream = stream or sys.stdout
    self._tty = hasattr(self.stream, 'isatty') and self.stream.isatty()
    self._jsonl = self._events = None
    self._resume_step, self._at_resume = None, set()
    if is_main:
      self._jsonl = _JsonLines(workdir_lib.path(workdir, workdir_lib.METRICS))
      self._events = tensorboard_events.EventFileWriter(
        str(workdir_lib.path(workdir, workdir_lib.TENSORBOARD))
      )

  def resume(self, step: int) -> None:
    """A run resumed at `step`: drops the records of later steps from metrics.jsonl, and from
    now on skips values already recorded at `step`, so each metric has one value per step."""
    if not self.is_main:
      return
    lines = [line for line in self._jsonl.read() if line.strip()]
    kept = []
    for line in lines:
      try:
        record = json.loads(line)
      except ValueError:
        continue  # a line cut short by a kill.
      if record.get('step', 0) <= step:
        kept.append(line if line.endswith('\n') else line + '\n')
        if record.get('step') == step:
          self._at_resume.update(k for k in record if k != 'step')
    self._resume_step = step
    self._jsonl.replace_all(kept)

  def _record(self, step: int, values: Mapping[str, float]) -> None:
    if step == self._resume_step:
      values = {k: v for k, v in values.items() if k not in self._at_resume}
      if not values:
        return
    self._jsonl.append(
      json.dumps({'step': int(step), **{k: float(v) for k, v in values.items()}}) + '\n'
    )
    self._events.scalars(step, values)

  def write_train(
    self,
    step: int,
    metrics: Mapping[str, float],
    *,
    throughput: Mapping[str, float],
    eta_seconds: Optional[float],
  ) -> None:
    """Records `train/<name>` values and prints one progress line.

    throughput: `images_per_sec`, `images_per_sec_per_device`, `step_seconds` and, when the
    peak FLOP/s is known, `mfu` (0..1); empty when no step was timed since the last report.
    """
    if not self.is_main:
      return
    self._record(step, {f'train/{k}': v for k, v in {**metrics, **throughput}.items()})
    line = (
      f'step {step}/{self.total_steps} | loss {metrics["loss"]:.4f} | '
      f'acc {metrics["accuracy"]:.3f} | lr {metrics["learning_rate"]:.2e}'
    )
    if throughput:
      line += (
        f' | {throughput["images_per_sec"]:,.1f} img/s '
        f'({throughput["images_per_sec_per_device"]:,.1f}/device)'
      )
    if 'mfu' in throughput:
      line += f' | MFU {100 * throughput["mfu"]:.1f}%'
    if eta_seconds is not None:
      line += f' | ETA {format_duration(eta_seconds)}'
    self._print(line, progress_step=step)

  def write_scalars(self, step: int, values: Mapping[str, float]) -> None:
    """Records values as they are named (e.g. the one-time `train/compile_seconds`)."""
    if self.is_main:
      self._record(step, values)

  def write_eval(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    """Records `<split>/<name>` values (e.g. `test/accuracy` in 0..1) and prints them."""
    if not self.is_main:
      return
    self._record(step, {f'{split}/{k}': v for k, v in metrics.items()})
    shown = ' | '.join(
      f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}' for k, v in metrics.items()
    )
    self._print(f'step {step}/{self.total_steps} | {split}: {shown}')

  def log(self, message: str) -> None:
    if self.is_main:
      self._print(message)

  def _print(self, line: str, progress_step: Optional[int] = None) -> None:
    # On a terminal, progress lines overwrite each other (a progress bar); elsewhere (logs,
    # CI) every line stays.
    if self._tty and progress_step is not None:
      done = int(30 * progress_step / max(self.total_steps, 1))
      self.stream.write('\r\033[K[' + '#' * done + '.' * (30 - done) + '] ' + line)
    else:
      self.stream.write(('\n' if self._tty else '') + line + '\n')
    self.stream.flush()

  def close(self) -> None:
    if self.is_main:
      if self._tty:
        self.stream.write('\n')
      self._jsonl.close()
      self._events.close()
