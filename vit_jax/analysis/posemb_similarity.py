"""Similarity of position embeddings (ViT paper, Fig. 7 centre and Fig. 10; analysis A2).

The patch rows of the additive position embedding (class token dropped) are put on the h x w
patch grid; the figure shows, for every patch (i, j), the cosine similarity of its embedding
with the embeddings of all patches, an h x w tile in an h x w grid of tiles. A trained model
shows similarity falling with distance and row/column structure.
"""

from collections.abc import Mapping

import flax.linen as nn
import numpy as np

from vit_jax.models import posemb

# Kinds whose embedding is added to the tokens (the others add nothing to show).
ADDITIVE_KINDS = ('learn', 'learn_2d', 'sincos2d')


def position_similarity(embedding, grid: tuple[int, int]) -> np.ndarray:
  """Cosine similarity of every pair of patch position embeddings.

  Args:
    embedding: [h*w, D] patch position embeddings in row-major grid order (no prefix rows).
    grid: (h, w), the patch grid.

  Returns:
    float64 [h, w, h, w]; entry [i, j, k, l] is the cosine similarity of patch (i, j) with
    patch (k, l). An all-zero embedding row has similarity 0 with everything (itself too).
  """
  h, w = grid
  embedding = np.asarray(embedding, np.float64)
  if embedding.ndim != 2 or embedding.shape[0] != h * w:
    raise ValueError(
      f'embedding must be [h*w, D] = [{h * w}, D] for grid {tuple(grid)}, got '
      f'shape {embedding.shape}; drop the class-token row first.'
    )
  norms = np.linalg.norm(embedding, axis=1, keepdims=True)
  unit = embedding / np.where(norms > 0, norms, 1.0)
  return (unit @ unit.T).reshape(h, w, h, w)


def patch_position_embedding(
  posembed_params: Mapping, kind: str, grid: tuple[int, int], num_prefix: int, dim: int
) -> np.ndarray:
  """The position embedding added to each patch token, as the model adds it.

  Args:
    posembed_params: the model's `posembed_input` param subtree (plain or logically boxed
      arrays); unused for kind 'sincos2d', which has no params.
    kind: the model's `posemb`: 'learn' uses `pos_embedding` [1, p + h*w, D] minus its p
      prefix rows; 'learn_2d' concatenates `pos_embedding_row` [1, h, D/2] (first half) and
      `pos_embedding_col` [1, w, D/2] per patch; 'sincos2d' is `posemb.sincos_2d(h, w, dim)`.
    grid: (h, w), the patch grid.
    num_prefix: p, the number of tokens before the patches (1 with a class token, else 0).
    dim: D, the hidden size.

  Returns:
    float32 [h*w, D], patches in row-major grid order.
  """
  h, w = grid
  if kind not in ADDITIVE_KINDS:
    raise ValueError(
      f'posemb={kind!r} adds no position embedding to the tokens, so there is '
      f'no additive embedding to show; this needs one of {ADDITIVE_KINDS}.'
    )
  if kind == 'sincos2d':
    return posemb.sincos_2d(h, w, dim)
  if kind == 'learn_2d' and dim % 2:
    raise ValueError(f"posemb='learn_2d' needs an even hidden size, got dim={dim}.")
  params = nn.meta.unbox(posembed_params)

  def get(name, shape):
    if name not in params:
      raise ValueError(
        f"posemb={kind!r} needs param '{name}' in the posembed_input subtree, "
        f'which has {sorted(params)}.'
      )
    value = np.asarray(params[name], np.float32)
    if value.shape != shape:
      raise ValueError(
        f'posembed_input/{name} has shape {value.shape}, expected {shape} for '
        f'grid {tuple(grid)}, num_prefix={num_prefix}, dim={dim}.'
      )
    return value[0]

  if kind == 'learn':
    return get('pos_embedding', (1, num_prefix + h * w, dim))[num_prefix:]
  row = get('pos_embedding_row', (1, h, dim // 2))
  col = get('pos_embedding_col', (1, w, dim // 2))
  return np.concatenate(
    [
      np.broadcast_to(row[:, None], (h, w, dim // 2)),
      np.broadcast_to(col[None, :], (h, w, dim // 2)),
    ],
    axis=-1,
  ).reshape(h * w, dim)
