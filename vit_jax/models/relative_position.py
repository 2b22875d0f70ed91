"""Learned relative position encodings inside attention: their tables, indices and logits.

For the patches of an h x w grid (the ViT paper's ablation of position embeddings, Appendix
D.4), three kinds, each a term added to the attention logits before the softmax:
  'attention'    (posemb 'relative', the paper's variant) 1-D relative attention: an embedding
      per offset i - j between patches in raster order, `relative_embedding` [2hw - 1 (+3),
      head_dim] shared by the heads; each head's query is dotted with the embedding of the
      (query, key) offset (content-dependent, as in Shaw et al. 2018).
  'attention_2d' (posemb 'relative_2d') the same with 2-D offsets: `relative_embedding_y`
      [2h - 1 (+3), head_dim/2] and `relative_embedding_x` [2w - 1 (+3), head_dim/2], the
      offset's embedding being the two concatenated.
  'bias'         (posemb 'relative_bias') a learned scalar per head and 2-D offset,
      `relative_position_bias` [(2h-1)(2w-1) (+3), heads] (the form of Swin / BEiT).
Prefix tokens (the class token) get three learned entries in each table: prefix->patch,
patch->prefix and prefix->prefix (the "+3"). The attention module owns the tables as its
parameters (the names above are their parameter paths); everything else is here.
"""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ('attention', 'attention_2d', 'bias')


def _with_prefix(patch_index: np.ndarray, num_offsets: int, num_prefix: int) -> np.ndarray:
  """Extends a [hw, hw] patch-pair index with the three prefix entries -> int32 [L, L]."""
  if not num_prefix:
    return patch_index.astype(np.int32)
  length = num_prefix + patch_index.shape[0]
  index = np.empty((length, length), np.int64)
  index[num_prefix:, num_prefix:] = patch_index
  index[:num_prefix, num_prefix:] = num_offsets  # prefix query -> patch key.
  index[num_prefix:, :num_prefix] = num_offsets + 1  # patch query -> prefix key.
  index[:num_prefix, :num_prefix] = num_offsets + 2  # prefix -> prefix.
  return index.astype(np.int32)


def _grid_deltas(h: int, w: int) -> np.ndarray:
  """Offsets (dy, dx) of query minus key for every pair of patches: int [hw, hw, 2]."""
  ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  coords = np.stack([ys.ravel(), xs.ravel()], axis=-1)  # [hw, 2]
  return coords[:, None, :] - coords[None, :, :]


def relative_position_index(h: int, w: int, num_prefix: int) -> np.ndarray:
  """Index into the 2-D relative bias table for every (query, key) pair: int32 [L, L].

  Patch pairs use (dy + h - 1) * (2w - 1) + (dx + w - 1); prefix rows/columns use the three
  entries after the (2h-1)(2w-1) patch offsets.
  """
  delta = _grid_deltas(h, w)
  patch_index = (delta[..., 0] + h - 1) * (2 * w - 1) + (delta[..., 1] + w - 1)
  return _with_prefix(patch_index, (2 * h - 1) * (2 * w - 1), num_prefix)


def relative_index_1d(h: int, w: int, num_prefix: int) -> np.ndarray:
  """Index into the 1-D relative embedding table: int32 [L, L]; patches i - j + hw - 1 (raster
  order), prefix entries after the 2hw - 1 offsets."""
  n = h * w
  patch_index = np.arange(n)[:, None] - np.arange(n)[None, :] + n - 1
  return _with_prefix(patch_index, 2 * n - 1, num_prefix)


def relative_index_2d(h: int, w: int, num_prefix: int) -> tuple[np.ndarray, np.ndarray]:
  """Indices into the y and x relative embedding tables: two int32 [L, L] (dy + h - 1 and
  dx + w - 1 for patches; prefix entries after the 2h - 1 / 2w - 1 offsets)."""
  delta = _grid_deltas(h, w)
  return (
    _with_prefix(delta[..., 0] + h - 1, 2 * h - 1, num_prefix),
    _with_prefix(delta[..., 1] + w - 1, 2 * w - 1, num_prefix),
  )


def relative_table_size(h: int, w: int, num_prefix: int) -> int:
  return (2 * h - 1) * (2 * w - 1) + (3 if num_prefix else 0)


def tables(
  kind: str, grid: tuple[int, int], num_prefix: int, heads: int, head_dim: int
) -> dict[str, tuple[int, int, Optional[str]]]:
  """The learned tables of `kind`: parameter name -> (rows, width, logical name of the width)."""
  if kind not in KINDS:
    raise ValueError(f'unknown relative position encoding {kind!r}; choose one of {KINDS}.')
  h, w = grid
  extra = 3 if num_prefix else 0
  if kind == 'bias':
    return {'relative_position_bias': (relative_table_size(h, w, num_prefix), heads, 'heads')}
  if kind == 'attention':
    return {'relative_embedding': (2 * h * w - 1 + extra, head_dim, 'kv')}
  if head_dim % 2:
    raise ValueError(f"posemb='relative_2d' needs an even head dimension, got {head_dim}.")
  return {
    'relative_embedding_y': (2 * h - 1 + extra, head_dim // 2, None),
    'relative_embedding_x': (2 * w - 1 + extra, head_dim // 2, None),
  }


def logits(
  kind: str, q: jax.Array, params: dict[str, jax.Array], grid: tuple[int, int], num_prefix: int
) -> jax.Array:
  """The relative term of the attention logits, float32: [N, T, T] ('bias') or [B, N, T, T]
  (the query-dependent kinds), for q [B, T, N, H] already scaled by 1/sqrt(H) and the tables
  `params` of `tables(kind, ...)`, float32."""
  h, w = grid
  if kind == 'bias':
    table = params['relative_position_bias']
    index = relative_position_index(h, w, num_prefix)
    bias = jnp.take(table, index.reshape(-1), axis=0).reshape(*index.shape, table.shape[1])
    return jnp.transpose(bias, (2, 0, 1))
  rows = np.arange(num_prefix + h * w)[:, None]
  q = q.astype(jnp.float32)

  def gather(q_part, table, index):  # [B, T, N, h'] . [O, h'] -> [B, N, T, O] -> [B, N, T, T]
    per_offset = jnp.einsum('btnh,oh->bnto', q_part, table)
    return per_offset[:, :, rows, index]

  if kind == 'attention':
    return gather(q, params['relative_embedding'], relative_index_1d(h, w, num_prefix))
  half = q.shape[-1] // 2
  index_y, index_x = relative_index_2d(h, w, num_prefix)
  return gather(q[..., :half], params['relative_embedding_y'], index_y) + gather(
    q[..., half:], params['relative_embedding_x'], index_x
  )
