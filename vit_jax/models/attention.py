"""Multi-head dot-product attention with the released checkpoints' parameter layout.

Parameters (same layout as the released `.npz` files and flax's MultiHeadDotProductAttention):
  query/key/value: kernel [D, heads, head_dim], bias [heads, head_dim]
  out:             kernel [heads, head_dim, D], bias [D]
plus, with `relative_grid` set, `relative_position_bias` [(2h-1)(2w-1) + 3*prefix, heads]: a
learned bias per head for every 2-D offset between two patches of an h x w grid (the position
embedding variant "relative" of the ViT paper's ablation, in the 2-D form of Swin/BEiT). Extra
prefix tokens (the class token) get three learned entries per head: prefix->patch, patch->prefix
and prefix->prefix.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import layers


def relative_position_index(h: int, w: int, num_prefix: int) -> np.ndarray:
  """Index into the relative bias table for every (query, key) pair: int32 [L, L], L = p + h*w.

  Patch pairs use (dy + h - 1) * (2w - 1) + (dx + w - 1); prefix rows/columns use the three
  entries after the (2h-1)(2w-1) patch offsets.
  """
  ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  coords = np.stack([ys.ravel(), xs.ravel()], axis=-1)  # [hw, 2]
  delta = coords[:, None, :] - coords[None, :, :]  # [hw, hw, 2]
  patch_index = (delta[..., 0] + h - 1) * (2 * w - 1) + (delta[..., 1] + w - 1)
  if not num_prefix:
    return patch_index.astype(np.int32)
  n_offsets = (2 * h - 1) * (2 * w - 1)
  length = num_prefix + h * w
  index = np.empty((length, length), np.int64)
  index[num_prefix:, num_prefix:] = patch_index
  index[:num_prefix, num_prefix:] = n_offsets  # prefix query -> patch key.
  index[num_prefix:, :num_prefix] = n_offsets + 1  # patch query -> prefix key.
  index[:num_prefix, :num_prefix] = n_offsets + 2  # prefix -> prefix.
  return index.astype(np.int32)


def relative_table_size(h: int, w: int, num_prefix: int) -> int:
  return (2 * h - 1) * (2 * w - 1) + (3 if num_prefix else 0)


def attend(q, k, v, bias, dropout_rate, dropout_rng, deterministic):
  """softmax(q k^T / sqrt(d) + bias) v for q [B, T, N, H], k/v [B, S, N, H], bias [1, N, T, S]."""
  if deterministic or dropout_rate == 0.0:
    return jax.nn.dot_product_attention(q, k, v, bias=bias)
  logits = jnp.einsum('btnh,bsnh->bnts', q, k) / np.sqrt(q.shape[-1]).astype(q.dtype)
  if bias is not None:
    logits = logits + bias.astype(logits.dtype)
  weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
  weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0).astype(v.dtype)
  return jnp.einsum('bnts,bsnh->btnh', weights, v)


class HeadProjection(nn.Module):
  """Dense layer to/from heads with the released layout.

  in:  x [..., D] -> [..., heads, head_dim]; kernel [D, heads, head_dim], bias [heads, head_dim]
  out: x [..., heads, head_dim] -> [..., D]; kernel [heads, head_dim, D], bias [D]
  (Own module rather than flax's DenseGeneral, whose init reshapes a boxed kernel and then
  trips over its 3-D logical names when a mesh is active.)
  """
  kernel_shape: tuple[int, int, int]
  to_heads: bool
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    names = ('embed', 'heads', 'kv') if self.to_heads else ('heads', 'kv', 'embed')
    bias_shape = self.kernel_shape[1:] if self.to_heads else self.kernel_shape[2:]
    # Fan-in / fan-out as flax's DenseGeneral computes them for the xavier initializer.
    in_axis, out_axis = ((0,), (1, 2)) if self.to_heads else ((0, 1), (2,))
    init = nn.initializers.variance_scaling(1.0, 'fan_avg', 'uniform', in_axis=in_axis,
                                            out_axis=out_axis)
    kernel = self.param('kernel', layers.logical(init, names), self.kernel_shape,
                        self.param_dtype)
    bias = self.param('bias', layers.logical(nn.initializers.zeros, names[-len(bias_shape):]),
                      bias_shape, self.param_dtype)
    x, kernel, bias = (t.astype(self.dtype) for t in (x, kernel, bias))
    if self.to_heads:
      return jnp.einsum('...d,dhk->...hk', x, kernel) + bias
    return jnp.einsum('...hk,hkd->...d', x, kernel) + bias


class MultiHeadDotProductAttention(nn.Module):
  """Multi-head attention of `inputs_q` [B, T, D] over `inputs_kv` [B, S, D] -> [B, T, D].

  Attributes:
    num_heads: number of heads; D must be divisible by it.
    attention_dropout_rate: dropout on the attention weights (train only).
    relative_grid: (h, w) patch grid to enable the learned relative position bias (self-
      attention only); `num_prefix` tokens (class token) precede the h*w patches.
  """
  num_heads: int
  attention_dropout_rate: float = 0.0
  relative_grid: Optional[tuple[int, int]] = None
  num_prefix: int = 0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs_q: jax.Array, inputs_kv: jax.Array, *,
               deterministic: bool = True) -> jax.Array:
    dim = inputs_q.shape[-1]
    if dim % self.num_heads:
      raise ValueError(f'hidden size {dim} is not divisible by num_heads={self.num_heads}.')
    head_dim = dim // self.num_heads
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    def project(name):
      return HeadProjection((dim, self.num_heads, head_dim), to_heads=True, name=name, **kw)

    q = project('query')(inputs_q)
    k = project('key')(inputs_kv)
    v = project('value')(inputs_kv)
    q, k, v = (layers.constrain(t, ('batch', 'length', 'heads', 'kv')) for t in (q, k, v))

    bias = None
    if self.relative_grid is not None:
      bias = self._relative_bias(inputs_q.shape[1], inputs_kv.shape[1])
    rng = None
    if not deterministic and self.attention_dropout_rate > 0.0:
      rng = self.make_rng('dropout')
    x = attend(q, k, v, bias, self.attention_dropout_rate, rng, deterministic)
    return HeadProjection((self.num_heads, head_dim, dim), to_heads=False, name='out', **kw)(x)

  def _relative_bias(self, len_q: int, len_kv: int) -> jax.Array:
    """Gathers the learned table into a [1, heads, L, L] additive bias."""
    h, w = self.relative_grid
    length = self.num_prefix + h * w
    if len_q != length or len_kv != length:
      raise ValueError(
          f'relative position bias is built for {self.num_prefix} prefix tokens + a {h}x{w} grid '
          f'({length} tokens) but got {len_q} queries and {len_kv} keys.')
    table = self.param(
        'relative_position_bias',
        layers.logical(nn.initializers.truncated_normal(stddev=0.02), (None, 'heads')),
        (relative_table_size(h, w, self.num_prefix), self.num_heads), self.param_dtype)
    index = relative_position_index(h, w, self.num_prefix)
    bias = jnp.take(table, index.reshape(-1), axis=0).reshape(length, length, self.num_heads)
    return jnp.transpose(bias, (2, 0, 1))[None].astype(self.dtype)
