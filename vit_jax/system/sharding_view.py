"""What a tree of sharded arrays looks like on the devices: each leaf's layout, and the bytes
each device holds.

    for row in sharding_view.layouts(state.params): print(row.path, row.spec, row.shard_shape)
    sharding_view.bytes_per_device(state.opt_state)      # {device: bytes}
    sharding_view.bytes_per_device(run.abstract_state)   # the same, nothing allocated

Leaves are jax.Arrays or jax.ShapeDtypeStructs that carry a sharding (e.g. the abstract state
of `vit_jax.train.state.abstract_state_and_shardings`); other leaves are skipped. A replicated
element counts on every device that holds a copy, since each copy takes that device's memory.
"""

import collections
import dataclasses
import math
from typing import Any, Optional

import jax
from jax.sharding import PartitionSpec


@dataclasses.dataclass(frozen=True)
class Layout:
  """One array's place on the devices."""

  path: str  # e.g. 'Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel'
  shape: tuple[int, ...]
  dtype: Any
  spec: Optional[PartitionSpec]  # of a NamedSharding (None for other kinds of sharding).
  shard_shape: tuple[int, ...]  # what one device holds.
  copies: int  # devices holding each element: 1 fully sharded, all devices replicated.


def _path(keys) -> str:
  parts = []
  for key in keys:
    for attr in ('key', 'name', 'idx'):  # DictKey, GetAttrKey, SequenceKey
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return '/'.join(parts)


def _sharded_leaves(tree):
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return [
    (path, leaf)
    for path, leaf in leaves
    if getattr(leaf, 'sharding', None) is not None and hasattr(leaf, 'shape')
  ]


def _size(index: tuple, shape: tuple[int, ...]) -> int:
  """Elements of the block `index` (a tuple of slices, as devices_indices_map gives)."""
  sizes = [
    len(range(*s.indices(dim))) if isinstance(s, slice) else 1 for s, dim in zip(index, shape)
  ]
  return math.prod(sizes + list(shape[len(index) :]))


def layouts(tree: Any) -> list[Layout]:
  """One Layout per sharded leaf of `tree`, in tree order."""
  out = []
  for path, leaf in _sharded_leaves(tree):
    shape = tuple(leaf.shape)
    sharding = leaf.sharding
    num_devices = len(sharding.device_set)
    shard_shape = tuple(sharding.shard_shape(shape))
    shards = math.prod(shape) // max(math.prod(shard_shape), 1) if math.prod(shape) else 1
    out.append(
      Layout(
        path=_path(path),
        shape=shape,
        dtype=leaf.dtype,
        spec=getattr(sharding, 'spec', None),
        shard_shape=shard_shape,
        copies=num_devices // max(shards, 1),
      )
    )
  return out


def bytes_per_device(tree: Any) -> dict[jax.Device, int]:
  """Bytes of `tree`'s sharded leaves held by each device (ordered by device id)."""
  totals = collections.Counter()
  for _, leaf in _sharded_leaves(tree):
    itemsize = leaf.dtype.itemsize
    for device, index in leaf.sharding.devices_indices_map(tuple(leaf.shape)).items():
      totals[device] += _size(index, tuple(leaf.shape)) * itemsize
  return {d: totals[d] for d in sorted(totals, key=lambda d: d.id)}
