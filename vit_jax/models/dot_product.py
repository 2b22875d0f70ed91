"""softmax(q k^T / sqrt(d) + bias) v, in the forms each backend runs well.

How the same function is computed (`implementation`; all give the same numbers up to rounding,
except with attention dropout in training, where each draws its masks its own way):
  'per_head' (XLA:CPU) one fused [D, 3D] projection with 1/sqrt(head_dim) folded into the query
             kernel, then per head two plain batched matmuls [B, T, d] x [B, S, d] and a float32
             softmax, heads concatenated into one [D, D] output projection. On CPU the batched
             4-D einsums make XLA transpose operands and pick slow kernels (27-80 GFLOP/s vs
             ~170 for these), and bfloat16 4-D dots are upcast; this layout avoids both.
  'xla'      the batched-heads einsum form via `jax.nn.dot_product_attention` (TPU; GPU float32).
  'cudnn'    `jax.nn.dot_product_attention(implementation='cudnn')`: fused flash attention on
             NVIDIA GPUs (bfloat16/float16, head_dim a multiple of 8).
  'auto'     per_head on CPU, cudnn on GPU where it applies, else xla; also xla where cuDNN
             refuses the shapes at trace time, its gradient's limits included (`cudnn_refusal`:
             e.g. a bias with an odd sequence length, 197 tokens, even in a forward-only
             program), so 'auto' does not fail where 'xla' runs. An explicit 'cudnn' raises.
Attention dropout (train only) always takes the explicit softmax path.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

IMPLEMENTATIONS = ('auto', 'per_head', 'xla', 'cudnn')
# What jax raises while tracing a cuDNN attention it cannot run (jax/_src/cudnn/
# fused_attention_stablehlo.py): NotImplementedError for a dtype, head dim or sequence length
# outside its kernels, ValueError for a layout or bias shape, RuntimeError without cuDNN.
CUDNN_REFUSALS = (NotImplementedError, ValueError, RuntimeError)


def resolve_implementation(implementation: str, dtype, head_dim: int) -> str:
  """The implementation 'auto' stands for on the default backend (others pass through)."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
      f'unknown attention implementation {implementation!r}; choose one of {IMPLEMENTATIONS}.'
    )
  backend = jax.default_backend()
  if implementation == 'cudnn' and backend != 'gpu':
    raise ValueError(
      f"attention implementation 'cudnn' needs an NVIDIA GPU but JAX computes on "
      f"{backend}; use 'auto'."
    )
  if implementation != 'auto':
    return implementation
  if backend == 'cpu':
    return 'per_head'
  if backend == 'gpu' and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0:
    return 'cudnn'
  return 'xla'


def _dropout(weights, rate, rng):
  keep = jax.random.bernoulli(rng, 1.0 - rate, weights.shape)
  return jnp.where(keep, weights / (1.0 - rate), 0.0)


def cudnn_refusal(q, k, v, bias) -> Optional[str]:
  """Why cuDNN will not run attention on these operands ('Type: message'), None if it will.

  q [B, T, N, H], k/v [B, S, N, H], bias [1 or B, N, T, S] or None: arrays, tracers or
  ShapeDtypeStructs. Traces cuDNN's forward pass and gradient abstractly (nothing runs): some
  limits hold for the gradient only (a bias with an odd T or S), and under jit, remat or scan
  that is traced after `attend` has returned, where no fallback can catch it.
  """
  spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)
  operands = tuple(spec(x) for x in (q, k, v) + (() if bias is None else (bias,)))

  def gradient(*args):
    fn = lambda q, k, v, *b: jax.nn.dot_product_attention(
      q, k, v, bias=b[0] if b else None, implementation='cudnn'
    )
    out, vjp = jax.vjp(fn, *args)
    return vjp(out)

  try:
    jax.eval_shape(gradient, *operands)
  except CUDNN_REFUSALS as e:
    return f'{type(e).__name__}: {e}'
  return None


def attend(
  q, k, v, bias, dropout_rate, dropout_rng, deterministic, implementation='xla', fallback=False
):
  """softmax(q k^T / sqrt(d) + bias) v for q [B, T, N, H], k/v [B, S, N, H], bias [1 or B, N,
  T, S].

  The batched-heads forms ('xla', 'cudnn'); returns [B, T, N, H] in q's dtype. `fallback`
  (what 'auto' asks for): 'cudnn' becomes 'xla' where cuDNN refuses the operands.
  """
  if deterministic or dropout_rate == 0.0:
    bias = None if bias is None else bias.astype(q.dtype)
    if implementation == 'cudnn' and fallback and cudnn_refusal(q, k, v, bias) is not None:
      implementation = 'xla'
    return jax.nn.dot_product_attention(
      q, k, v, bias=bias, implementation=None if implementation == 'xla' else implementation
    )
  logits = jnp.einsum('btnh,bsnh->bnts', q, k, preferred_element_type=jnp.float32)
  logits = logits / np.sqrt(q.shape[-1])
  if bias is not None:
    logits = logits + bias.astype(jnp.float32)
  weights = _dropout(jax.nn.softmax(logits, axis=-1), dropout_rate, dropout_rng)
  return jnp.einsum(
    'bnts,bsnh->btnh', weights.astype(v.dtype), v, preferred_element_type=jnp.float32
  ).astype(q.dtype)


def attend_per_head(q, k, v, bias, dropout_rate, dropout_rng, dtype):
  """Per-head attention: q [B, T, N, H] (already scaled by 1/sqrt(H)), k/v [B, S, N, H], bias
  [N, T, S], [N, B, T, S] or None -> float32 [B, T, N*H], heads concatenated (head-major, as
  `out` expects).

  Slices of the fused projection are strided views; XLA:CPU feeds them to its matmul kernels
  without copies. Matmul operands are `dtype`, accumulation and softmax float32.
  """
  return _attend_heads(
    lambda h: (q[:, :, h], k[:, :, h], v[:, :, h]),
    q.shape[2],
    bias,
    dtype,
    dropout_rate,
    dropout_rng,
  )[0]


def _attend_heads(head_qkv, num_heads, bias, dtype, dropout_rate=0.0, dropout_rng=None):
  """`attend_per_head` for head h's q, k, v [B, *, H] = head_qkv(h); also returns the softmax
  weights per head [N, B, T, S] (before dropout).

  The caller slices each head straight from its own array: a slice of a slice costs XLA:CPU
  extra copies in the step (~10% more HLO ops in a ViT-Ti gradient).
  """
  outputs, weights = [], []
  for head in range(num_heads):
    q, k, v = head_qkv(head)
    logits = _heads_dot(q, k, (2, 2), dtype)
    if bias is not None:
      logits = logits + bias[head].astype(jnp.float32)
    weights.append(jax.nn.softmax(logits, axis=-1))
    kept = weights[-1]
    if dropout_rng is not None:
      kept = _dropout(kept, dropout_rate, jax.random.fold_in(dropout_rng, head))
    outputs.append(_heads_dot(kept, v, (2, 1), dtype))
  return jnp.concatenate(outputs, axis=-1), jnp.stack(weights)


def _heads_dot(a, b, contract, dtype):
  """Batched (over dim 0) matmul of [B, *, *] operands contracting a's / b's dims `contract`.

  In bfloat16 an operand contracted on its rows is transposed explicitly first: XLA:CPU runs
  bfloat16 x bfloat16 -> float32 dots only as plain [M, K] x [K, N] matmuls (else it falls
  back to float32 or fails).
  """
  a, b = a.astype(dtype), b.astype(dtype)
  if jnp.dtype(dtype) != jnp.float32:
    if contract[0] == 1:
      a, contract = jax.lax.optimization_barrier(jnp.swapaxes(a, 1, 2)), (2, contract[1])
    if contract[1] == 2:
      b, contract = jax.lax.optimization_barrier(jnp.swapaxes(b, 1, 2)), (contract[0], 1)
  return jax.lax.dot_general(
    a, b, ((contract[:1], contract[1:]), ((0,), (0,))), preferred_element_type=jnp.float32
  )


def _self_attention_forward(qkv, bias, dtype):
  """(output [B, T, N*H], softmax weights per head [N, B, T, T]) for qkv [B, T, 3, N, H]."""
  return _attend_heads(
    lambda h: tuple(qkv[:, :, i, h] for i in range(3)), qkv.shape[3], bias, dtype
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def self_attention_per_head(qkv, bias, dtype):
  """Per-head self-attention: qkv [B, T, 3, N, H] float32 (q already scaled by 1/sqrt(H)),
  bias [N, T, T] or [N, B, T, T] float32 or None -> float32 [B, T, N*H], heads concatenated
  head-major.

  Matmul operands are `dtype`, accumulation and softmax float32. The gradient is written
  out by hand (as in flash attention: dS = P * (dP - rowsum(dO * O))) and returned as one
  [B, T, 3, N, H] array: differentiating the slices of `qkv` instead makes XLA pad every
  head's dq, dk, dv to the full size and add them up, and it saves nothing (~70 ms of a
  1.9 s ViT-Ti/16 train step on 2 CPU cores).
  """
  return _self_attention_forward(qkv, bias, dtype)[0]


def _self_attention_fwd(qkv, bias, dtype):
  out, weights = _self_attention_forward(qkv, bias, dtype)
  return out, (qkv, bias, weights, out)


def _self_attention_bwd(dtype, residuals, grad):
  qkv, bias, weights, out = residuals
  heads, head_dim = qkv.shape[3:]
  grads, bias_grads = [], []
  for head in range(heads):
    q, k, v = (qkv[:, :, i, head] for i in range(3))
    cols = slice(head * head_dim, (head + 1) * head_dim)
    d_out, w = grad[..., cols], weights[head]
    d_v = _heads_dot(w, d_out, (1, 1), dtype)  # [B, S, H]
    d_w = _heads_dot(d_out, v, (2, 2), dtype)  # [B, T, S]
    row = jnp.sum(d_out * out[..., cols], axis=-1, keepdims=True)
    d_logits = w * (d_w - row)
    d_q = _heads_dot(d_logits, k, (2, 1), dtype)
    d_k = _heads_dot(d_logits, q, (1, 1), dtype)
    grads.append(jnp.stack([d_q, d_k, d_v], axis=2))  # [B, T, 3, H]
    if bias is not None:  # A bias shared by the batch gets the batch's summed gradient.
      bias_grads.append(d_logits if bias.ndim == 4 else jnp.sum(d_logits, axis=0))
  d_qkv = jnp.stack(grads, axis=3).astype(qkv.dtype)
  return d_qkv, None if bias is None else jnp.stack(bias_grads).astype(bias.dtype)


self_attention_per_head.defvjp(_self_attention_fwd, _self_attention_bwd)
