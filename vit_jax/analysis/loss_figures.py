"""Figures of the loss geometry: Hessian spectra (HDVW Fig. 1/4) and loss surfaces (Fig. 1).

"How Do Vision Transformers Work?" (Park & Kim, ICLR 2022) shows, per model, a histogram of the
top Hessian eigenvalues pooled over mini-batches on a log density axis (negative eigenvalues
left of zero), and the loss on a filter-normalised 2-D slice as a 3-D surface. The figures are
built as `figures.Figure` (no pyplot state), so they render headless and in notebooks:
`fig.savefig('x.png')`.
"""

from typing import Mapping

import numpy as np

from vit_jax.analysis import figures
from vit_jax.analysis import hessian
from vit_jax.analysis import landscape


def plot_hessian_spectra(spectra: Mapping[str, np.ndarray], bins: int = 60) -> figures.Figure:
  """Histogram of pooled top-k Hessian eigenvalues per model (HDVW Fig. 1/4).

  Args:
    spectra: model name -> eigenvalues, any shape (e.g. batch_spectra's [num_batches, k]),
      flattened and pooled.
    bins: number of histogram bins, shared by all models over the pooled [min, max].

  Returns:
    A Figure with one Axes: density (log scale) against eigenvalue, one step histogram per
    model, a dashed line at 0, and a legend "name (neg. x%, mean λ>0 y)" from
    hessian.spectrum_summary.
  """
  if not spectra:
    raise ValueError('plot_hessian_spectra needs at least one model: spectra is empty.')
  pooled = {name: np.asarray(v, np.float64).ravel() for name, v in spectra.items()}
  everything = np.concatenate(list(pooled.values()))
  lo, hi = float(everything.min()), float(everything.max())
  pad = 0.02 * (hi - lo) if hi > lo else max(1.0, abs(lo)) * 0.1
  edges = np.linspace(lo - pad, hi + pad, bins + 1)

  fig = figures.Figure(figsize=(6, 4), layout='constrained')
  ax = fig.add_subplot()
  for name, values in pooled.items():
    s = hessian.spectrum_summary(values)
    label = f'{name} (neg. {100 * s["negative_fraction"]:.1f}%, mean λ>0 {s["mean_positive"]:.3g})'
    ax.hist(values, bins=edges, density=True, histtype='step', linewidth=1.5, label=label)
  ax.axvline(0.0, color='gray', linestyle='--', linewidth=0.8)
  ax.set_yscale('log')
  ax.set_xlabel('Hessian eigenvalue (top-k per mini-batch)')
  ax.set_ylabel('Density')
  ax.legend(fontsize='small')
  fig.suptitle('Hessian eigenvalue spectrum')
  return fig


def plot_loss_surface(surface: landscape.Surface, title: str) -> figures.Figure:
  """A loss surface as a filled contour map and a 3-D surface (HDVW Fig. 1).

  Args:
    surface: landscape.Surface(coords [steps], losses [steps, steps]) with losses[i, j] at
      θ + coords[i]·d1 + coords[j]·d2.
    title: the figure title (e.g. the model name).

  Returns:
    A Figure with three Axes: the contour map (d1 along x, d2 along y, the params marked at
    the origin), its colorbar, and a 3-D surface (Axes3D, name '3d').
  """
  coords, losses = np.asarray(surface.coords), np.asarray(surface.losses)
  if losses.shape != (coords.size, coords.size):
    raise ValueError(
      f'surface.losses is {losses.shape}; expected [steps, steps] = '
      f'{(coords.size, coords.size)} for {coords.size} coords.'
    )
  a, b = np.meshgrid(coords, coords, indexing='ij')  # a[i, j] = coords[i], b[i, j] = coords[j]

  fig = figures.Figure(figsize=(10, 4.2), layout='constrained')
  fig.suptitle(f'Loss landscape: {title}' if title else 'Loss landscape')
  ax = fig.add_subplot(1, 2, 1)
  filled = ax.contourf(a, b, losses, levels=20, cmap='viridis')
  ax.contour(a, b, losses, levels=20, colors='k', linewidths=0.3)
  ax.plot([0.0], [0.0], marker='*', color='red', markersize=10, linestyle='none', label='params')
  ax.set_xlabel('d1')
  ax.set_ylabel('d2')
  ticks = np.linspace(coords[0], coords[-1], 5)
  ax.set_xticks(ticks)
  ax.set_yticks(ticks)
  ax.set_aspect('equal')
  ax.legend(loc='upper right', fontsize='small')
  fig.colorbar(filled, ax=ax, label='loss')

  ax3 = fig.add_subplot(1, 2, 2, projection='3d')
  ax3.plot_surface(a, b, losses, cmap='viridis', linewidth=0, antialiased=True)
  centre = np.flatnonzero(np.isclose(coords, 0.0))
  if centre.size:
    c = int(centre[0])
    ax3.scatter([0.0], [0.0], [losses[c, c]], color='red', marker='*', s=60)
  ax3.set_xlabel('d1')
  ax3.set_ylabel('d2')
  ax3.set_zlabel('loss')
  ax3.set_box_aspect(None, zoom=0.85)  # keeps the z label inside the panel
  return fig
