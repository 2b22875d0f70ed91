"""TensorBoard event files of scalars, written without TensorFlow (and without torch).

The records go through the `tensorboard` package's own TFRecord writer (`RecordWriter`: length,
masked CRC-32C, bytes, CRC), which imports neither. Its higher-level writers do not suit the
training core: tensorboard's `EventFileWriter` reaches TensorFlow's file API when TF is
installed (and TF must not touch accelerators), and tensorboardX imports torch when that is
installed. Files are opened through etils.epath, so `gs://` workdirs work, and each writer has
a file of its own: `events.out.tfevents.<time>.<host>.<pid>.<n>` (two writers starting in the
same second, e.g. two runs in one process, do not share a file).
"""

import itertools
import os
import socket
import time

from etils import epath
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.summary.writer import record_writer

_COUNTER = itertools.count()


class EventFileWriter:
  """Appends scalar summaries to a new event file in `logdir`."""

  def __init__(self, logdir: str):
    directory = epath.Path(logdir)
    directory.mkdir(parents=True, exist_ok=True)
    name = (
      f'events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.'
      f'{os.getpid()}.{next(_COUNTER)}'
    )
    self.path = directory / name
    self._file = self.path.open('wb')
    self._records = record_writer.RecordWriter(self._file)
    self._write(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))

  def _write(self, event: event_pb2.Event) -> None:
    self._records.write(event.SerializeToString())

  def scalars(self, step: int, values: dict[str, float]) -> None:
    summary = summary_pb2.Summary(
      value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items()]
    )
    self._write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))
    self._records.flush()

  def close(self) -> None:
    self._records.close()
