"""A minimal TensorBoard event-file writer for scalars that never imports TensorFlow.

tensorboard's own writer imports TensorFlow when it is installed; the training core must not
(it runs on machines without TF, and TF must not touch accelerators). An event file is a
TFRecord file of serialized `Event` protos: per record, the little-endian uint64 length, its
masked CRC-32C, the bytes, and their masked CRC-32C.
"""

import os
import socket
import struct
import time

from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2


def _crc32c_table() -> list[int]:
  table = []
  for i in range(256):
    crc = i
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    table.append(crc)
  return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), as TFRecord uses; pure Python (records here are tiny)."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class EventFileWriter:
  """Appends scalar summaries to `logdir/events.out.tfevents.<time>.<host>`."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    name = f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}'
    self.path = os.path.join(logdir, name)
    self._file = open(self.path, 'ab')
    self._write(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))

  def _write(self, event: event_pb2.Event) -> None:
    data = event.SerializeToString()
    header = struct.pack('<Q', len(data))
    self._file.write(header + struct.pack('<I', _masked_crc(header)) + data +
                     struct.pack('<I', _masked_crc(data)))

  def scalars(self, step: int, values: dict[str, float]) -> None:
    summary = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items()])
    self._write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))
    self._file.flush()

  def close(self) -> None:
    self._file.close()
