"""Fourier analysis of feature maps ("How Do Vision Transformers Work?", Fig. 2a and Fig. 8;
analysis B1).

Features are the residual stream after the patch embedding and after every sub-block
(x + Attn(LN(x)), x + MLP(LN(x))), tokens [B, T, C] with the prefix (class) tokens dropped and
the patches put back on the h x w grid as maps [B, C, h, w]. With F = the 2-D DFT of each map,

  L(k, k) = mean over images and channels of log(|F(k, k)| + 1e-6),
  Δlog amplitude(k) = L(k, k) - L(0, 0),      k = 0 .. h/2 - 1,

read along the diagonal of the (fftshifted) spectrum at the normalised frequency k * 2π/h; the
paper plots the highest one, (1 - 2/h)π, against normalised depth sub-block by sub-block:
self-attention lowers it (a low-pass filter), MLPs raise it. The companion measure is the
spatial variance of the feature maps, which self-attention also lowers.

Only the h/2 diagonal coefficients are needed, so they are computed as a direct DFT (memory
[B, C, h/2] rather than a complex [B, C, h, w] spectrum); this is the same number as the FFT.

For white noise the curve is flat for k >= 1 but not 0: F(0, 0) of a real map is real, so |F|
is half-normal there and Rayleigh elsewhere, and E[log |F|] differs by log(2)/2 ≈ 0.347.
"""

import numpy as np

EPSILON = 1e-6  # Added to |F| before the log, as in the paper.


def tokens_to_maps(features, grid: tuple[int, int], num_prefix: int) -> np.ndarray:
  """Patch tokens as feature maps.

  Args:
    features: [B, T, C] tokens (numpy or jax), T = num_prefix + h*w, patches row-major.
    grid: (h, w), the patch grid.
    num_prefix: tokens before the patches (dropped).

  Returns:
    [B, C, h, w], float32 (float64 for float64 input).
  """
  features = np.asarray(features)
  h, w = grid
  if features.ndim != 3 or features.shape[1] != num_prefix + h * w:
    raise ValueError(
      f'features must be [B, T, C] with T = num_prefix + h*w = '
      f'{num_prefix + h * w}, got shape {features.shape}.'
    )
  dtype = np.result_type(features.dtype, np.float32)
  maps = features[:, num_prefix:].astype(dtype, copy=False)
  return maps.reshape(len(maps), h, w, -1).transpose(0, 3, 1, 2)


def frequencies(h: int) -> np.ndarray:
  """Normalised frequencies of the diagonal points: float64 [h//2], k * 2π/h for k < h//2.

  For even h the last one is (1 - 2/h)π.
  """
  return np.arange(h // 2) * 2 * np.pi / h


def relative_log_amplitude(features, grid: tuple[int, int], num_prefix: int) -> np.ndarray:
  """Δlog amplitude along the diagonal of the spectrum, relative to frequency 0.

  Args:
    features: [B, T, C] tokens, T = num_prefix + h*w; the grid must be square (h == w).
    grid: (h, w), the patch grid.
    num_prefix: tokens before the patches (dropped).

  Returns:
    float64 [h//2]: L(k, k) - L(0, 0) for k = 0 .. h//2 - 1 (the first entry is 0), at the
    frequencies `frequencies(h)`.
  """
  h, w = grid
  if h != w:
    raise ValueError(f'the diagonal of the spectrum needs a square patch grid, got {h} x {w}.')
  maps = tokens_to_maps(features, grid, num_prefix)
  # F(k, k) = sum_{y, x} f(y, x) exp(-2πi k (y + x) / h).
  k = np.arange(h // 2)[:, None, None]
  phase = 2 * np.pi * k * (np.arange(h)[:, None] + np.arange(w)) / h  # [h//2, h, w]
  real = np.tensordot(maps, np.cos(phase).astype(maps.dtype), axes=([2, 3], [1, 2]))
  imag = np.tensordot(maps, np.sin(phase).astype(maps.dtype), axes=([2, 3], [1, 2]))
  amplitude = np.hypot(real.astype(np.float64), imag.astype(np.float64))  # [B, C, h//2]
  log_amplitude = np.log(amplitude + EPSILON).mean(axis=(0, 1))
  return log_amplitude - log_amplitude[0]


def feature_map_variance(features, grid: tuple[int, int], num_prefix: int) -> float:
  """Spatial variance (over the h x w grid, ddof=0) per image and channel, averaged."""
  maps = tokens_to_maps(features, grid, num_prefix)
  return float(maps.var(axis=(2, 3), dtype=np.float64).mean())
