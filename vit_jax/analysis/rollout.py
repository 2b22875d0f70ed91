"""Attention rollout (ViT paper, Appendix D.8 and Fig. 6; Abnar & Zuidema 2020; analysis A4).

How much each input token contributes to each output token, through all layers. Per layer
the attention is averaged over heads and the residual connection accounted for by adding the
identity: Â = residual * I + (1 - residual) * mean_heads(A) (the paper: residual = 0.5), rows
renormalised to sum to 1; then R = Â_L ··· Â_1, so R[i, j] is the share of input token j in
output token i. The map shown over an image is the class-token row of R without the prefix
entries, reshaped to the patch grid, divided by its maximum, resized to the image and lightly
blurred; models without a class token (GAP) use the mean of all rows instead.
"""

from collections.abc import Sequence

import jax
import numpy as np


def attention_rollout(per_layer_weights: Sequence, residual: float = 0.5) -> np.ndarray:
  """R = Â_L ··· Â_1 from the attention of every layer, first layer first.

  Args:
    per_layer_weights: L post-softmax attention arrays [B, N, T, T] (query axis first).
    residual: weight of the identity in Â = residual * I + (1 - residual) * mean_heads(A).

  Returns:
    float64 [B, T, T]; every row sums to 1.
  """
  if not per_layer_weights:
    raise ValueError('attention_rollout needs the attention weights of at least one layer.')
  rollout = None
  for index, weights in enumerate(per_layer_weights):
    weights = np.asarray(weights)
    if weights.ndim != 4 or weights.shape[2] != weights.shape[3]:
      raise ValueError(
        f'layer {index}: attention weights must be [B, N, T, T], got shape {weights.shape}.'
      )
    mixed = (1 - residual) * weights.mean(axis=1, dtype=np.float64)
    mixed += residual * np.eye(weights.shape[-1])
    mixed /= mixed.sum(axis=-1, keepdims=True)
    if rollout is not None and rollout.shape != mixed.shape:
      raise ValueError(
        f'layer {index}: attention weights {weights.shape} do not match the '
        f'[B, T, T] = {rollout.shape} of the layers before it.'
      )
    rollout = mixed if rollout is None else mixed @ rollout
  return rollout


def _gaussian_blur(maps: np.ndarray, sigma: float) -> np.ndarray:
  """Separable Gaussian blur of maps [B, H, W] along H and W, edges mirrored."""
  radius = max(1, int(np.ceil(3 * sigma)))
  offsets = np.arange(-radius, radius + 1)
  kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
  kernel /= kernel.sum()
  for axis in (1, 2):
    pad = [(0, 0)] * 3
    pad[axis] = (radius, radius)
    padded = np.pad(maps, pad, mode='symmetric')
    size = maps.shape[axis]
    maps = sum(
      k * np.take(padded, np.arange(size) + radius + o, axis=axis) for k, o in zip(kernel, offsets)
    )
  return maps


def _normalise(maps: np.ndarray) -> np.ndarray:
  """maps [B, ...] divided by their per-map maximum (all-zero maps stay zero)."""
  peak = maps.reshape(len(maps), -1).max(axis=1).reshape((-1,) + (1,) * (maps.ndim - 1))
  return maps / np.where(peak > 0, peak, 1.0)


def rollout_map(
  rollout, grid: tuple[int, int], num_prefix: int, image_size, blur_sigma: float = 1.0
) -> np.ndarray:
  """The rollout as a map over the image, for overlaying.

  Args:
    rollout: [B, T, T] from `attention_rollout`, T = num_prefix + h*w.
    grid: (h, w), the patch grid.
    num_prefix: tokens before the patches; >= 1 uses row 0 (the class token), 0 (GAP) uses
      the mean of all rows.
    image_size: H or (H, W), the size of the output map.
    blur_sigma: std of the Gaussian blur in output pixels; 0 for none.

  Returns:
    float64 [B, H, W] in [0, 1]: the patch entries divided by their maximum, bilinearly
    resized, blurred, and divided by the maximum again (blurring lowers the peak) so that
    every map that is not all zero peaks at 1.
  """
  rollout = np.asarray(rollout, np.float64)
  h, w = grid
  tokens = num_prefix + h * w
  if rollout.ndim != 3 or rollout.shape[1:] != (tokens, tokens):
    raise ValueError(
      f'rollout must be [B, T, T] with T = num_prefix + h*w = {tokens}, got shape {rollout.shape}.'
    )
  height, width = (image_size, image_size) if np.ndim(image_size) == 0 else image_size
  rows = rollout[:, 0] if num_prefix else rollout.mean(axis=1)
  maps = _normalise(rows[:, num_prefix:].reshape(-1, h, w))
  maps = np.asarray(jax.image.resize(maps, (len(maps), height, width), 'bilinear'), np.float64)
  if blur_sigma > 0:
    maps = _gaussian_blur(maps, blur_sigma)
  return np.clip(_normalise(maps), 0.0, 1.0)
