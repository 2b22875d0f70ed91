"""Additive position embeddings for a sequence of `num_prefix` tokens + an h x w patch grid.

Kinds (the ViT paper's ablation, Appendix D.4, plus the fixed sin-cos of later work):
  'learn'    1-D learned, one row per token including the class token (the paper's default and
             the released checkpoints): `pos_embedding` [1, p + h*w, D].
  'learn_2d' factorized 2-D learned, as in the paper: a row embedding [1, h, D/2] and a column
             embedding [1, w, D/2], concatenated per patch. The class token gets none: it is
             itself a learned vector, so a learned offset on it would be redundant.
  'sincos2d' fixed 2-D sin-cos (no parameters); class token gets none.
  'none'     no position information.
  Relative kinds, handled inside attention (nothing added here; see models/attention.py):
  'relative'      the paper's variant: 1-D relative attention, a learned embedding per offset
                  between patches that each query is dotted with (content-dependent).
  'relative_2d'   its 2-D form: y and x offset embeddings of head_dim/2 each, concatenated.
  'relative_bias' a learned scalar bias per head and 2-D offset (the Swin / BEiT form).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import layers

# posemb kind -> the attention module's `relative` encoding.
RELATIVE = {'relative': 'attention', 'relative_2d': 'attention_2d', 'relative_bias': 'bias'}
POSEMB_KINDS = ('learn', 'learn_2d', 'sincos2d', 'none') + tuple(RELATIVE)


def sincos_2d(h: int, w: int, dim: int, temperature: float = 10_000.0) -> np.ndarray:
  """Fixed 2-D sin-cos embedding: float32 [h*w, dim] (dim divisible by 4).

  A quarter of the channels each hold sin/cos of the column and of the row coordinate at
  geometrically spaced frequencies 1 / temperature**(k / (dim/4 - 1)).
  """
  if dim % 4:
    raise ValueError(f"posemb='sincos2d' needs a hidden size divisible by 4, got {dim}.")
  quarter = dim // 4
  omega = 1.0 / temperature ** (np.arange(quarter) / max(quarter - 1, 1))
  ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  y = ys.reshape(-1, 1) * omega[None]
  x = xs.reshape(-1, 1) * omega[None]
  return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1).astype(np.float32)


class AddPositionEmbs(nn.Module):
  """Adds a position embedding to x [B, p + h*w, D] (p prefix tokens before the patches)."""

  kind: str = 'learn'
  num_prefix: int = 0
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, grid: tuple[int, int]) -> jax.Array:
    h, w = grid
    _, length, dim = x.shape
    init = layers.logical(nn.initializers.normal(stddev=0.02), (None, 'length', 'embed'))
    if self.kind == 'learn':
      self._check_shape('pos_embedding', (1, length, dim), f'{length} tokens')
      pe = self.param('pos_embedding', init, (1, length, dim), self.param_dtype)
      return x + pe.astype(x.dtype)
    if self.kind == 'learn_2d':
      if dim % 2:
        raise ValueError(f"posemb='learn_2d' needs an even hidden size, got {dim}.")
      self._check_shape('pos_embedding_row', (1, h, dim // 2), f'{h} patch rows')
      self._check_shape('pos_embedding_col', (1, w, dim // 2), f'{w} patch columns')
      row = self.param('pos_embedding_row', init, (1, h, dim // 2), self.param_dtype)
      col = self.param('pos_embedding_col', init, (1, w, dim // 2), self.param_dtype)
      pe = jnp.concatenate(
        [
          jnp.broadcast_to(row[:, :, None, :], (1, h, w, dim // 2)),
          jnp.broadcast_to(col[:, None, :, :], (1, h, w, dim // 2)),
        ],
        axis=-1,
      ).reshape(1, h * w, dim)
    elif self.kind == 'sincos2d':
      pe = jnp.asarray(sincos_2d(h, w, dim))[None]
    elif self.kind == 'none' or self.kind in RELATIVE:
      return x
    else:
      raise ValueError(f'Unknown posemb {self.kind!r}; choose one of {POSEMB_KINDS}.')
    prefix = jnp.zeros((1, self.num_prefix, dim), pe.dtype)
    return x + jnp.concatenate([prefix, pe], axis=1).astype(x.dtype)

  def _check_shape(self, name: str, shape: tuple[int, ...], what: str) -> None:
    """Explains a resolution mismatch better than flax's generic shape error."""
    if not self.has_variable('params', name):
      return
    have = tuple(np.shape(nn.meta.unbox(self.get_variable('params', name))))
    if have != shape:
      path = '/'.join(self.path + (name,))
      raise ValueError(
        f'{path} has shape {have} but the input needs {shape} ({what}): the '
        'image size differs from the one the params were made for; use '
        'vit_jax.weights.fit.load_pretrained to resample the position embeddings.'
      )
