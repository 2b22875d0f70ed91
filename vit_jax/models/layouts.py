"""The two layouts of a ViT's encoder blocks in a param tree, and conversion between them.

  loop (the released `.npz` files, `scan=False`):  Transformer/encoderblock_{i}/<path>
  scan (`scan=True`, big_vision's scanned layout):  Transformer/encoderblock/<path>
                                                    = the L per-block arrays stacked: [L, ...]

Conversion is exact (stacking and slicing) and applies to any tree that mirrors params, so a
whole TrainState converts at once (optimizer moments have the params' structure; other
leaves such as step counters are untouched). Leaves may be NumPy arrays, jax.Arrays (also
traced, inside jit) or jax.ShapeDtypeStructs (whose NamedSharding gains/loses a leading None).
Trees without encoder blocks (Mixer) are returned unchanged.
"""

import re
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

LOOP, SCAN = 'loop', 'scan'
LAYOUTS = (LOOP, SCAN)
_SCANNED = 'encoderblock'
_LOOPED = re.compile(r'^encoderblock_(\d+)$')


def _is_blocks(node: Any) -> bool:
  """A dict holding encoder blocks (in practice the `Transformer` subtree)."""
  return isinstance(node, Mapping) and any(k == _SCANNED or _LOOPED.match(k) for k in node)


def _blocks_nodes(tree: Any) -> list[Mapping]:
  return [n for n in jax.tree.leaves(tree, is_leaf=_is_blocks) if _is_blocks(n)]


def layout_of(tree: Any) -> Optional[str]:
  """'scan' or 'loop' for a tree with encoder blocks (params, a TrainState, Orbax metadata);
  None when it has none."""
  nodes = _blocks_nodes(tree)
  if not nodes:
    return None
  scanned = {_SCANNED in n for n in nodes}
  if len(scanned) > 1 or any(_SCANNED in n and len(_loop_indices(n)) for n in nodes):
    raise ValueError('the tree mixes the loop (encoderblock_i) and scan (encoderblock) layouts.')
  return SCAN if scanned.pop() else LOOP


def _loop_indices(node: Mapping) -> list[int]:
  return sorted(int(m.group(1)) for m in map(_LOOPED.match, node) if m)


def _stack(*leaves):
  first = leaves[0]
  if isinstance(first, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(
      (len(leaves),) + tuple(first.shape),
      first.dtype,
      sharding=_with_spec(first.sharding, lambda s: (None, *s)),
    )
  if all(isinstance(x, np.ndarray) for x in leaves):
    return np.stack(leaves)
  return jnp.stack(leaves)


def _slice(leaf, i: int):
  if isinstance(leaf, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(
      tuple(leaf.shape[1:]), leaf.dtype, sharding=_with_spec(leaf.sharding, lambda s: tuple(s)[1:])
    )
  return leaf[i]


def _with_spec(sharding, change):
  if isinstance(sharding, jax.sharding.NamedSharding):
    return jax.sharding.NamedSharding(
      sharding.mesh, jax.sharding.PartitionSpec(*change(sharding.spec))
    )
  return sharding  # None (unplaced) or a sharding without a spec to edit.


def _stack_blocks(node: Mapping) -> dict:
  indices = _loop_indices(node)
  if indices != list(range(len(indices))):
    raise ValueError(
      f'encoder blocks {indices} are not numbered 0..{len(indices) - 1}; '
      'cannot stack them into the scan layout.'
    )
  blocks = [node[f'encoderblock_{i}'] for i in indices]
  out = {k: v for k, v in node.items() if not _LOOPED.match(k)}
  out[_SCANNED] = jax.tree.map(_stack, *blocks)
  return out


def _unstack_blocks(node: Mapping) -> dict:
  stacked = node[_SCANNED]
  leaves = jax.tree.leaves(stacked)
  if not leaves:
    raise ValueError('the scanned encoderblock subtree holds no arrays.')
  num_layers = leaves[0].shape[0]
  out = {k: v for k, v in node.items() if k != _SCANNED}
  for i in range(num_layers):
    out[f'encoderblock_{i}'] = jax.tree.map(lambda x, i=i: _slice(x, i), stacked)
  return out


def to_scan(tree: Any) -> Any:
  """The tree with every `encoderblock_{i}` group stacked into `encoderblock` (no-op if so)."""
  return jax.tree.map(
    lambda n: _stack_blocks(n) if _is_blocks(n) and _SCANNED not in n else n,
    tree,
    is_leaf=_is_blocks,
  )


def to_loop(tree: Any) -> Any:
  """The tree with every stacked `encoderblock` split into `encoderblock_{i}` (no-op if so)."""
  return jax.tree.map(
    lambda n: _unstack_blocks(n) if _is_blocks(n) and _SCANNED in n else n, tree, is_leaf=_is_blocks
  )


def convert(tree: Any, layout: str) -> Any:
  """The tree in `layout` ('loop' or 'scan'), whatever its current layout."""
  if layout not in LAYOUTS:
    raise ValueError(f'unknown layout {layout!r}; choose one of {LAYOUTS}.')
  return to_scan(tree) if layout == SCAN else to_loop(tree)
