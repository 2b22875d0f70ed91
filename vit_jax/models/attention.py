"""Multi-head dot-product attention with the released checkpoints' parameter layout.

Parameters (same layout as the released `.npz` files and flax's MultiHeadDotProductAttention):
  query/key/value: kernel [D, heads, head_dim], bias [heads, head_dim]
  out:             kernel [heads, head_dim, D], bias [D]
plus, with `relative_grid` set, the tables of a learned relative position encoding
(vit_jax.models.relative_position: the ViT paper's ablation, Appendix D.4).

With the `intermediates` collection mutable (`apply(..., mutable=['intermediates'])`) the module
also sows its post-softmax attention weights, float32 [B, heads, T, S], as `attention_weights`
(computed separately, and only then: the normal forward pass is unchanged).

How the same function is computed (`implementation`: per_head, xla, cudnn, auto) is
vit_jax.models.dot_product's.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import dot_product
from vit_jax.models import layers
from vit_jax.models import relative_position


class HeadProjection(nn.Module):
  """Declares a projection to/from heads in the released layout; returns (kernel, bias).

  to heads:   kernel [D, heads, head_dim], bias [heads, head_dim]
  from heads: kernel [heads, head_dim, D], bias [D]
  (Parameters only: the attention module decides how to multiply, e.g. fusing q, k and v.)
  """

  kernel_shape: tuple[int, int, int]
  to_heads: bool
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array]:
    names = ('embed', 'heads', 'kv') if self.to_heads else ('heads', 'kv', 'embed')
    bias_shape = self.kernel_shape[1:] if self.to_heads else self.kernel_shape[2:]
    # Fan-in / fan-out as flax's DenseGeneral computes them for the xavier initializer.
    in_axis, out_axis = ((0,), (1, 2)) if self.to_heads else ((0, 1), (2,))
    init = nn.initializers.variance_scaling(
      1.0, 'fan_avg', 'uniform', in_axis=in_axis, out_axis=out_axis
    )
    kernel = self.param('kernel', layers.logical(init, names), self.kernel_shape, self.param_dtype)
    bias = self.param(
      'bias',
      layers.logical(nn.initializers.zeros, names[-len(bias_shape) :]),
      bias_shape,
      self.param_dtype,
    )
    return kernel, bias


class MultiHeadDotProductAttention(nn.Module):
  """Multi-head attention of `inputs_q` [B, T, D] over `inputs_kv` [B, S, D] -> [B, T, D] f32.

  Attributes:
    num_heads: number of heads; D must be divisible by it.
    attention_dropout_rate: dropout on the attention weights (train only).
    relative_grid: (h, w) patch grid to enable a learned relative position encoding (self-
      attention only); `num_prefix` tokens (class token) precede the h*w patches.
    relative: which one (vit_jax.models.relative_position.KINDS).
    implementation: see the module docstring.
    dtype: matmul operand dtype (accumulation is float32).
  """

  num_heads: int
  attention_dropout_rate: float = 0.0
  relative_grid: Optional[tuple[int, int]] = None
  relative: str = 'bias'
  num_prefix: int = 0
  implementation: str = 'auto'
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(
    self, inputs_q: jax.Array, inputs_kv: jax.Array, *, deterministic: bool = True
  ) -> jax.Array:
    dim = inputs_q.shape[-1]
    if dim % self.num_heads:
      raise ValueError(f'hidden size {dim} is not divisible by num_heads={self.num_heads}.')
    head_dim = dim // self.num_heads
    params = {}
    for name in ('query', 'key', 'value'):
      params[name] = HeadProjection(
        (dim, self.num_heads, head_dim), to_heads=True, name=name, param_dtype=self.param_dtype
      )()
    out_kernel, out_bias = HeadProjection(
      (self.num_heads, head_dim, dim), to_heads=False, name='out', param_dtype=self.param_dtype
    )()
    rng = None
    if not deterministic and self.attention_dropout_rate > 0.0:
      rng = self.make_rng('dropout')
    if self.relative_grid is not None:
      self._check_relative_length(inputs_q.shape[1], inputs_kv.shape[1])

    implementation = dot_product.resolve_implementation(self.implementation, self.dtype, head_dim)
    if implementation == 'per_head':
      x = self._attend_per_head(params, inputs_q, inputs_kv, rng)
      x = layers.matmul(x, out_kernel.reshape(dim, dim), self.dtype) + out_bias
    else:
      q, k, v = (
        self._project(params[n], x)
        for n, x in (('query', inputs_q), ('key', inputs_kv), ('value', inputs_kv))
      )
      bias = self._relative_logits(q.astype(jnp.float32) / np.sqrt(head_dim))
      if bias is not None and bias.ndim == 3:
        bias = bias[None]
      self._sow_weights(q.astype(jnp.float32) / np.sqrt(head_dim), k, bias)
      x = dot_product.attend(
        q,
        k,
        v,
        bias,
        self.attention_dropout_rate,
        rng,
        deterministic,
        implementation,
        fallback=self.implementation == 'auto',  # to xla where cuDNN refuses the shapes.
      )
      x = (
        jnp.einsum(
          '...hk,hkd->...d', x, out_kernel.astype(self.dtype), preferred_element_type=jnp.float32
        )
        + out_bias
      )
    return x

  def _sow_weights(self, q, k, bias) -> None:
    """Sows the post-softmax weights float32 [B, N, T, S] when `intermediates` is mutable; q
    [B, T, N, H] already scaled by 1/sqrt(H), k [B, S, N, H], bias [(1|B,) N, T, S] or None."""
    if not self.is_mutable_collection('intermediates'):
      return
    logits = jnp.einsum('btnh,bsnh->bnts', q.astype(jnp.float32), k.astype(jnp.float32))
    if bias is not None:
      logits = logits + bias
    self.sow('intermediates', 'attention_weights', jax.nn.softmax(logits, axis=-1))

  def _project(self, kernel_bias, x):
    """x [B, L, D] -> [B, L, heads, head_dim] in `dtype` (batched-heads forms)."""
    kernel, bias = kernel_bias
    y = (
      jnp.einsum(
        '...d,dhk->...hk',
        x.astype(self.dtype),
        kernel.astype(self.dtype),
        preferred_element_type=jnp.float32,
      )
      + bias
    )
    return layers.constrain(y.astype(self.dtype), ('batch', 'length', 'heads', 'kv'))

  def _attend_per_head(self, params, inputs_q, inputs_kv, rng):
    """The 'per_head' form -> float32 [B, T, D] before the output projection."""
    scale = 1.0 / np.sqrt(params['query'][0].shape[-1])
    if inputs_q is inputs_kv:
      qkv = self._project_fused(params, ('query', 'key', 'value'), inputs_q, scale)
      q, k, v = (qkv[:, :, i] for i in range(3))
    else:
      q = self._project_fused(params, ('query',), inputs_q, scale)[:, :, 0]
      kv = self._project_fused(params, ('key', 'value'), inputs_kv, scale)
      k, v = kv[:, :, 0], kv[:, :, 1]
    bias = self._relative_logits(q)
    self._sow_weights(q, k, bias)
    if bias is not None and bias.ndim == 4:
      bias = jnp.swapaxes(bias, 0, 1)  # [N, B, T, S]: heads first, as the per-head loop reads it.
    if inputs_q is inputs_kv and rng is None:
      return dot_product.self_attention_per_head(qkv, bias, self.dtype)
    return dot_product.attend_per_head(q, k, v, bias, self.attention_dropout_rate, rng, self.dtype)

  def _project_fused(self, params, names, x, scale):
    """x [B, L, D] -> float32 [B, L, len(names), heads, head_dim] from one matmul.

    The 1/sqrt(head_dim) scale is folded into the (small) query kernel and bias rather than
    applied to the [B, heads, T, S] logits.
    """
    kernels, biases = [], []
    for name in names:
      kernel, bias = params[name]
      factor = scale if name == 'query' else 1.0
      kernels.append(kernel * factor)
      biases.append(bias * factor)
    kernel = jnp.stack(kernels, axis=1)  # [D, n, heads, head_dim]
    y = layers.matmul(x, kernel.reshape(kernel.shape[0], -1), self.dtype)
    y = y + jnp.stack(biases).reshape(-1)
    y = y.reshape(*x.shape[:-1], *kernel.shape[1:])
    return layers.constrain(y, ('batch', 'length', None, 'heads', 'kv'))

  def _check_relative_length(self, len_q: int, len_kv: int) -> None:
    h, w = self.relative_grid
    length = self.num_prefix + h * w
    if len_q != length or len_kv != length:
      raise ValueError(
        f'relative position encoding is built for {self.num_prefix} prefix tokens + a {h}x{w} '
        f'grid ({length} tokens) but got {len_q} queries and {len_kv} keys.'
      )

  def _relative_logits(self, q: jax.Array) -> Optional[jax.Array]:
    """The relative position term of the logits (vit_jax.models.relative_position.logits) for
    q [B, T, N, H] already scaled by 1/sqrt(H); None without a relative encoding."""
    if self.relative_grid is None:
      return None
    heads, head_dim = q.shape[2:]
    init = nn.initializers.truncated_normal(stddev=0.02)
    tables = {
      name: self.param(
        name, layers.logical(init, (None, axis)), (rows, width), self.param_dtype
      ).astype(jnp.float32)
      for name, (rows, width, axis) in relative_position.tables(
        self.relative, self.relative_grid, self.num_prefix, heads, head_dim
      ).items()
    }
    return relative_position.logits(self.relative, q, tables, self.relative_grid, self.num_prefix)
