"""Shared by the tests/test_convert_*.py modules: tiny ViTs with non-trivial random params."""

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import models
from vit_jax.weights import tree

TINY = dict(patch_size=(8, 8), hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64)


def vit(num_classes=5, **kw):
  return models.VisionTransformer(num_classes=num_classes, **{**TINY, **kw})


def random_params(model, image_size, seed=0):
  """Flat params (released layout) with realistic scales everywhere (the head included)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *image_size, 3)))['params']
  rng = np.random.default_rng(seed)
  out = {}
  for key, value in tree.flatten_released(shapes).items():
    if key.endswith('/scale'):
      x = 1 + 0.2 * rng.normal(size=value.shape)
    elif key.endswith('/bias'):
      x = 0.2 * rng.normal(size=value.shape)
    elif key.endswith('/kernel'):
      x = rng.normal(size=value.shape) / np.sqrt(
        np.prod(value.shape[:-1]) if 'out/' in key or value.ndim == 4 else value.shape[0]
      )
    else:  # cls, position embeddings, MAP probe.
      x = 0.5 * rng.normal(size=value.shape)
    out[key] = x.astype(np.float32)
  return out


def images(image_size, n=2, seed=1):
  return np.random.default_rng(seed).uniform(-1, 1, (n, *image_size, 3)).astype(np.float32)


def logits(model, flat, x):
  return np.asarray(model.apply({'params': tree.unflatten(flat)}, x))


# The parity bound of these tests on relative_error: float32 in both codebases (eps = 2**-23),
# tiny ViTs with reductions of <= 192 terms (8x8x3 patches) over 2 blocks (+ a MAP head or a
# pre-logits layer: 3 stages), logits of rms ~1 (up to ~3.5) that amplify the softmax inputs'
# error, GELU (tanh) and LayerNorm rounded differently in each: ~sqrt(192)*3*eps = 5e-6 per
# program, ~7e-6 between the two typical; worst case ~2e-4. 2e-5.
PARITY = 2e-5


def relative_error(got, want):
  """max |got - want| / max |want|: the parity measure of these tests (bound PARITY)."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (got.shape, want.shape)
  return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def nchw(x):
  import torch

  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def randomize_torch(module, seed=0):
  """Non-trivial values for every parameter of a PyTorch module (in place)."""
  import torch

  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      noise = torch.randn(p.shape, generator=g)
      if p.ndim == 1:
        p.copy_(1 + 0.2 * noise if name.endswith('weight') else 0.2 * noise)
      elif p.ndim == 3:  # class token, position embeddings, MAP latent.
        p.copy_(0.5 * noise)
      else:
        p.copy_(noise / p[0].numel() ** 0.5)
  return module
