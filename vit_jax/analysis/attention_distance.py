"""Mean attention distance per head (ViT paper, Fig. 7 right and Fig. 11; analysis A3).

The analogue of a CNN's receptive field size. For one layer and head, with post-softmax
attention A over the tokens of an image, the prefix (class-token) rows and columns dropped and
the rest *not* renormalised, and patch i at pixel position pos_i = (row_i * stride_h,
col_i * stride_w):

  d = mean over images and over query patches i of  sum_j A_ij * ||pos_i - pos_j||_2.

Attention mass a query puts on prefix tokens therefore counts as distance 0. The paper plots
d for every head against depth (128 images): some heads attend globally already in the lowest
layers, the distance grows with depth, and hybrids have fewer local heads.
"""

from collections.abc import Sequence

import numpy as np


def _pair(stride) -> tuple[int, int]:
  return (stride, stride) if np.ndim(stride) == 0 else tuple(stride)


def token_positions(grid: tuple[int, int], stride) -> np.ndarray:
  """Pixel positions of the patches: float64 [h*w, 2], rows (row * stride_h, col * stride_w).

  Args:
    grid: (h, w), the patch grid; tokens are in row-major order.
    stride: the patch size in pixels, an int or (stride_h, stride_w).
  """
  h, w = grid
  sh, sw = _pair(stride)
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  return np.stack([rows.reshape(-1) * sh, cols.reshape(-1) * sw], axis=1).astype(np.float64)


def _distance_matrix(grid, stride) -> np.ndarray:
  pos = token_positions(grid, stride)
  return np.linalg.norm(pos[:, None] - pos[None], axis=-1)  # [h*w, h*w]


def mean_attention_distance(weights, grid: tuple[int, int], stride, num_prefix: int) -> np.ndarray:
  """Mean attention distance of every head of one layer.

  Args:
    weights: post-softmax attention [B, N, T, T] (numpy or jax; query axis before key axis),
      T = num_prefix + h*w.
    grid: (h, w), the patch grid.
    stride: the patch size in pixels, an int or (stride_h, stride_w).
    num_prefix: tokens before the patches (1 with a class token, 0 for GAP models).

  Returns:
    float64 [N], in pixels.
  """
  weights = np.asarray(weights)
  h, w = grid
  tokens = num_prefix + h * w
  if weights.ndim != 4 or weights.shape[2:] != (tokens, tokens):
    raise ValueError(
      f'attention weights must be [B, N, T, T] with T = num_prefix + h*w = '
      f'{num_prefix} + {h * w} = {tokens}, got shape {weights.shape}.'
    )
  # Float32 work for float32 / bfloat16 weights (the array can be large), float64 stays so.
  dtype = np.result_type(weights.dtype, np.float32)
  patches = weights[:, :, num_prefix:, num_prefix:].astype(dtype, copy=False)
  distance = _distance_matrix(grid, stride).astype(dtype)
  per_image = np.tensordot(patches, distance, axes=([2, 3], [0, 1]))  # [B, N], summed over i.
  return per_image.astype(np.float64).sum(axis=0) / (weights.shape[0] * h * w)


def attention_distances(
  per_layer_weights: Sequence, grid: tuple[int, int], stride, num_prefix: int
) -> np.ndarray:
  """`mean_attention_distance` of every layer: float64 [L, N] for L arrays [B, N, T, T]."""
  return np.stack([mean_attention_distance(w, grid, stride, num_prefix) for w in per_layer_weights])
