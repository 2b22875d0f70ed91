"""Matplotlib figures laid out like the papers' figures, from the arrays of the analyses.

  plot_filters               ViT Fig. 7 left: the top principal components of the patch filters.
  plot_position_similarity   ViT Fig. 7 centre / Fig. 10: h x w tiles of cosine similarities.
  plot_attention_distance    ViT Fig. 7 right / Fig. 11: mean attention distance per head vs
                             depth.
  plot_rollout               ViT Fig. 6: images above, attention-rollout overlays below.
  plot_fourier_curves        HDVW Fig. 2a left: Δlog amplitude vs frequency, coloured by depth.
  plot_fourier               HDVW Fig. 2a right: Δlog amplitude of the highest frequency vs
                             normalised depth; self-attention sub-blocks shaded.
  plot_variance              HDVW's companion measure: feature-map variance vs depth.
  plot_noise                 HDVW Fig. 2b: accuracy drop under band noise vs its frequency.

Every function builds a `Figure` (a `matplotlib.figure.Figure`) directly, without pyplot's
global state, so it works headless (`fig.savefig('x.png')`) and shows as a PNG when it is a
notebook cell's value (Jupyter, Colab, a headless kernel alike).
"""

from collections.abc import Mapping
from collections.abc import Sequence
import io

import matplotlib
from matplotlib import cm
from matplotlib import colors as mcolors
from matplotlib import figure as mfigure
from matplotlib import ticker
import numpy as np


class Figure(mfigure.Figure):
  """A matplotlib Figure that a notebook shows as a PNG when a cell returns it.

  IPython shows a bare Figure as a PNG only once pyplot's inline backend has registered a
  formatter for it; without pyplot (as here), it showed `<Figure size 640x480 with 2 Axes>`.
  """

  def caption(self, source: str) -> 'Figure':
    """Names what the figure was computed from (e.g. model and checkpoint) under its title."""
    title = self.get_suptitle()
    if source not in title.splitlines():  # captioned once, however often it is asked.
      self.suptitle(f'{title}\n{source}' if title else source)
    return self

  def _repr_png_(self) -> bytes:
    png = io.BytesIO()
    self.savefig(png, format='png', dpi=100, bbox_inches='tight')
    return png.getvalue()


KINDS = ('embedding', 'attention', 'mlp')
# Marker, colour and legend entry of each kind of sub-block.
_KIND_STYLE = {
  'embedding': ('D', 'tab:gray', 'Embedding'),
  'attention': ('o', 'tab:red', 'Attention (shaded)'),
  'mlp': ('s', 'tab:blue', 'MLP'),
}


def _pi_axis(axis) -> None:
  """Ticks of a frequency axis at multiples of π/4, labelled 0, 0.25π, ..., 1π."""
  axis.set_major_locator(ticker.MultipleLocator(np.pi / 4))
  axis.set_major_formatter(
    ticker.FuncFormatter(lambda x, _: f'{x / np.pi:.2g}π' if abs(x) > 1e-9 else '0')
  )


def _as_display_image(image: np.ndarray) -> tuple[np.ndarray, str | None]:
  """[H, W, C] -> what imshow takes: RGB for C == 3, else the channel mean in grey."""
  if image.shape[-1] == 3:
    return np.clip(image, 0, 1), None
  return image.mean(axis=-1), 'gray'


def plot_filters(images, ncols: int = 7) -> Figure:
  """Grid of filter images [k, P, P, C] in [0, 1] (from `filters.filter_images`), k axes."""
  images = np.asarray(images, np.float64)
  if images.ndim != 4:
    raise ValueError(f'filter images must be [k, P, P, C], got shape {images.shape}.')
  count = len(images)
  nrows = -(-count // ncols)
  fig = Figure(figsize=(1.1 * ncols, 1.1 * nrows + 0.6), layout='constrained')
  for index, image in enumerate(images):
    ax = fig.add_subplot(nrows, ncols, index + 1)
    pixels, cmap = _as_display_image(image)
    ax.imshow(pixels, cmap=cmap, vmin=0, vmax=1, interpolation='nearest')
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(f'Embedding filters (first {count} principal components)')
  return fig


def plot_position_similarity(similarity) -> Figure:
  """h x w grid of h x w tiles; tile (i, j) is patch (i, j)'s similarity with every patch.

  Args:
    similarity: [h, w, h, w] cosine similarities (from `posemb_similarity`).

  Returns:
    A figure with h*w tile axes and one colour-bar axes.
  """
  similarity = np.asarray(similarity, np.float64)
  if similarity.ndim != 4 or similarity.shape[:2] != similarity.shape[2:]:
    raise ValueError(f'similarity must be [h, w, h, w], got shape {similarity.shape}.')
  h, w = similarity.shape[:2]
  fig = Figure(figsize=(0.45 * w + 1.6, 0.45 * h + 0.8), layout='constrained')
  axes = fig.subplots(h, w, squeeze=False, gridspec_kw={'wspace': 0.02, 'hspace': 0.02})
  for i in range(h):
    for j in range(w):
      ax = axes[i, j]
      image = ax.imshow(similarity[i, j], cmap='viridis', vmin=-1, vmax=1, interpolation='nearest')
      ax.set_xticks([])
      ax.set_yticks([])
      if j == 0:
        ax.set_ylabel(str(i + 1), rotation=0, ha='right', va='center', fontsize=7)
      if i == h - 1:
        ax.set_xlabel(str(j + 1), fontsize=7)
  fig.colorbar(image, ax=axes, label='Cosine similarity', shrink=0.8)
  fig.supxlabel('Input patch column')
  fig.supylabel('Input patch row')
  fig.suptitle('Position embedding similarity')
  return fig


def plot_attention_distance(distances, label: str | None = None) -> Figure:
  """Mean attention distance [L, N] (pixels) against layer 1..L, one dot per head.

  Args:
    distances: [L, N] from `attention_distance.attention_distances`.
    label: the title, e.g. the model name 'ViT-B/16'.

  Returns:
    A figure with one axes holding N scatter collections (one per head, L dots each).
  """
  distances = np.asarray(distances, np.float64)
  if distances.ndim != 2:
    raise ValueError(f'distances must be [L, N] (layers, heads), got shape {distances.shape}.')
  num_layers, num_heads = distances.shape
  fig = Figure(figsize=(5, 4), layout='constrained')
  ax = fig.add_subplot()
  palette = matplotlib.colormaps['tab20' if num_heads > 10 else 'tab10']
  layers = np.arange(1, num_layers + 1)
  for head in range(num_heads):
    ax.scatter(
      layers, distances[:, head], s=12, color=palette(head % palette.N), label=f'Head {head + 1}'
    )
  ax.set_xlabel('Network depth (layer)')
  ax.set_ylabel('Mean attention distance (pixels)')
  ax.set_ylim(bottom=0)
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  if num_heads <= 16:
    ax.legend(fontsize=6, loc='upper left', bbox_to_anchor=(1.01, 1), markerscale=0.8)
  if label:
    ax.set_title(label)
  fig.suptitle('Mean attention distance per head')
  return fig


def plot_rollout(images, maps) -> Figure:
  """Images above; below, each image in grey under its attention-rollout map as a heatmap,
  with a colour bar of the map's values (2 x B axes and the colour bar's).

  Args:
    images: [B, H, W, 3] in [0, 1].
    maps: [B, H, W] in [0, 1] (from `rollout.rollout_map`).
  """
  images = np.asarray(images, np.float64)
  maps = np.asarray(maps, np.float64)
  if images.ndim != 4 or maps.shape != images.shape[:3]:
    raise ValueError(
      f'images must be [B, H, W, 3] and maps [B, H, W] of the same size, got '
      f'{images.shape} and {maps.shape}.'
    )
  count = len(images)
  fig = Figure(figsize=(1.8 * count + 0.8, 3.8), layout='constrained')
  axes = fig.subplots(2, count, squeeze=False)
  for b in range(count):
    pixels, cmap = _as_display_image(images[b])
    axes[0, b].imshow(pixels, cmap=cmap, vmin=0, vmax=1)
    # The map as colour over the input in grey: the image itself stays recognisable and the
    # colour carries the map's value (a product of the two looked like the input).
    axes[1, b].imshow(_as_display_image(images[b].mean(-1, keepdims=True))[0], cmap='gray')
    heat = axes[1, b].imshow(maps[b], cmap='inferno', vmin=0, vmax=1, alpha=0.65)
    for ax in axes[:, b]:
      ax.set_xticks([])
      ax.set_yticks([])
  axes[0, 0].set_ylabel('Input')
  axes[1, 0].set_ylabel('Attention rollout')
  fig.colorbar(heat, ax=axes[1, :], label='Rollout (max = 1)', shrink=0.9)
  fig.suptitle('Attention rollout: where the output token reads from')
  return fig


def _check_depth_series(depth, values, kinds) -> tuple[np.ndarray, np.ndarray, list[str]]:
  depth = np.asarray(depth, np.float64)
  values = np.asarray(values, np.float64)
  kinds = list(kinds)
  if depth.ndim != 1 or values.shape != depth.shape or len(kinds) != len(depth):
    raise ValueError(
      f'depth, values and kinds must be [S] each, got {depth.shape}, '
      f'{values.shape} and {len(kinds)} kinds.'
    )
  unknown = sorted(set(kinds) - set(KINDS))
  if unknown:
    raise ValueError(f'unknown sub-block kinds {unknown}; use {KINDS}.')
  return depth, values, kinds


def _plot_by_depth(depth, values, kinds, ylabel: str, heading: str, title: str | None) -> Figure:
  """One axes: values vs depth, a marker per kind, attention sub-blocks shaded as in HDVW.

  Attention point s shades the span [depth[s-1], depth[s]], the depth its sub-block covers.
  """
  depth, values, kinds = _check_depth_series(depth, values, kinds)
  fig = Figure(figsize=(4.5, 3.5), layout='constrained')
  ax = fig.add_subplot()
  for s, kind in enumerate(kinds):
    if kind == 'attention':
      ax.axvspan(depth[max(s - 1, 0)], depth[s], color='0.85', lw=0, zorder=0)
  ax.plot(depth, values, color='0.3', lw=1, zorder=1)
  for kind in KINDS:
    chosen = np.array([k == kind for k in kinds])
    if chosen.any():
      marker, colour, name = _KIND_STYLE[kind]
      ax.scatter(
        depth[chosen], values[chosen], marker=marker, color=colour, s=22, zorder=2, label=name
      )
  ax.set_xlabel('Normalized depth')
  ax.set_ylabel(ylabel)
  ax.legend(fontsize=7)
  if title:
    ax.set_title(title)
  fig.suptitle(heading)
  return fig


def plot_fourier(depth, values, kinds: Sequence[str], title: str | None = None) -> Figure:
  """Δlog amplitude of the highest frequency against normalised depth (HDVW Fig. 2a right).

  Args:
    depth: [S] normalised depth of each feature map (0 = after the embedding, 1 = the end).
    values: [S] Δlog amplitude at (1 - 2/h)π (the last entry of
      `fourier.relative_log_amplitude`).
    kinds: [S] 'embedding', 'attention' or 'mlp', the sub-block that produced the features.
    title: optional title.

  Returns:
    A figure with one axes: a line through all points, one scatter collection per kind
    present, and one shaded span (patch) per attention point.
  """
  heading = 'Δ log amplitude of the highest frequency'
  return _plot_by_depth(depth, values, kinds, 'Δ Log amplitude', heading, title)


def plot_variance(depth, variances, kinds: Sequence[str], title: str | None = None) -> Figure:
  """Feature-map variance against normalised depth, laid out like `plot_fourier`."""
  heading = 'Feature-map variance'
  return _plot_by_depth(depth, variances, kinds, 'Feature map variance', heading, title)


def plot_fourier_curves(frequencies, curves, depth, title: str | None = None) -> Figure:
  """Δlog amplitude against frequency, one curve per feature map coloured by depth.

  Args:
    frequencies: [K] normalised frequencies (`fourier.frequencies(h)`), radians.
    curves: [S, K] Δlog amplitudes (`fourier.relative_log_amplitude` of each feature map).
    depth: [S] normalised depth of each curve (the colour).
    title: optional title.

  Returns:
    A figure with the plot axes (S lines) and a colour-bar axes.
  """
  frequencies = np.asarray(frequencies, np.float64)
  curves = np.asarray(curves, np.float64)
  depth = np.asarray(depth, np.float64)
  if curves.ndim != 2 or curves.shape != (len(depth), len(frequencies)):
    raise ValueError(
      f'curves must be [S, K] = [{len(depth)}, {len(frequencies)}] (depths, '
      f'frequencies), got shape {curves.shape}.'
    )
  fig = Figure(figsize=(4.5, 3.5), layout='constrained')
  ax = fig.add_subplot()
  norm = mcolors.Normalize(depth.min(), max(depth.max(), depth.min() + 1e-12))
  cmap = matplotlib.colormaps['plasma']
  for curve, d in zip(curves, depth):
    ax.plot(frequencies, curve, color=cmap(norm(d)), lw=1)
  _pi_axis(ax.xaxis)
  ax.set_xlim(0, np.pi)
  ax.set_xlabel('Frequency')
  ax.set_ylabel('Δ Log amplitude')
  fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label='Normalized depth')
  if title:
    ax.set_title(title)
  fig.suptitle('Δ log amplitude by frequency, per feature map')
  return fig


def plot_noise(
  frequencies,
  accuracy_drop: Mapping[str, Sequence[float]],
  title: str | None = None,
  *,
  eps: float | None = None,
  num_images: int | None = None,
) -> Figure:
  """Accuracy drop under band noise against its centre frequency, one line per model.

  Args:
    frequencies: [F] centre frequencies in radians (`noise_robustness(...)['frequencies']`).
    accuracy_drop: model name -> [F] clean - noisy accuracy as fractions (plotted in %).
    title: optional title.
    eps: the noise amplitude, shown in the heading.
    num_images: images per accuracy, shown as the step one image makes (a drop below zero
      within a few steps is sampling noise: the noisy images scored a little better).

  Returns:
    A figure with one axes: a line per model (labelled with its name) and a zero line.
  """
  frequencies = np.asarray(frequencies, np.float64)
  fig = Figure(figsize=(4.5, 3.5), layout='constrained')
  ax = fig.add_subplot()
  ax.axhline(0, color='0.6', lw=0.8)
  for name, drop in accuracy_drop.items():
    drop = np.asarray(drop, np.float64)
    if drop.shape != frequencies.shape:
      raise ValueError(
        f'accuracy_drop[{name!r}] has shape {drop.shape}, expected one value '
        f'per frequency {frequencies.shape}.'
      )
    ax.plot(frequencies, 100 * drop, marker='o', ms=3, label=name)
  _pi_axis(ax.xaxis)
  ax.set_xlabel('Noise frequency')
  ax.set_ylabel('Accuracy drop (points; < 0: rose)')
  ax.legend(fontsize=7)
  if num_images:
    ax.text(
      0.99,
      0.02,
      f'one image of {num_images} = {100 / num_images:.2g} points',
      transform=ax.transAxes,
      ha='right',
      fontsize=7,
      color='0.4',
    )
  if title:
    ax.set_title(title)
  amplitude = f' (ε = {eps:g} on [-1, 1] pixels)' if eps is not None else ''
  fig.suptitle(f'Accuracy drop under band-limited noise{amplitude}')
  return fig
