"""The analyses run on a model: each returns the numbers behind it and its figure(s).

    captured = capture.run(model, params, images)   # one forward pass for A3, A4 and B1
    result = report.attention_distance(captured)
    result.numbers            # JSON-able dict, e.g. {'distance': [[...]], 'layers': ...}
    result.figures['attention_distance'].savefig('out.png')

`params` are the model's params (without the {'params': ...} wrapper); images are model
inputs ([-1, 1] NHWC float32); `batches` are dicts {'image': ..., 'label': int [B]}.
`python -m vit_jax.analyze` wires these to checkpoints and datasets.
"""

from typing import Any, Callable, Iterable, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vit_jax.analysis import attention_distance as distance_lib
from vit_jax.analysis import capture
from vit_jax.analysis import figures
from vit_jax.analysis import filters as filters_lib
from vit_jax.analysis import fourier as fourier_lib
from vit_jax.analysis import hessian as hessian_lib
from vit_jax.analysis import landscape as landscape_lib
from vit_jax.analysis import loss_figures
from vit_jax.analysis import noise as noise_lib
from vit_jax.analysis import posemb_similarity
from vit_jax.analysis import rollout as rollout_lib
from vit_jax.system import cpu_devices


class Result(NamedTuple):
  numbers: dict[str, Any]
  figures: dict[str, Any]  # name -> figures.Figure

  def captioned(self, source: str) -> 'Result':
    """The same result, each figure naming `source` (e.g. model and checkpoint) under its
    title."""
    for figure in self.figures.values():
      figure.caption(source)
    return self


NotApplicable = capture.NotApplicable


def _json(x):
  """numpy -> lists / floats, recursively, for json.dump."""
  if isinstance(x, dict):
    return {k: _json(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_json(v) for v in x]
  if isinstance(x, (np.ndarray, jax.Array)):
    return np.asarray(x).tolist()
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  return x


def _is_hybrid(model) -> bool:
  return getattr(model, 'resnet_layers', None) is not None


def filters(model: nn.Module, params: Any, num_components: int = 28) -> Result:
  """A1: principal components of the patch-embedding filters (ViT Fig. 7 left)."""
  if _is_hybrid(model) or 'embedding' not in params:
    raise NotApplicable(
      'the patch embedding of a hybrid (or a Mixer) does not see pixels; '
      'filters are shown for plain ViTs.'
    )
  kernel = np.asarray(params['embedding']['kernel'], np.float32)
  pca = filters_lib.patch_filter_pca(kernel, num_components)
  numbers = {
    'explained_variance_ratio': pca.explained_variance_ratio,
    'kernel_shape': list(kernel.shape),
  }
  return Result(
    _json(numbers), {'filters': figures.plot_filters(filters_lib.filter_images(pca.components))}
  )


def posemb(model: nn.Module, params: Any, image_size: int) -> Result:
  """A2: cosine similarity of the patches' position embeddings (ViT Fig. 7 centre)."""
  kind = getattr(model, 'posemb', None)
  if kind is None:
    raise NotApplicable('this model has no position embedding (MLP-Mixer).')
  geo = capture.geometry(model, (1, image_size, image_size, 3))
  try:
    embedding = posemb_similarity.patch_position_embedding(
      params['Transformer'].get('posembed_input', {}),
      kind,
      geo.grid,
      geo.num_prefix,
      model.hidden_size,
    )
  except ValueError as e:
    raise NotApplicable(str(e)) from None
  similarity = posemb_similarity.position_similarity(embedding, geo.grid)
  h, w = geo.grid
  flat = similarity.reshape(h * w, h * w)
  coords = distance_lib.token_positions(geo.grid, 1)  # grid units
  dist = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
  off = ~np.eye(h * w, dtype=bool)
  # Does similarity fall with distance? (The paper's finding on trained models.)
  corr = float(np.corrcoef(dist[off], flat[off])[0, 1])
  numbers = {
    'kind': kind,
    'grid': list(geo.grid),
    'similarity': similarity,
    'correlation_with_distance': corr,
  }
  return Result(_json(numbers), {'posemb': figures.plot_position_similarity(similarity)})


def attention_distance(captured: capture.Captured, label: Optional[str] = None) -> Result:
  """A3: mean attention distance per layer and head, in pixels (ViT Fig. 7 right)."""
  if not captured.attention:
    raise NotApplicable('the model has no self-attention (MLP-Mixer).')
  geo = captured.geometry
  dist = distance_lib.attention_distances(captured.attention, geo.grid, geo.stride, geo.num_prefix)
  numbers = {
    'distance': dist,
    'mean_per_layer': dist.mean(axis=1),
    'grid': list(geo.grid),
    'stride': geo.stride,
    'images': int(captured.attention[0].shape[0]),
  }
  return Result(
    _json(numbers), {'attention_distance': figures.plot_attention_distance(dist, label)}
  )


def rollout(captured: capture.Captured, images: np.ndarray, num_show: int = 8) -> Result:
  """A4: attention rollout maps over the first `num_show` images (ViT Fig. 6 / App. D.8)."""
  if not captured.attention:
    raise NotApplicable('the model has no self-attention (MLP-Mixer).')
  geo = captured.geometry
  shown = [a[:num_show] for a in captured.attention]
  joint = rollout_lib.attention_rollout(shown)
  maps = rollout_lib.rollout_map(joint, geo.grid, geo.num_prefix, images.shape[1:3])
  pixels = np.clip((np.asarray(images[:num_show], np.float32) + 1.0) / 2.0, 0.0, 1.0)
  row = joint[:, 0, geo.num_prefix :] if geo.num_prefix else joint.mean(axis=1)
  numbers = {'token_maps': row.reshape(-1, *geo.grid), 'grid': list(geo.grid)}
  return Result(_json(numbers), {'rollout': figures.plot_rollout(pixels, maps)})


def fourier(captured: capture.Captured, label: Optional[str] = None) -> Result:
  """B1: relative log amplitude of the residual stream's Fourier transform per sub-block, and
  the feature maps' spatial variance (HDVW Fig. 2a, Fig. 8)."""
  geo = captured.geometry
  if geo.grid[0] != geo.grid[1]:
    raise NotApplicable(f'the Fourier analysis needs a square patch grid, not {geo.grid}.')
  curves = np.stack(
    [fourier_lib.relative_log_amplitude(r, geo.grid, geo.num_prefix) for r in captured.residual]
  )
  variance = np.asarray(
    [fourier_lib.feature_map_variance(r, geo.grid, geo.num_prefix) for r in captured.residual]
  )
  # Mixers: token mixing plays attention's role (spatial), channel mixing the MLP's.
  kinds = [{'token_mixing': 'attention', 'channel_mixing': 'mlp'}.get(k, k) for k in captured.kinds]
  depth = captured.depth
  freqs = fourier_lib.frequencies(geo.grid[0])
  high = curves[:, -1]
  numbers = {
    'names': captured.names,
    'kinds': kinds,
    'depth': depth,
    'frequencies': freqs,
    'delta_log_amplitude': curves,
    'high_frequency': high,
    'variance': variance,
    'high_frequency_change': _changes(high, kinds),
    'variance_change': _changes(variance, kinds),
  }
  return Result(
    _json(numbers),
    {
      'fourier': figures.plot_fourier(depth, high, kinds, title=label),
      'fourier_curves': figures.plot_fourier_curves(freqs, curves, depth, title=label),
      'variance': figures.plot_variance(depth, variance, kinds, title=label),
    },
  )


def _changes(values: np.ndarray, kinds: Sequence[str]) -> dict[str, Any]:
  """How each kind of sub-block changes a per-sub-block value: the changes (after - before) of
  the attention and of the MLP sub-blocks, and the fraction of them that lower it."""
  out = {}
  for kind in ('attention', 'mlp'):
    delta = [values[i] - values[i - 1] for i in range(1, len(values)) if kinds[i] == kind]
    if delta:
      out[kind] = {
        'changes': delta,
        'mean': float(np.mean(delta)),
        'fraction_lowering': float(np.mean(np.asarray(delta) < 0)),
      }
  return out


def noise(
  predict: Callable,
  images: np.ndarray,
  labels: np.ndarray,
  *,
  eps: float = 0.1,
  centres: Optional[Sequence[float]] = None,
  seed: int = 0,
  label: str = 'model',
) -> Result:
  """B2: accuracy drop under band-limited noise vs its frequency (HDVW Fig. 2b)."""
  if centres is None:
    centres = np.linspace(0.0, np.pi, 11)
  result = noise_lib.noise_robustness(predict, images, labels, centres, eps, seed=seed)
  numbers = dict(result, eps=eps)
  return Result(
    _json(numbers),
    {
      'noise': figures.plot_noise(
        result['frequencies'], {label: result['accuracy_drop']}, eps=eps, num_images=len(labels)
      )
    },
  )


def cross_entropy_loss(model: nn.Module) -> Callable[[Any, dict], jax.Array]:
  """(params, batch) -> mean softmax cross-entropy of `model` (eval mode) on the batch."""

  def loss(params, batch):
    logits = model.apply({'params': params}, batch['image'], train=False)
    return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), batch['label']
    ).mean()

  return loss


def hessian(
  model: nn.Module,
  params: Any,
  batches: Iterable[dict],
  *,
  k: int = 5,
  weight_decay: float = 0.0,
  label: str = 'model',
  max_iter: int = 100,
  tol: float = 1e-3,
  seed: int = 0,
  progress: bool = True,
) -> Result:
  """B3: top-k Hessian eigenvalues of NLL + L2 per mini-batch, pooled (HDVW Fig. 1, 4)."""
  loss = cross_entropy_loss(model)
  if weight_decay:
    loss = hessian_lib.with_l2(loss, weight_decay)
  # One device, not the batch split over them: each of the ~100 power iterations per batch
  # would all-reduce a 16-image HVP, which cost more than it saved (the test's tiny model:
  # 11.5 s split over 2 CPU devices, 3.6 s on one).
  spectra = hessian_lib.batch_spectra(
    loss, params, batches, k, seed=seed, tol=tol, max_iter=max_iter, progress=progress
  )
  numbers = {
    'eigenvalues': spectra,
    'summary': hessian_lib.spectrum_summary(spectra),
    'k': k,
    'weight_decay': weight_decay,
  }
  return Result(
    _json(numbers), {'hessian': loss_figures.plot_hessian_spectra({label: spectra.ravel()})}
  )


def landscape(
  model: nn.Module,
  params: Any,
  batches: Sequence[dict],
  *,
  steps: int = 21,
  span: float = 1.0,
  seed: int = 0,
  label: str = 'model',
  progress: bool = True,
) -> Result:
  """B4: loss on a 2-D grid of filter-normalised random directions (HDVW Fig. 1)."""
  loss = cross_entropy_loss(model)
  # Over the devices (CPU cores) where the batch divides; on the default device otherwise.
  batches = [jax.tree.map(jnp.asarray, cpu_devices.shard_batch(b)) for b in batches]

  def mean_loss(p):
    return sum(loss(p, b) for b in batches) / len(batches)

  key1, key2 = jax.random.split(jax.random.key(seed))
  directions = (
    landscape_lib.filter_normalized_direction(key1, params),
    landscape_lib.filter_normalized_direction(key2, params),
  )
  surface = landscape_lib.loss_surface(
    mean_loss, params, directions, steps=steps, span=span, progress=progress
  )
  centre = surface.losses[steps // 2, steps // 2]
  numbers = {'coords': surface.coords, 'losses': surface.losses, 'centre_loss': centre}
  return Result(_json(numbers), {'landscape': loss_figures.plot_loss_surface(surface, label)})
