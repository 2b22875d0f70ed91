"""The BiT ResNet stem of the hybrid models (R50+ViT-B_16, R26+ViT-S_32, R+ViT-Ti_16, ...).

Weight-standardized convolutions and GroupNorm(32), as in Big Transfer (Kolesnikov et al.).
The stem's parameters live at the top of the model, as in the released hybrid checkpoints:
`conv_root`, `gn_root`, `block{s}/unit{u}/{conv1,gn1,conv2,gn2,conv3,gn3,conv_proj,gn_proj}`.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models import layers


def weight_standardize(w: jax.Array, axis: Sequence[int], eps: float) -> jax.Array:
  """(w - mean) / (std + eps) over `axis` (the original's formula, eps outside the sqrt)."""
  w = w - jnp.mean(w, axis=axis)
  return w / (jnp.std(w, axis=axis) + eps)


class StdConv(nn.Conv):
  """Conv whose kernel is weight-standardized over its (H, W, I) axes at every call."""

  def param(self, name, *args, **kwargs):
    param = super().param(name, *args, **kwargs)
    if name == 'kernel':
      param = weight_standardize(param, axis=[0, 1, 2], eps=1e-5)
    return param


def _conv(features, kernel, strides, name, dtype, param_dtype):
  return StdConv(
    features=features,
    kernel_size=kernel,
    strides=strides,
    use_bias=False,
    dtype=dtype,
    param_dtype=param_dtype,
    kernel_init=layers.logical(nn.initializers.lecun_normal(), (None, None, None, 'mlp')),
    name=name,
  )


def _group_norm(name, channels, dtype, param_dtype, scale_init=nn.initializers.ones):
  # 32 groups as in BiT (every hybrid has >= 64 channels); narrower ResNets get one per channel.
  return nn.GroupNorm(
    num_groups=min(32, channels),
    epsilon=1e-6,
    dtype=dtype,
    param_dtype=param_dtype,
    scale_init=layers.logical(scale_init, ('mlp',)),
    bias_init=layers.logical(nn.initializers.zeros, ('mlp',)),
    name=name,
  )


class ResidualUnit(nn.Module):
  """Bottleneck unit: 1x1 -> 3x3 (strided) -> 1x1 (4x features), projection when shapes change."""

  features: int
  strides: tuple[int, int] = (1, 1)
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    residual = x
    if x.shape[-1] != self.features * 4 or tuple(self.strides) != (1, 1):
      residual = _conv(self.features * 4, (1, 1), self.strides, 'conv_proj', **kw)(residual)
      residual = _group_norm('gn_proj', self.features * 4, **kw)(residual)
    y = _conv(self.features, (1, 1), (1, 1), 'conv1', **kw)(x)
    y = nn.relu(_group_norm('gn1', self.features, **kw)(y))
    y = _conv(self.features, (3, 3), self.strides, 'conv2', **kw)(y)
    y = nn.relu(_group_norm('gn2', self.features, **kw)(y))
    y = _conv(self.features * 4, (1, 1), (1, 1), 'conv3', **kw)(y)
    # Zero-init of the last scale makes each unit start as (relu of) its shortcut.
    y = _group_norm('gn3', self.features * 4, scale_init=nn.initializers.zeros, **kw)(y)
    return nn.relu(residual + y)


class ResNetStage(nn.Module):
  """`block_size` residual units; the first one may downsample by `first_stride`."""

  block_size: int
  nout: int
  first_stride: tuple[int, int]
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = ResidualUnit(self.nout, strides=self.first_stride, name='unit1', **kw)(x)
    for i in range(1, self.block_size):
      x = ResidualUnit(self.nout, strides=(1, 1), name=f'unit{i + 1}', **kw)(x)
    return x


def stem_stride(block_layers: Sequence[int]) -> int:
  """Total downsampling of the stem: 4 for the root, x2 per stage after the first."""
  return 4 * 2 ** max(len(block_layers) - 1, 0)


def apply_stem(
  x: jax.Array,
  block_layers: Sequence[int],
  width: float,
  dtype: layers.Dtype,
  param_dtype: layers.Dtype,
) -> jax.Array:
  """Root (7x7/2 conv, GN, ReLU, 3x3/2 max-pool) + stages; NHWC -> NHWC at 1/stem_stride.

  Must be called inside the compact `__call__` of the model, so that the parameters land at the
  top of the model's tree as in the released checkpoints.
  """
  kw = dict(dtype=dtype, param_dtype=param_dtype)
  base = int(64 * width)
  x = _conv(base, (7, 7), (2, 2), 'conv_root', **kw)(x)
  x = nn.relu(_group_norm('gn_root', base, **kw)(x))
  x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding='SAME')
  for i, size in enumerate(block_layers):
    x = ResNetStage(
      block_size=size,
      nout=base * 2**i,
      first_stride=(2, 2) if i else (1, 1),
      name=f'block{i + 1}',
      **kw,
    )(x)
  return x
