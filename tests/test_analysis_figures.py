"""Figures of the analyses: each returns a Figure with the expected axes and artists, built
without pyplot, and saves to a PNG."""

import matplotlib

matplotlib.use('Agg')

from matplotlib import collections as mcollections
from matplotlib import figure as mfigure
import numpy as np
import pytest

from vit_jax.analysis import figures

RNG = np.random.default_rng(0)


def saves(fig, tmp_path, name):
  """Saves `fig` as a PNG and checks the file starts with the PNG signature."""
  assert isinstance(fig, mfigure.Figure)
  path = tmp_path / f'{name}.png'
  fig.savefig(path, dpi=50)
  data = path.read_bytes()
  assert len(data) > 1000 and data[:8] == b'\x89PNG\r\n\x1a\n'


def test_plot_filters(tmp_path):
  fig = figures.plot_filters(RNG.uniform(size=(10, 4, 4, 3)), ncols=4)
  assert len(fig.axes) == 10
  assert fig.axes[9].get_subplotspec().rowspan.start == 2  # 3 rows of 4.
  assert all(len(ax.images) == 1 for ax in fig.axes)
  saves(fig, tmp_path, 'filters')
  # One channel is drawn in grey.
  fig = figures.plot_filters(RNG.uniform(size=(3, 4, 4, 1)))
  assert fig.axes[0].images[0].get_array().shape == (4, 4)


def test_plot_position_similarity(tmp_path):
  similarity = RNG.uniform(-1, 1, size=(3, 4, 3, 4))
  fig = figures.plot_position_similarity(similarity)
  assert len(fig.axes) == 3 * 4 + 1  # Tiles and the colour bar.
  assert fig.axes[-1].get_ylabel() == 'Cosine similarity'
  assert fig.get_supxlabel() == 'Input patch column' and fig.get_supylabel() == 'Input patch row'
  # Row-major tiles: axes 6 is tile (1, 2), patch (1, 2) against the whole grid.
  np.testing.assert_array_equal(fig.axes[6].images[0].get_array(), similarity[1, 2])
  assert fig.axes[0].images[0].get_clim() == (-1, 1)
  saves(fig, tmp_path, 'posemb')
  with pytest.raises(ValueError, match=r'\[h, w, h, w\]'):
    figures.plot_position_similarity(np.zeros((3, 4, 4, 3)))


def test_plot_attention_distance(tmp_path):
  distances = RNG.uniform(0, 100, size=(6, 4))
  fig = figures.plot_attention_distance(distances, label='ViT-Ti/16')
  (ax,) = fig.axes
  dots = [c for c in ax.collections if isinstance(c, mcollections.PathCollection)]
  assert len(dots) == 4 and all(len(c.get_offsets()) == 6 for c in dots)
  np.testing.assert_array_equal(
    dots[2].get_offsets(), np.stack([np.arange(1, 7), distances[:, 2]], axis=1)
  )
  assert ax.get_xlabel() == 'Network depth (layer)'
  assert ax.get_ylabel() == 'Mean attention distance (pixels)'
  assert ax.get_title() == 'ViT-Ti/16'
  saves(fig, tmp_path, 'distance')


def test_plot_rollout(tmp_path):
  images = RNG.uniform(size=(3, 16, 16, 3))
  maps = np.zeros((3, 16, 16))
  maps[:, 4:8, 4:8] = 1
  fig = figures.plot_rollout(images, maps)
  assert len(fig.axes) == 6 + 1  # the colour bar of the maps.
  np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), images[1])  # [0, 1]: input 1.
  # Below: the input in grey under the map as a heatmap (the product of the two, before,
  # looked like the input). The mean of 3 float64 values: one rounding each, 1e-15.
  grey, heat = fig.axes[3].images
  np.testing.assert_allclose(grey.get_array(), images[0].mean(-1), rtol=1e-15)
  np.testing.assert_array_equal(heat.get_array(), maps[0])
  assert heat.get_cmap().name == 'inferno' and heat.get_clim() == (0, 1)
  assert fig.axes[-1].get_ylabel() == 'Rollout (max = 1)'
  saves(fig, tmp_path, 'rollout')


def test_plot_fourier_and_variance(tmp_path):
  kinds = ['embedding'] + ['attention', 'mlp'] * 4
  depth = np.linspace(0, 1, 9)
  for plot in (figures.plot_fourier, figures.plot_variance):
    fig = plot(depth, RNG.normal(size=9), kinds, title='ViT-Ti')
    (ax,) = fig.axes
    assert len(ax.lines) == 1 and len(ax.lines[0].get_xdata()) == 9
    assert len(ax.collections) == 3  # One scatter per kind.
    assert len(ax.patches) == 4  # One shaded span per attention sub-block.
    assert ax.get_xlabel() == 'Normalized depth'
    saves(fig, tmp_path, plot.__name__)
  with pytest.raises(ValueError, match='unknown sub-block kinds'):
    figures.plot_fourier(depth[:2], [0, 1], ['embedding', 'conv'])


def test_plot_fourier_curves(tmp_path):
  freqs = np.arange(7) * 2 * np.pi / 14
  fig = figures.plot_fourier_curves(freqs, RNG.normal(size=(5, 7)), np.linspace(0, 1, 5))
  assert len(fig.axes) == 2  # Plot and colour bar.
  assert len(fig.axes[0].lines) == 5
  assert fig.axes[1].get_ylabel() == 'Normalized depth'
  colours = [line.get_color() for line in fig.axes[0].lines]
  assert len({tuple(c) for c in colours}) == 5  # Coloured by depth.
  saves(fig, tmp_path, 'curves')
  with pytest.raises(ValueError, match=r'\[S, K\] = \[5, 7\]'):
    figures.plot_fourier_curves(freqs, np.zeros((7, 5)), np.linspace(0, 1, 5))


def test_plot_noise(tmp_path):
  freqs = np.linspace(0, np.pi, 11)
  drops = {'ViT-Ti/16': RNG.uniform(0, 0.2, 11), 'ResNet-50': RNG.uniform(0, 0.2, 11)}
  fig = figures.plot_noise(freqs, drops)
  (ax,) = fig.axes
  labelled = {line.get_label(): line for line in ax.lines if not line.get_label().startswith('_')}
  assert sorted(labelled) == ['ResNet-50', 'ViT-Ti/16']
  # float64 percentages: one rounding, eps64/2. 1e-15.
  np.testing.assert_allclose(
    labelled['ResNet-50'].get_ydata(), 100 * drops['ResNet-50'], rtol=1e-15
  )
  saves(fig, tmp_path, 'noise')


def _readable(fig, source):
  """What a reader needs without the code: a heading naming the source, axes labels on
  every plot, a colour bar wherever colour carries a value. Returns the problems."""
  problems = []
  title = fig.get_suptitle().splitlines()
  if len(title) != 2 or title[1] != source:
    problems.append(f'suptitle {title}: a heading, then {source!r}')
  colour_bars = [ax for ax in fig.axes if ax.get_label() == '<colorbar>']
  for ax in fig.axes:
    if ax in colour_bars or ax.name == '3d':
      continue
    images = [i for i in ax.images if i.get_cmap().name != 'gray' and i.get_array().ndim == 2]
    coloured = images or any(hasattr(c, 'levels') for c in ax.collections)
    if coloured and not colour_bars:
      problems.append(f'axes {ax.get_label()!r}: colour carries a value, no colour bar')
    plots = ax.lines or any(not hasattr(c, 'levels') for c in ax.collections) or ax.patches
    if plots and not (ax.get_xlabel() and ax.get_ylabel()):
      problems.append(
        f'axes {ax.get_title()!r}: x label {ax.get_xlabel()!r}, y {ax.get_ylabel()!r}'
      )
  return problems


def test_every_figure_of_the_analyses_is_readable_on_its_own():
  # rollout.png had neither heatmap, colour bar nor title; noise.png did not show eps or
  # explain drops below zero; hessian.png had no title.
  import flax.linen as nn
  import jax

  from vit_jax import models
  from vit_jax.analysis import capture
  from vit_jax.analysis import landscape
  from vit_jax.analysis import loss_figures
  from vit_jax.analysis import report

  images = RNG.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
  labels = np.arange(4) % 3
  model = models.get_model('testing', num_classes=3, num_layers=2)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), images[:1])['params'])
  captured = capture.run(model, params, images)
  forward = jax.jit(lambda x: model.apply({'params': params}, x, train=False))
  batches = [{'image': images, 'label': labels}]
  results = [
    report.filters(model, params, num_components=4),
    report.posemb(model, params, 32),
    report.attention_distance(captured, 'testing'),
    report.rollout(captured, images),
    report.fourier(captured, 'testing'),
    report.noise(forward, images, labels, eps=0.5, centres=[0.0, np.pi], label='testing'),
    report.hessian(model, params, batches, max_iter=2, label='testing'),
  ]
  surface = landscape.Surface(np.linspace(-1, 1, 3), RNG.uniform(1, 2, (3, 3)))
  figs = {name: fig for r in results for name, fig in r.captioned('testing, run/7').figures.items()}
  figs['landscape'] = loss_figures.plot_loss_surface(surface, 'testing')
  figs['landscape'].caption('testing, run/7')
  assert sorted(figs) == [
    'attention_distance',
    'filters',
    'fourier',
    'fourier_curves',
    'hessian',
    'landscape',
    'noise',
    'posemb',
    'rollout',
    'variance',
  ]
  problems = {name: _readable(fig, 'testing, run/7') for name, fig in figs.items()}
  assert {name: p for name, p in problems.items() if p} == {}
  assert figs['noise'].get_suptitle().startswith('Accuracy drop under band-limited noise (ε = 0.5')
  assert 'one image of 4 = 25 points' in [t.get_text() for t in figs['noise'].axes[0].texts]
  figs['rollout'].caption('testing, run/7')  # captioned once, however often it is asked.
  assert figs['rollout'].get_suptitle().count('testing, run/7') == 1
