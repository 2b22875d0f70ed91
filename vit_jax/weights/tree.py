"""A param tree's flat form, the one every converter works on: {'a/b/c': array}.

Inside encoder blocks the released files use the pre-Linen numbering (LayerNorm_0,
MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3), which is also our models'; files
written by Linen code (MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0, as big_vision
writes) are renamed to it here. Encoder blocks come in two layouts (vit_jax.models.layouts);
`flatten_released` gives the loop (released) one.
"""

import os
import re
from typing import Any, Mapping, Union

from etils import epath
import flax

from vit_jax.models import layouts

PathLike = Union[str, os.PathLike, epath.Path]
Params = Mapping[str, Any]

# Linen numbering -> released numbering, inside `Transformer/encoderblock_{i}/`.
_LINEN_TO_RELEASED = {
  'LayerNorm_0': 'LayerNorm_0',
  'MultiHeadDotProductAttention_0': 'MultiHeadDotProductAttention_1',
  'LayerNorm_1': 'LayerNorm_2',
  'MlpBlock_0': 'MlpBlock_3',
}
_BLOCK = re.compile(r'^(.*encoderblock_\d+)/([^/]+)/(.*)$')
_LINEN_MARK = re.compile(r'encoderblock_\d+/(MlpBlock_0|MultiHeadDotProductAttention_0)/')
_MAX_LISTED = 12


def flatten(params: Params) -> dict[str, Any]:
  """Nested params (boxed with logical names or not) -> {'a/b/c': array}."""
  params = flax.core.unfreeze(flax.linen.meta.unbox(params))
  if set(params) == {'params'}:
    raise ValueError("Got a variables dict {'params': ...}; pass variables['params'] instead.")
  return flax.traverse_util.flatten_dict(params, sep='/')


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  return flax.traverse_util.unflatten_dict(dict(flat), sep='/')


def flatten_released(params: Params) -> dict[str, Any]:
  """Params of either block layout and numbering (boxed or not) -> flat, in the released
  layout and numbering: the form every converter works on."""
  params = layouts.to_loop(flax.core.unfreeze(flax.linen.meta.unbox(params)))
  return to_released_numbering(flatten(params))


def to_released_numbering(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Renames Linen-numbered encoder-block entries to the released numbering (else unchanged)."""
  if not any(_LINEN_MARK.search(k) for k in flat):
    return dict(flat)
  out = {}
  for key, value in flat.items():
    m = _BLOCK.match(key)
    if m and m.group(2) in _LINEN_TO_RELEASED:
      key = f'{m.group(1)}/{_LINEN_TO_RELEASED[m.group(2)]}/{m.group(3)}'
    out[key] = value
  return out


def listing(items) -> str:
  """At most a dozen items, comma-separated, and how many more there are."""
  items = list(items)
  more = f' and {len(items) - _MAX_LISTED} more' if len(items) > _MAX_LISTED else ''
  return ', '.join(items[:_MAX_LISTED]) + more
