"""Hand-off of host batches to the mesh: batch-size checks and global jax.Arrays.

Each process holds global_batch / process_count rows; with a `sharding` for the batch (e.g.
NamedSharding(mesh, P(('data', 'fsdp')))) they become one global jax.Array per key, laid
out so that a jitted step with that in_sharding uses them without moving data.
"""

import collections
import math

import jax
import numpy as np

from vit_jax.data import errors


def resolve_processes(process_index, process_count) -> tuple[int, int]:
  """Defaults to jax's process index/count; validates explicit values (tests simulate)."""
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if not (isinstance(count, int) and count >= 1 and isinstance(index, int) and 0 <= index < count):
    raise errors.DataError(
      f'process_index={process_index!r}, process_count={process_count!r}: '
      'need integers with 0 <= process_index < process_count.'
    )
  return index, count


def batch_shards(sharding, ndim: int = 1) -> int:
  """Number of distinct pieces `sharding` cuts the batch (leading) dimension into."""
  probe = len(sharding.device_set)  # Divisible by any sharding of any dimension.
  return probe // sharding.shard_shape((probe,) * ndim)[0]


def local_rows(global_batch: int, process_count: int, sharding=None) -> int:
  """Rows this process reads per batch, after checking that the batch divides evenly."""
  if not isinstance(global_batch, int) or global_batch < 1:
    raise errors.DataError(f'global_batch={global_batch!r}; pass a positive integer.')
  if global_batch % process_count:
    suggestion = math.ceil(global_batch / process_count) * process_count
    raise errors.DataError(
      f'global_batch={global_batch} is not divisible by the {process_count} processes; use a '
      f'multiple of {process_count}, e.g. {suggestion}.'
    )
  if sharding is not None:
    if process_count != jax.process_count():
      raise errors.DataError(
        f'process_count={process_count} differs from jax.process_count()='
        f'{jax.process_count()}; simulated processes need sharding=None.'
      )
    shards = batch_shards(sharding)
    if global_batch % shards:
      raise errors.DataError(
        f'global_batch={global_batch} is not divisible by the {shards} batch shards of the '
        f'sharding ({sharding}); use a multiple of {shards}.'
      )
    local = len(
      {
        (s[0].start, s[0].stop)
        for s in sharding.addressable_devices_indices_map((global_batch,)).values()
      }
    )
    if (global_batch // process_count) % local:
      raise errors.DataError(
        f'global_batch={global_batch} gives {global_batch // process_count} rows per process, '
        f'not divisible by its {local} local batch shards; use a multiple of '
        f'{local * process_count}.'
      )
  return global_batch // process_count


def to_global(batch: dict[str, np.ndarray], sharding, process_count: int) -> dict:
  """This process's rows -> global jax.Arrays (sharding given) or the numpy rows (None)."""
  if sharding is None:
    return batch
  return {
    k: jax.make_array_from_process_local_data(
      sharding, v, (v.shape[0] * process_count,) + v.shape[1:]
    )
    for k, v in batch.items()
  }


class DeviceQueue:
  """Keeps `size` batches already transferred, so a step never waits for the host copy."""

  def __init__(self, fetch, size: int):
    self._fetch = fetch  # () -> item; raises StopIteration at the end.
    self._size = max(size, 0)
    self._items = collections.deque()
    self._done = False

  def _fill(self, n):
    while not self._done and len(self._items) < n:
      try:
        self._items.append(self._fetch())
      except StopIteration:
        self._done = True

  def next(self):
    self._fill(max(self._size, 1))
    if not self._items:
      raise StopIteration
    item = self._items.popleft()
    self._fill(self._size)
    return item
