"""Runs a model once and collects what the analyses read: attention weights and the residual
stream after every sub-block, from the values the models `sow` into `intermediates`.

    captured = capture.run(model, params, images)
    captured.attention   # per encoder block: float32 [B, heads, T, T] (post-softmax)
    captured.residual    # the stream entering the first block, then after each sub-block
    captured.names       # 'embedding', 'block_0/attention', 'block_0/mlp', ...

Works for ViTs (class token, GAP, MAP; hybrids; looped or scanned blocks) and MLP-Mixers
(residual stream only: sub-blocks 'token_mixing' / 'channel_mixing'). The MAP head's
cross-attention is not an encoder block and is left out.
"""

import re
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import numpy as np

from vit_jax.system import cpu_devices

# Sown residual names -> the sub-block kind the analyses plot.
_SUB_BLOCKS = {
  'residual_attention': 'attention',
  'residual_mlp': 'mlp',
  'residual_token_mixing': 'token_mixing',
  'residual_channel_mixing': 'channel_mixing',
}
_BLOCK = re.compile(r'^(?:encoderblock|MixerBlock)_(\d+)$')


class NotApplicable(ValueError):
  """An analysis does not apply to this model (the message says why, in one line)."""


class Geometry(NamedTuple):
  """Where tokens sit: `num_prefix` tokens (class token) then an h x w `grid` of patches, each
  `stride` pixels apart."""

  grid: tuple[int, int]
  stride: int
  num_prefix: int


class Captured(NamedTuple):
  logits: np.ndarray
  attention: list[np.ndarray]  # per block [B, heads, T, T]; empty for MLP-Mixers.
  residual: list[np.ndarray]  # [B, T, D], 'embedding' first then each sub-block in order.
  names: list[str]  # one per residual entry.
  geometry: Geometry

  @property
  def kinds(self) -> list[str]:
    """Per residual entry: 'embedding', 'attention', 'mlp', 'token_mixing', 'channel_mixing'."""
    return [n.split('/')[-1] for n in self.names]

  @property
  def depth(self) -> np.ndarray:
    """Normalised depth of each residual entry: 0 (embedding) .. 1 (last sub-block)."""
    return np.linspace(0.0, 1.0, len(self.names))


def geometry(model: nn.Module, image_shape: tuple[int, ...]) -> Geometry:
  """The token geometry of `model` on NHWC images of `image_shape`."""
  stride = model.stride
  height, width = image_shape[1:3]
  num_prefix = 1 if getattr(model, 'classifier', 'gap') in ('token', 'token_unpooled') else 0
  return Geometry((height // stride, width // stride), stride, num_prefix)


def run(model: nn.Module, params: Any, images: Any) -> Captured:
  """One forward pass (eval mode) of `model` with `params` on NHWC `images`, all sown values
  collected in block order (scanned blocks unstacked)."""
  variables = params if 'params' in params else {'params': params}
  logits, state = jax.jit(lambda v, x: model.apply(v, x, mutable=['intermediates']))(
    variables, cpu_devices.shard_batch(images)
  )
  sown = nn.meta.unbox(state.get('intermediates', {}))
  encoder = sown.get('Transformer', sown)
  blocks = _blocks(encoder)
  attention, residual, names = [], [], []
  if 'residual_embedding' in encoder:
    residual.append(np.asarray(encoder['residual_embedding'][0]))
    names.append('embedding')
  for index, block in enumerate(blocks):
    weights = block.get('MultiHeadDotProductAttention_1', {}).get('attention_weights')
    if weights is not None:
      attention.append(np.asarray(weights[0]))
    for key, kind in _SUB_BLOCKS.items():
      if key in block:
        residual.append(np.asarray(block[key][0]))
        names.append(f'block_{index}/{kind}')
  if not residual:
    raise NotApplicable(
      f'{type(model).__name__} sows no residual stream (only the '
      'VisionTransformer and MlpMixer of vit_jax.models do).'
    )
  return Captured(np.asarray(logits), attention, residual, names, geometry(model, np.shape(images)))


def _blocks(encoder: dict) -> list[dict]:
  """The sown values of each block in order; a scanned `encoderblock` is split per layer."""
  if 'encoderblock' in encoder:  # nn.scan: every leaf has a leading [num_layers] axis.
    stacked = encoder['encoderblock']
    num_layers = jax.tree.leaves(stacked)[0].shape[0]
    return [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(num_layers)]
  numbered = sorted(
    (int(m.group(1)), value) for key, value in encoder.items() if (m := _BLOCK.match(key))
  )
  return [value for _, value in numbered]
