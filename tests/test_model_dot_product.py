"""How attention is computed (vit_jax.models.dot_product): the per-head self-attention's
hand-written VJP against jax autodiff of a plain reference (float32 and bfloat16), bfloat16
operands in the backward pass, attention dropout of the functional forms, and the choice of
form per backend."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numerics import rel_err
from numerics import value_and_vjp
from vit_jax import models
from vit_jax.models import attention
from vit_jax.models import dot_product
from vit_jax.models import layers


def reference_self_attention(qkv, bias):
  """softmax(q k^T + bias) v per head (q pre-scaled), heads concatenated: plain jnp."""
  q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, T, N, H]
  logits = jnp.einsum('btnh,bsnh->bnts', q, k, precision='highest')
  if bias is not None:
    logits = logits + bias[None]
  out = jnp.einsum('bnts,bsnh->btnh', jax.nn.softmax(logits, axis=-1), v, precision='highest')
  return out.reshape(*out.shape[:2], -1)


def _qkv_bias_cotangent(seed):
  rng = np.random.default_rng(seed)
  qkv = jnp.asarray(rng.normal(size=(2, 5, 3, 3, 4)), jnp.float32)
  bias = jnp.asarray(rng.normal(size=(3, 5, 5)), jnp.float32)
  cotangent = jnp.asarray(rng.normal(size=(2, 5, 12)), jnp.float32)
  return qkv, bias, cotangent


@pytest.mark.parametrize('with_bias', [True, False])
def test_self_attention_per_head_vjp_matches_autodiff_of_reference(with_bias):
  qkv, bias, cotangent = _qkv_bias_cotangent(7)
  bias = bias if with_bias else None
  out, (d_qkv, d_bias) = value_and_vjp(
    lambda a, b: dot_product.self_attention_per_head(a, b, jnp.float32), cotangent, qkv, bias
  )
  ref_out, (ref_d_qkv, ref_d_bias) = value_and_vjp(reference_self_attention, cotangent, qkv, bias)
  assert out.shape == (2, 5, 12) and out.dtype == jnp.float32
  # Two float32 programs: q.k (4 terms), logits up to ~5 (q, k ~N(0, 1), bias N(0, 1)),
  # softmax and weights.v (5 terms): ~(5*sqrt(4) + sqrt(10))*eps*sqrt(2) = 19 eps = 2.3e-6
  # typical, 2*(5*4 + 10)*eps = 7e-6 worst case. 5e-6.
  assert rel_err(out, ref_out) < 5e-6
  assert d_qkv.shape == qkv.shape and d_qkv.dtype == jnp.float32
  # The backward adds 5 more sums of <= 5 terms (and a cancelling one in d logits):
  # ~sqrt(13**2 + 25)*eps*sqrt(2) ~ 20 eps = 2.4e-6 typical, worst ~1.3e-5. 1e-5.
  assert rel_err(d_qkv, ref_d_qkv) < 1e-5
  # Each of dq, dk, dv, per head, is right (not just the largest entries); the same bound.
  for i in range(3):
    for head in range(3):
      assert rel_err(d_qkv[:, :, i, head], ref_d_qkv[:, :, i, head]) < 1e-5, (i, head)
  if with_bias:
    assert d_bias.shape == (3, 5, 5)
    assert rel_err(d_bias, ref_d_bias) < 1e-5
  else:
    assert d_bias is None and ref_d_bias is None


def test_self_attention_per_head_bfloat16_vjp_tracks_float32_reference():
  qkv, bias, cotangent = _qkv_bias_cotangent(8)
  out, (d_qkv, d_bias) = value_and_vjp(
    lambda a, b: dot_product.self_attention_per_head(a, b, jnp.bfloat16), cotangent, qkv, bias
  )
  ref_out, (ref_d_qkv, ref_d_bias) = value_and_vjp(reference_self_attention, cotangent, qkv, bias)
  assert out.dtype == d_qkv.dtype == d_bias.dtype == jnp.float32
  # bfloat16 operands (rounding <= 2**-8 = 3.9e-3 relative, ~2**-8/sqrt(3) rms), float32
  # accumulation: each product carries two roundings, a dot is off by ~3.2e-3 rms. Logits of
  # rms ~2.2 turn that into ~7e-3 in the weights, weights.v adds 3.2e-3, the backward's 4
  # bfloat16 dots as much each: ~1e-2 typical, worst case (5*2 + 5)*2**-8 ~ 6e-2. 3e-2.
  # Above 1e-4: a float32 computation would be within ~1e-5 (LAYER_TOL), so bf16 is used.
  for actual, expected in ((out, ref_out), (d_qkv, ref_d_qkv), (d_bias, ref_d_bias)):
    assert 1e-4 < rel_err(actual, expected) < 3e-2


def dot_dtypes(jaxpr):
  """(lhs, rhs, out) dtype names of every dot_general in `jaxpr`, nested jaxprs included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'dot_general':
      found.append(tuple(str(v.aval.dtype) for v in (*eqn.invars, *eqn.outvars)))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        sub = getattr(sub, 'jaxpr', sub)  # ClosedJaxpr -> Jaxpr.
        if hasattr(sub, 'eqns'):
          found += dot_dtypes(sub)
  return found


def test_bfloat16_backward_multiplies_bfloat16_operands():
  """The hand-written VJPs keep every backward matmul in bfloat16 (float32 accumulation).

  Autodiff would multiply the float32 cotangent with the operands in float32; the gradient
  values barely differ, so this is checked on the program, not on the numbers.
  """
  x, kernel = jnp.ones((2, 3, 5)), jnp.ones((5, 6))
  _, vjp = jax.vjp(lambda a, b: layers.matmul(a, b, jnp.bfloat16), x, kernel)
  dots = dot_dtypes(jax.make_jaxpr(vjp)(jnp.ones((2, 3, 6))).jaxpr)
  assert dots == [('bfloat16', 'bfloat16', 'float32')] * 2  # dx and dkernel.
  qkv, bias, cotangent = _qkv_bias_cotangent(0)
  _, vjp = jax.vjp(lambda a, b: dot_product.self_attention_per_head(a, b, jnp.bfloat16), qkv, bias)
  dots = dot_dtypes(jax.make_jaxpr(vjp)(cotangent).jaxpr)
  # Per head: dv, d(weights), dq, dk.
  assert dots == [('bfloat16', 'bfloat16', 'float32')] * (4 * 3)


def test_matmul_vjp_in_bfloat16_returns_bfloat16_gradients_for_bfloat16_inputs():
  rng = np.random.default_rng(10)
  x = jnp.asarray(rng.normal(size=(4, 5)), jnp.bfloat16)
  kernel = jnp.asarray(rng.normal(size=(5, 3)), jnp.bfloat16)
  d_x, d_kernel = jax.grad(lambda a, b: layers.matmul(a, b, jnp.bfloat16).sum(), argnums=(0, 1))(
    x, kernel
  )
  assert d_x.dtype == d_kernel.dtype == jnp.bfloat16
  # d sum(x k) / dx = rowsums of k (broadcast), / dk = column sums of x: float32 sums of 3
  # and 4 bfloat16 values (<= 3 eps), rounded once to bfloat16 (<= 2**-8 = 3.9e-3): 4e-3.
  np.testing.assert_allclose(
    np.asarray(d_x, np.float32),
    np.broadcast_to(np.asarray(kernel, np.float32).sum(1), (4, 5)),
    rtol=4e-3,
  )
  np.testing.assert_allclose(
    np.asarray(d_kernel, np.float32),
    np.broadcast_to(np.asarray(x, np.float32).sum(0)[:, None], (5, 3)),
    rtol=4e-3,
  )


# -- Dropout ------------------------------------------------------------------------------------


# Dropout tests share one mask shape (batch 4, 2 heads, 16 x 16 weights): compiling the
# random-bits kernel for a shape costs ~1 s on CPU, eager calls reuse it.
DROPOUT_SHAPE = (4, 16, 2, 16)  # [B, T, N, H], T = S = H = 16.


def _weights_through_identity_values(attend_fn, rate, seed):
  """Attention weights after dropout, [B, N, T, S], read out with v = identity (S = H)."""
  rng = np.random.default_rng(seed)
  b, t, n, s = DROPOUT_SHAPE
  q = jnp.asarray(rng.normal(size=(b, t, n, s)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(b, s, n, s)), jnp.float32)
  v = jnp.broadcast_to(jnp.eye(s)[None, :, None, :], (b, s, n, s))  # v[b, s, n, h] = [s == h]
  out = attend_fn(q, k, v, rate)  # [B, T, N, H] with H = S.
  logits = jnp.einsum('btnh,bsnh->bnts', q, k, precision='highest')
  return jnp.transpose(out, (0, 2, 1, 3)), logits


@pytest.mark.parametrize('impl', ['per_head', 'xla'])
def test_attention_dropout_zeroes_weights_at_the_rate_and_rescales_the_rest(impl):
  rate = 0.25
  if impl == 'xla':
    fn = lambda q, k, v, r: dot_product.attend(q, k, v, None, r, jax.random.key(0), False)
    scale = 1 / np.sqrt(16)  # attend scales the logits itself.
  else:
    # attend_per_head takes q already scaled and returns heads concatenated.
    fn = lambda q, k, v, r: dot_product.attend_per_head(
      q, k, v, None, r, jax.random.key(0), jnp.float32
    ).reshape(q.shape)
    scale = 1.0
  dropped, logits = _weights_through_identity_values(fn, rate, 11)
  weights = np.asarray(jax.nn.softmax(logits * scale, axis=-1))
  dropped = np.asarray(dropped)
  zero = dropped == 0
  # 2048 weights: binomial std of the dropped fraction ~0.01.
  assert abs(zero.mean() - rate) < 0.05
  # Two float32 programs: logits are sums of 16 terms of rms 4 (per_head: q unscaled), each
  # weight's relative error is its logit's absolute error plus the normaliser's: ~2 *
  # sqrt(16)*4*eps*sqrt(2) = 45 eps = 5.4e-6 typical, worst ~1e-4. 2e-5.
  np.testing.assert_allclose(dropped[~zero], weights[~zero] / (1 - rate), rtol=2e-5)
  # Each head gets its own mask.
  assert (zero[:, 0] != zero[:, 1]).any()


# -- resolve_implementation ---------------------------------------------------------------------


def test_resolve_implementation_on_cpu_and_explicit_values():
  assert jax.default_backend() == 'cpu'
  for dtype in (jnp.float32, jnp.bfloat16):
    assert dot_product.resolve_implementation('auto', dtype, 64) == 'per_head'
  for impl in ('per_head', 'xla'):
    assert dot_product.resolve_implementation(impl, jnp.float32, 12) == impl
  with pytest.raises(
    ValueError,
    match=r"^attention implementation 'cudnn' needs an NVIDIA GPU "
    r"but JAX computes on cpu; use 'auto'\.$",
  ):
    dot_product.resolve_implementation('cudnn', jnp.bfloat16, 64)


@pytest.mark.parametrize(
  'backend,dtype,head_dim,expected',
  [
    ('gpu', jnp.bfloat16, 64, 'cudnn'),
    ('gpu', jnp.float16, 8, 'cudnn'),
    ('gpu', 'bfloat16', 64, 'cudnn'),
    ('gpu', jnp.float32, 64, 'xla'),
    ('gpu', jnp.bfloat16, 12, 'xla'),
    ('tpu', jnp.bfloat16, 64, 'xla'),
  ],
)
def test_resolve_implementation_auto_on_other_backends(
  monkeypatch, backend, dtype, head_dim, expected
):
  monkeypatch.setattr(jax, 'default_backend', lambda: backend)
  assert dot_product.resolve_implementation('auto', dtype, head_dim) == expected
  assert dot_product.resolve_implementation('per_head', dtype, head_dim) == 'per_head'
  if backend == 'gpu':
    assert dot_product.resolve_implementation('cudnn', dtype, head_dim) == 'cudnn'


# -- 'auto' falls back to xla where cuDNN refuses -----------------------------------------------

REAL_ATTENTION = jax.nn.dot_product_attention


def _gpu_whose_cudnn_refuses(monkeypatch, where):
  """JAX on a 'gpu' whose cuDNN attention raises NotImplementedError, as jax does at trace time
  for a configuration it has no kernel for: `where`='always', or 'gradient' (its VJP only, like
  cuDNN's limit on a bias with an odd sequence length). Accepted calls compute the xla form."""

  def refusing(q, k, v, bias=None, *args, implementation=None, **kw):
    if implementation != 'cudnn':
      return REAL_ATTENTION(q, k, v, bias, *args, implementation=implementation, **kw)
    if where == 'always':
      raise NotImplementedError('The head dim must be <= 256 and a multiple of 8, but got 4.')

    @jax.custom_vjp
    def accepted_forward(q, k, v):
      return REAL_ATTENTION(q, k, v, bias, *args, **kw)

    def fwd(q, k, v):
      raise NotImplementedError(f'Unsupported sequence length Q {q.shape[1]}, KV {k.shape[1]}.')

    accepted_forward.defvjp(fwd, lambda res, g: None)  # never reached: fwd raises.
    return accepted_forward(q, k, v)

  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  monkeypatch.setattr(jax.nn, 'dot_product_attention', refusing)


def test_cudnn_refusal_says_why_for_forward_and_gradient_limits(monkeypatch):
  q = jax.ShapeDtypeStruct((2, 5, 2, 8), jnp.bfloat16)
  _gpu_whose_cudnn_refuses(monkeypatch, 'always')
  assert dot_product.cudnn_refusal(q, q, q, None) == (
    'NotImplementedError: The head dim must be <= 256 and a multiple of 8, but got 4.'
  )
  _gpu_whose_cudnn_refuses(monkeypatch, 'gradient')
  assert dot_product.cudnn_refusal(q, q, q, None) == (
    'NotImplementedError: Unsupported sequence length Q 5, KV 5.'
  )


def test_auto_attention_falls_back_to_xla_where_cudnn_refuses_and_cudnn_raises(monkeypatch):
  """'auto' resolves to cudnn (bfloat16, head_dim 8 on a GPU), cuDNN refuses: the module
  computes exactly the 'xla' result; an explicit 'cudnn' raises jax's error."""
  _gpu_whose_cudnn_refuses(monkeypatch, 'always')
  x = jnp.asarray(np.random.default_rng(20).normal(size=(2, 5, 16)), jnp.float32)
  module = lambda impl: attention.MultiHeadDotProductAttention(
    num_heads=2, implementation=impl, dtype=jnp.bfloat16
  )
  assert dot_product.resolve_implementation('auto', jnp.bfloat16, 8) == 'cudnn'
  params = module('xla').init(jax.random.key(0), x, x)
  expected = module('xla').apply(params, x, x)
  np.testing.assert_array_equal(module('auto').apply(params, x, x), expected)
  with pytest.raises(NotImplementedError, match='head dim must be'):
    module('cudnn').apply(params, x, x)


def test_auto_attention_falls_back_when_only_cudnns_gradient_refuses(monkeypatch):
  """cuDNN accepts the forward pass but not its VJP: 'auto' still takes xla, also under remat,
  where the model is traced forward-only first and differentiated after `attend` returned
  (catching the error around the forward call would not see it)."""
  _gpu_whose_cudnn_refuses(monkeypatch, 'gradient')
  images = jnp.asarray(np.random.default_rng(21).uniform(-1, 1, (2, 8, 8, 3)), jnp.float32)
  kw = dict(patch_size=(4, 4), hidden_size=16, num_layers=1, num_heads=2, mlp_dim=16)
  vit = lambda impl: models.VisionTransformer(
    num_classes=3, attention_impl=impl, dtype=jnp.bfloat16, remat_policy='nothing_saveable', **kw
  )
  params = vit('xla').init(jax.random.key(0), images)
  params = jax.tree.map(lambda p: p + 0.1, params)  # a non-zero head: every gradient flows.
  grads = lambda impl: jax.jit(jax.grad(lambda p: vit(impl).apply(p, images).sum()))(params)
  for expected, actual in zip(jax.tree.leaves(grads('xla')), jax.tree.leaves(grads('auto'))):
    np.testing.assert_array_equal(actual, expected)
  with pytest.raises(NotImplementedError, match='Unsupported sequence length Q 5, KV 5'):
    grads('cudnn')
