"""MLP-Mixer (Tolstikhin et al., 2021) with the released checkpoints' parameter paths.

`stem` (patch conv), `MixerBlock_{i}/{LayerNorm_0, token_mixing, LayerNorm_1, channel_mixing}`,
`pre_head_layer_norm`, `head`.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models import layers


class MixerBlock(nn.Module):
  """Token mixing (MLP across patches) then channel mixing (MLP across features).

  With `intermediates` mutable it sows the residual stream after each (`residual_token_mixing`,
  `residual_channel_mixing`, [B, L, D]); otherwise sowing is a no-op."""

  tokens_mlp_dim: int
  channels_mlp_dim: int
  drop_path_rate: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
    """[B, L, D] -> [B, L, D]."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    drop_path = layers.DropPath(rate=self.drop_path_rate)
    y = layers.layer_norm('LayerNorm_0', self.param_dtype)(x)
    y = jnp.swapaxes(y, 1, 2)
    y = layers.MlpBlock(
      mlp_dim=self.tokens_mlp_dim, axes=('length', 'mlp'), name='token_mixing', **kw
    )(y)
    x = x + drop_path(jnp.swapaxes(y, 1, 2), deterministic=deterministic)
    self.sow('intermediates', 'residual_token_mixing', x)
    y = layers.layer_norm('LayerNorm_1', self.param_dtype)(x)
    y = layers.MlpBlock(mlp_dim=self.channels_mlp_dim, name='channel_mixing', **kw)(y)
    x = x + drop_path(y, deterministic=deterministic)
    self.sow('intermediates', 'residual_channel_mixing', x)
    return x


class MlpMixer(nn.Module):
  """MLP-Mixer classifier: NHWC float images -> logits [B, num_classes] (features if 0/None)."""

  num_classes: Optional[int]
  patch_size: tuple[int, int] = (16, 16)
  num_blocks: int = 12
  hidden_dim: int = 768
  tokens_mlp_dim: int = 384
  channels_mlp_dim: int = 3072
  stochastic_depth: float = 0.0
  head_bias_init: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  model_name: Optional[str] = None

  @property
  def stride(self) -> int:
    return self.patch_size[0]

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    layers.check_images(images, self.stride, self.model_name or 'MlpMixer')
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = layers.patch_embedding(self.hidden_dim, self.patch_size, 'stem', **kw)(
      images.astype(self.dtype)
    ).astype(jnp.float32)
    n, h, w, d = x.shape
    x = jnp.reshape(x, (n, h * w, d))
    self.sow('intermediates', 'residual_embedding', x)
    for i in range(self.num_blocks):
      rate = self.stochastic_depth * i / max(self.num_blocks - 1, 1)
      x = MixerBlock(
        self.tokens_mlp_dim,
        self.channels_mlp_dim,
        drop_path_rate=rate,
        name=f'MixerBlock_{i}',
        **kw,
      )(x, deterministic=not train)
    x = layers.layer_norm('pre_head_layer_norm', self.param_dtype)(x)
    x = jnp.mean(x, axis=1)
    if self.num_classes:
      x = layers.classifier_head(self.num_classes, self.head_bias_init, **kw)(x)
    return x
