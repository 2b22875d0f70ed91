"""A plain BiT ResNet classifier (ResNet v1.5 bottlenecks, weight-standardized convs, GroupNorm):
the convolutional baseline that "How Do Vision Transformers Work?" compares ViTs against.

The same stem and stages as the hybrids' (models/resnet.py), then global average pooling and
the `head`. Not a released checkpoint layout: a model to train here, e.g. `ResNet-tiny` on
MNIST next to a ViT of the same accuracy for the Hessian analysis (vit_jax.analysis).
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models import layers
from vit_jax.models import resnet


class BiTResNet(nn.Module):
  """NHWC float images -> logits [B, num_classes] (pooled features if 0/None).

  Attributes:
    block_layers: residual units per stage, e.g. (3, 4, 6, 3) for a ResNet-50.
    width: channel multiplier (64 * width channels after the root).
  """

  num_classes: Optional[int]
  block_layers: tuple[int, ...] = (3, 4, 6, 3)
  width: float = 1.0
  head_bias_init: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  model_name: Optional[str] = None

  @property
  def stride(self) -> int:
    """What image sides must be multiples of: 1, any size works ('SAME' padding)."""
    return 1

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    del train  # GroupNorm and no dropout: the same function in training and evaluation.
    layers.check_images(images, self.stride, self.model_name or 'BiTResNet')
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = resnet.apply_stem(images.astype(self.dtype), self.block_layers, self.width, **kw)
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    if self.num_classes:
      x = layers.classifier_head(self.num_classes, self.head_bias_init, in_axis='mlp', **kw)(x)
    return x
