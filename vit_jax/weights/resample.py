"""Resampling of position-embedding grids when fine-tuning at another resolution.

Pure NumPy (float64 internally): runs once on the host when params are loaded.

Alignment. Two conventions exist for where the samples of a resized grid sit:
  'corners'    the first and last samples of the old and new grids coincide (align_corners=True).
               This is what the original `vision_transformer` and big_vision do
               (`scipy.ndimage.zoom(order=1)`), and therefore how every released fine-tuned
               checkpoint (e.g. ViT-B_16 at 384px) was made. It is our default, so that
               fine-tuning from a released pre-trained file reproduces the original numbers.
  'half_pixel' samples sit at patch centres: new sample j looks at old position
               (j + 0.5) * n_old / n_new - 0.5, clamped at the borders (as jax.image.resize
               and PyTorch's interpolate(align_corners=False) do; timm resamples that way,
               bicubic by default). Geometrically exact for the image area each patch covers;
               choose it to match models fine-tuned with those tools.
Both are bilinear: a grid that is linear in (row, column) stays linear ('corners' exactly,
'half_pixel' away from the clamped border when upsampling).
"""

import math

import numpy as np

ALIGNMENTS = ('corners', 'half_pixel')


def _source_positions(n_in: int, n_out: int, align: str) -> np.ndarray:
  out = np.arange(n_out, dtype=np.float64)
  if align == 'corners':
    return out * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(1)
  if align == 'half_pixel':
    return np.clip((out + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
  raise ValueError(f'Unknown alignment {align!r}; choose one of {ALIGNMENTS}.')


def resample_axis(x: np.ndarray, axis: int, n_out: int, align: str = 'corners') -> np.ndarray:
  """Linearly resamples `x` along `axis` to `n_out` samples; other axes untouched (float64)."""
  x = np.asarray(x, np.float64)
  n_in = x.shape[axis]
  pos = _source_positions(n_in, n_out, align)
  lo = np.clip(np.floor(pos).astype(np.int64), 0, n_in - 1)
  hi = np.minimum(lo + 1, n_in - 1)
  frac = pos - lo
  shape = [1] * x.ndim
  shape[axis] = n_out
  frac = frac.reshape(shape)
  return np.take(x, lo, axis=axis) * (1.0 - frac) + np.take(x, hi, axis=axis) * frac


def resample_grid(grid: np.ndarray, new_hw: tuple[int, int], align: str = 'corners') -> np.ndarray:
  """Bilinear resize of grid [h, w, ...] to [new_h, new_w, ...] (float64)."""
  grid = resample_axis(grid, 0, new_hw[0], align)
  return resample_axis(grid, 1, new_hw[1], align)


def is_square(n: int) -> bool:
  """Whether n cells form a square grid (n >= 1)."""
  return n >= 1 and math.isqrt(n) ** 2 == n


def square_side(n: int, what: str) -> int:
  """Side of a square grid of n cells; a clear error when n is not a square."""
  side = math.isqrt(max(n, 0))
  if not is_square(n):
    raise ValueError(
      f'{what}: {n} positions do not form a square grid; pass grid=(h, w) and '
      'pretrained_grid=(h, w) explicitly.'
    )
  return side


def resample_posemb(
  posemb: np.ndarray,
  num_prefix: int,
  old_grid: tuple[int, int],
  new_grid: tuple[int, int],
  align: str = 'corners',
) -> np.ndarray:
  """1-D learned embedding [1, p + h*w, D] -> [1, p + h'*w', D]; the p prefix rows are kept."""
  prefix, grid = posemb[:, :num_prefix], posemb[0, num_prefix:]
  grid = grid.reshape(old_grid[0], old_grid[1], -1)
  grid = resample_grid(grid, new_grid, align).reshape(1, new_grid[0] * new_grid[1], -1)
  return np.concatenate([np.asarray(prefix, np.float64), grid], axis=1)


def resample_relative_table(
  table: np.ndarray, old_grid: tuple[int, int], new_grid: tuple[int, int], align: str = 'corners'
) -> np.ndarray:
  """Relative-bias table [(2h-1)(2w-1) (+3), heads] for a new grid; prefix entries kept."""
  n_old = (2 * old_grid[0] - 1) * (2 * old_grid[1] - 1)
  offsets = table[:n_old].reshape(2 * old_grid[0] - 1, 2 * old_grid[1] - 1, -1)
  new_offsets = resample_grid(offsets, (2 * new_grid[0] - 1, 2 * new_grid[1] - 1), align)
  new_offsets = new_offsets.reshape(-1, table.shape[-1])
  return np.concatenate([new_offsets, np.asarray(table[n_old:], np.float64)], axis=0)
