"""Loss-geometry figures render headless with the expected axes and write a PNG."""

import matplotlib

matplotlib.use('Agg')

from matplotlib import figure as mpl_figure
import numpy as np
import pytest

from vit_jax.analysis import landscape
from vit_jax.analysis import loss_figures

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def test_hessian_spectra_figure(tmp_path):
  rng = np.random.default_rng(0)
  vit = np.concatenate([rng.normal(5, 2, 90), -np.abs(rng.normal(1, 0.5, 10))])  # 10% < 0
  resnet = rng.normal(300, 50, (20, 5))  # batch_spectra's shape, pooled
  fig = loss_figures.plot_hessian_spectra({'ViT': vit, 'ResNet': resnet})
  assert isinstance(fig, mpl_figure.Figure)
  (ax,) = fig.axes
  assert ax.get_yscale() == 'log'
  assert ax.get_xlim()[0] < vit.min() and ax.get_xlim()[1] > resnet.max()  # negatives shown
  labels = [t.get_text() for t in ax.get_legend().get_texts()]
  assert labels[0] == f'ViT (neg. 10.0%, mean λ>0 {vit[vit > 0].mean():.3g})'
  assert labels[1] == f'ResNet (neg. 0.0%, mean λ>0 {resnet.mean():.3g})'
  # Each model's outline encloses area 1 (a density over the shared bins): shoelace formula.
  assert len(ax.patches) == 2
  for patch in ax.patches:
    x, y = patch.get_path().vertices.T
    area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    # float64 (eps64 = 2.2e-16): dots of 122 vertices whose |x y| terms add up to <= ~500
    # (x <= 400, densities <= 0.1), cancelling to 2: <= 2*122*eps64*500/2 ~ 1.4e-11. 2e-11.
    assert area == pytest.approx(1.0, rel=2e-11)
  path = tmp_path / 'spectra.png'
  fig.savefig(path)
  assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000


def test_hessian_spectra_rejects_empty():
  with pytest.raises(ValueError, match='spectra is empty'):
    loss_figures.plot_hessian_spectra({})


def test_loss_surface_figure(tmp_path):
  coords = np.linspace(-1, 1, 21)
  a, b = np.meshgrid(coords, coords, indexing='ij')
  surface = landscape.Surface(coords, 1.0 + a**2 + 3 * b**2)
  fig = loss_figures.plot_loss_surface(surface, 'ViT-Ti/16')
  assert isinstance(fig, mpl_figure.Figure)
  contour, colorbar, surf = fig.axes
  assert surf.name == '3d' and contour.name == 'rectilinear'
  assert colorbar.get_ylabel() == 'loss'
  assert fig.get_suptitle() == 'Loss landscape: ViT-Ti/16'
  np.testing.assert_array_equal(contour.get_xlim(), (-1, 1))  # the coordinates' ends, as given.
  (centre,) = [line for line in contour.get_lines() if line.get_label() == 'params']
  np.testing.assert_array_equal(centre.get_xydata(), [[0.0, 0.0]])
  path = tmp_path / 'surface.png'
  fig.savefig(path)
  assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000


def test_loss_surface_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match=r'expected \[steps, steps\]'):
    loss_figures.plot_loss_surface(landscape.Surface(np.zeros(3), np.zeros((3, 4))), 't')
