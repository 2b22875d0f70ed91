"""Attention implementations: 'per_head' and 'xla' compute the same function and gradients.

Covers the parameter tree (one layout for every implementation), forward and gradient parity
of the module and of whole tiny ViTs (class token, GAP, MAP head, relative position bias),
`layers.matmul`'s hand-written VJP, the module's attention dropout and bfloat16 compute. The
computing forms themselves (vit_jax.models.dot_product) are tested in test_model_dot_product.py.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import load_config
from numerics import rel_err
from vit_jax import models
from vit_jax.models import attention
from vit_jax.models import dot_product
from vit_jax.models import layers
from vit_jax.models import relative_position
from vit_jax.train import setup_run

TINY = dict(patch_size=(4, 4), hidden_size=16, num_layers=2, num_heads=2, mlp_dim=24)
IMAGES = np.random.default_rng(0).uniform(-1, 1, (2, 8, 12, 3)).astype(np.float32)
GRID = (2, 3)  # 8x12 images, 4x4 patches.


def tiny(**kw):
  return models.VisionTransformer(**{'num_classes': 5, **TINY, **kw})


def random_params(module, seed, *inputs):
  """{'params': ...} of `module` for `inputs`, every entry N(0, 0.3) (LayerNorm scales 1 + that).

  Nothing is zero, unlike at init (head kernel, class token, biases), so every parameter
  reaches the output; built from shapes alone, without running (compiling) `init`.
  """
  shapes = nn.meta.unbox(jax.eval_shape(module.init, jax.random.key(0), *inputs))
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
    lambda path, x: jnp.asarray(
      rng.normal(0.0, 0.3, x.shape) + (jax.tree_util.keystr(path).endswith("['scale']")), x.dtype
    ),
    shapes,
  )


# Parity bound of one float32 attention layer here (eps = 2**-23; inputs ~N(0, 1), params
# N(0, 0.3)): sums of <= 16 terms (projections, out), 8 (q.k) and 7 (softmax, weights.v), and
# logits up to ~5 that turn their relative error (~sqrt(16 + 8)*eps) into the weights' relative
# error: ~(5*sqrt(24) + sqrt(30))*eps ~ 30 eps = 3.6e-6 typical (sqrt(K)*eps per K-term sum),
# (5*24 + 30)*eps = 1.8e-5 worst case; 1e-5. Against float64 NumPy or between the two
# implementations (two float32 programs: sqrt(2) x 3.6e-6 = 5e-6).
LAYER_TOL = 1e-5


def leaves_by_path(tree):
  return {
    jax.tree_util.keystr(p): np.asarray(x, np.float64)
    for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


# -- Parameters ---------------------------------------------------------------------------------


@pytest.mark.parametrize('classifier,posemb', [('token', 'relative_bias'), ('map', 'learn')])
def test_parameter_tree_is_the_same_for_every_implementation(classifier, posemb):
  """Same paths, shapes, dtypes and logical axis names (checkpoints load into any of them)."""

  def describe(impl):
    variables = jax.eval_shape(
      tiny(classifier=classifier, posemb=posemb, attention_impl=impl).init,
      jax.random.key(0),
      IMAGES,
    )
    leaves = jax.tree_util.tree_flatten_with_path(
      variables['params'], is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
    )[0]
    return {jax.tree_util.keystr(p): (x.value.shape, x.value.dtype, x.names) for p, x in leaves}

  per_head = describe('per_head')
  att = "['Transformer']['encoderblock_1']['MultiHeadDotProductAttention_1']"
  assert per_head[att + "['query']['kernel']"] == ((16, 2, 8), np.float32, ('embed', 'heads', 'kv'))
  assert per_head[att + "['out']['kernel']"] == ((2, 8, 16), np.float32, ('heads', 'kv', 'embed'))
  if posemb == 'relative_bias':  # (2*2-1)(2*3-1) offsets + 3 class-token entries, per head.
    assert per_head[att + "['relative_position_bias']"] == ((18, 2), np.float32, (None, 'heads'))
  if classifier == 'map':
    assert "['MAPHead_0']['MultiHeadDotProductAttention_0']['key']['kernel']" in per_head
  for impl in ('xla', 'auto'):
    # Dicts compare equal regardless of order: compare the ordered items.
    assert list(describe(impl).items()) == list(per_head.items()), impl


# -- Forward parity -----------------------------------------------------------------------------


def _module(impl, **kw):
  return attention.MultiHeadDotProductAttention(num_heads=2, implementation=impl, **kw)


def numpy_attention(params, x_q, x_kv, bias=None):
  """float64 reference: softmax(q k^T / sqrt(H) + bias) v per head, then the out projection."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  q, k, v = (
    np.einsum('bld,dnh->blnh', x, p[n]['kernel']) + p[n]['bias']
    for n, x in (('query', x_q), ('key', x_kv), ('value', x_kv))
  )
  logits = np.einsum('btnh,bsnh->bnts', q, k) / np.sqrt(q.shape[-1])
  if callable(bias):  # a query-dependent bias: bias(scaled q [B, T, N, H]) -> [B, N, T, S].
    bias = bias(q / np.sqrt(q.shape[-1]))
  if bias is not None:
    logits = logits + (bias if bias.ndim == 4 else bias[None])
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  out = np.einsum('bnts,bsnh->btnh', weights, v)
  return np.einsum('btnh,nhd->btd', out, p['out']['kernel']) + p['out']['bias']


def test_self_attention_module_with_relative_bias_matches_numpy_for_both_implementations():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 7, 16)), jnp.float32)  # 1 prefix + a 2x3 grid.
  kw = dict(relative_grid=GRID, num_prefix=1)
  params = random_params(_module('xla', **kw), 2, x, x)
  p = params['params']
  table = np.asarray(p['relative_position_bias'], np.float64)
  # The index itself is checked against the 2-D offsets in test_model_forward.
  index = relative_position.relative_position_index(*GRID, num_prefix=1)
  expected = numpy_attention(p, x, x, np.transpose(table[index], (2, 0, 1)))
  outputs = {impl: _module(impl, **kw).apply(params, x, x) for impl in ('per_head', 'xla')}
  for impl, out in outputs.items():
    assert out.dtype == jnp.float32 and out.shape == (2, 7, 16)
    assert rel_err(out, expected) < LAYER_TOL, (impl, rel_err(out, expected))
  assert rel_err(outputs['per_head'], outputs['xla']) < LAYER_TOL


def _relative_attention_bias(p, kind):
  """float64 reference of the query-dependent relative logits for a class token + 2x3 grid,
  written from the definition (offsets enumerated per pair, no index tables)."""
  h, w = GRID
  coords = [None] + [(r, c) for r in range(h) for c in range(w)]  # None: the class token.

  def entry(i, j, size):  # table row of the pair (query i, key j); patches first, then prefix.
    if coords[i] is None:
      return size + (2 if coords[j] is None else 0)
    if coords[j] is None:
      return size + 1
    return None

  def bias(q):  # q [B, T, N, H] scaled -> [B, N, T, T]
    out = np.zeros((q.shape[0], q.shape[2], 7, 7))
    for i in range(7):
      for j in range(7):
        if kind == 'attention':
          row = entry(i, j, 2 * h * w - 1)
          row = (i - j + h * w - 1) if row is None else row
          emb = p['relative_embedding'][row]
        else:
          row_y, row_x = entry(i, j, 2 * h - 1), entry(i, j, 2 * w - 1)
          if row_y is None:
            row_y = coords[i][0] - coords[j][0] + h - 1
            row_x = coords[i][1] - coords[j][1] + w - 1
          emb = np.concatenate([p['relative_embedding_y'][row_y], p['relative_embedding_x'][row_x]])
        out[:, :, i, j] = q[:, i] @ emb
    return out

  return bias


@pytest.mark.parametrize('kind', ['attention', 'attention_2d'])
def test_relative_attention_module_matches_numpy_for_both_implementations(kind):
  """The paper's relative attention: the logit gains q . embedding(offset) before softmax."""
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(2, 7, 16)), jnp.float32)  # 1 prefix + a 2x3 grid.
  kw = dict(relative_grid=GRID, num_prefix=1, relative=kind)
  params = random_params(_module('xla', **kw), 2, x, x)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params['params'])
  expected = numpy_attention(params['params'], x, x, _relative_attention_bias(p, kind))
  without = numpy_attention(params['params'], x, x)
  assert rel_err(without, expected) > 1e-2  # the relative term matters.
  for impl in ('per_head', 'xla'):
    out = _module(impl, **kw).apply(params, x, x)
    # The relative term adds a q.embedding sum of 8 terms to the logits: within LAYER_TOL.
    assert rel_err(out, expected) < LAYER_TOL, (impl, rel_err(out, expected))


def test_cross_attention_module_matches_numpy_for_both_implementations():
  rng = np.random.default_rng(3)
  x_q = jnp.asarray(rng.normal(size=(2, 3, 16)), jnp.float32)
  x_kv = jnp.asarray(rng.normal(size=(2, 6, 16)), jnp.float32)
  params = random_params(_module('xla'), 4, x_q, x_kv)
  expected = numpy_attention(params['params'], x_q, x_kv)
  for impl in ('per_head', 'xla'):
    out = _module(impl).apply(params, x_q, x_kv)
    assert out.shape == (2, 3, 16)
    assert rel_err(out, expected) < LAYER_TOL, (impl, rel_err(out, expected))


# Class token + relative bias (with its prefix entries), GAP + relative bias (no prefix), and
# the MAP head's cross-attention (a 1-token probe over the tokens).
VIT_CASES = [
  ('token', 'relative_bias'),
  ('gap', 'relative_bias'),
  ('map', 'learn'),
  ('token', 'relative'),
  ('gap', 'relative_2d'),
]


def _vit_params(model, seed=5):
  return random_params(model, seed, IMAGES)


@pytest.mark.parametrize('classifier,posemb', VIT_CASES)
def test_vit_logits_per_head_equal_xla(classifier, posemb):
  models_ = {
    impl: tiny(classifier=classifier, posemb=posemb, attention_impl=impl)
    for impl in ('per_head', 'xla')
  }
  params = _vit_params(models_['xla'])
  logits = {impl: jax.jit(m.apply)(params, IMAGES) for impl, m in models_.items()}
  assert logits['xla'].shape == (2, 5)
  # The two examples differ (the parity is not of a constant).
  assert np.abs(logits['xla'][0] - logits['xla'][1]).max() > 1e-2
  # Two float32 programs, 2 blocks: sums of <= 48 terms (patch embedding) and 24 (MLP),
  # ~sqrt(48)*2*eps = 1.7e-6, raised by the logits' amplification in 2-3 attention layers (as
  # in LAYER_TOL): ~5e-6 between the two typical; worst case > 1e-4. 1e-5.
  assert rel_err(logits['per_head'], logits['xla']) < 1e-5


@pytest.mark.parametrize('scan,remat', [(False, 'none'), (True, 'nothing_saveable')])
def test_vit_blocks_take_the_fused_self_attention_path(monkeypatch, scan, remat):
  """Blocks call the custom-VJP self-attention (not the slower q/kv split) under scan/remat.

  The module recognises self-attention by `inputs_q is inputs_kv`; a transform that copied
  one of them would silently fall back to the cross-attention form.
  """
  calls = []
  original = dot_product.self_attention_per_head

  def counting(qkv, bias, dtype):
    calls.append(qkv.shape)
    return original(qkv, bias, dtype)

  monkeypatch.setattr(dot_product, 'self_attention_per_head', counting)
  model = tiny(classifier='map', attention_impl='per_head', scan=scan, remat_policy=remat)
  variables = jax.eval_shape(model.init, jax.random.key(0), IMAGES)
  calls.clear()
  jax.eval_shape(jax.grad(lambda p: model.apply(p, IMAGES).sum()), variables)
  # [B, 6 tokens, q/k/v, heads, head_dim]; once per block (once for the scanned body, which
  # remat may trace again), never for the MAP head's cross-attention.
  assert set(calls) == {(2, 6, 3, 2, 8)}
  if scan:
    assert calls
  else:
    assert len(calls) == 2


# -- Gradient parity ----------------------------------------------------------------------------


@pytest.mark.parametrize(
  'posemb,table', [('relative_bias', 'relative_position_bias'), ('relative', 'relative_embedding')]
)
def test_vit_gradients_per_head_equal_xla(posemb, table):
  """d loss / d (params, images): hand-written VJPs (per_head) vs jax autodiff (xla).

  One block with a relative position encoding (fused self-attention VJP, the gradient of a
  bias shared by the batch or, for the paper's relative attention, of a per-example bias into
  the queries and the table) and the MAP head (per_head cross-attention form).
  """
  weights = jnp.asarray(np.random.default_rng(6).normal(size=(2, 5)), jnp.float32)
  kw = dict(classifier='map', posemb=posemb, num_layers=1)

  def grads(impl, params):
    model = tiny(attention_impl=impl, **kw)
    loss = lambda p, x: jnp.sum(model.apply(p, x) * weights)
    return leaves_by_path(jax.jit(jax.grad(loss, argnums=(0, 1)))(params, IMAGES))

  params = _vit_params(tiny(**kw))
  per_head, xla = grads('per_head', params), grads('xla', params)
  assert list(per_head) == list(xla) and len(per_head) > 20
  assert (
    f"[0]['params']['Transformer']['encoderblock_0']['MultiHeadDotProductAttention_1']['{table}']"
  ) in xla
  overall = max(np.abs(g).max() for g in xla.values())  # ~14 here.
  for path, expected in xla.items():
    if "['key']['bias']" in path:
      # softmax ignores an offset added to every key: exactly zero gradient, so what is left is
      # rounding noise of the cancelling sums: sum over b, s of dk, each dk <= overall, with
      # B*S = 2*6 terms: ~sqrt(12)*eps = 4e-7 of overall typical, 12*eps = 1.4e-6 worst case.
      # 1e-6.
      assert np.abs(per_head[path]).max() < 1e-6 * overall, path
      assert np.abs(expected).max() < 1e-6 * overall, path
      continue
    # Forward and backward (about twice the forward's reductions: 1 block + MAP head, sums of
    # <= 48 terms, 14 over the batch and tokens), two float32 programs: ~sqrt(48)*4*eps*sqrt(2)
    # = 4.7e-6 of each leaf's largest entry typical, worst case > 1e-4. 1e-5.
    assert rel_err(per_head[path], expected) < 1e-5, (path, rel_err(per_head[path], expected))


@pytest.mark.parametrize(
  'dtype,tol',
  [
    # float32: dx and dkernel are sums of 6 terms, the same dots in a different program:
    # ~sqrt(6)*eps*sqrt(2) = 4e-7 typical, 2*6*eps = 1.4e-6 worst case. 1e-6.
    (jnp.float32, 1e-6),
    # bfloat16: the custom VJP rounds the float32 cotangent to bfloat16 (<= 2**-8 = 3.9e-3
    # relative per entry), autodiff keeps it float32: ~2**-8 of the largest entry typical,
    # 2**-8 * sum |g k| / max |dx| (~2.5 for 6 normal terms) ~ 1e-2 worst case. 1e-2.
    (jnp.bfloat16, 1e-2),
  ],
)
def test_matmul_vjp_matches_autodiff_of_jnp_dot(dtype, tol):
  rng = np.random.default_rng(9)
  x = jnp.asarray(rng.normal(size=(2, 3, 5)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(5, 6)), jnp.float32)
  cotangent = jnp.asarray(rng.normal(size=(2, 3, 6)), jnp.float32)
  reference = lambda a, b: jnp.dot(
    a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32
  )
  out, vjp = jax.vjp(lambda a, b: layers.matmul(a, b, dtype), x, kernel)
  ref_out, ref_vjp = jax.vjp(reference, x, kernel)
  assert out.dtype == jnp.float32 and out.shape == (2, 3, 6)
  np.testing.assert_array_equal(out, ref_out)  # The same dot either way.
  d_x, d_kernel = vjp(cotangent)
  ref_d_x, ref_d_kernel = ref_vjp(cotangent)
  assert d_x.dtype == d_kernel.dtype == jnp.float32  # Cast back to the float32 inputs' dtype.
  assert d_x.shape == x.shape and d_kernel.shape == kernel.shape
  assert rel_err(d_x, ref_d_x) < tol
  assert rel_err(d_kernel, ref_d_kernel) < tol


@pytest.mark.parametrize('impl', ['per_head', 'xla'])
def test_module_attention_dropout_train_mode(impl):
  """Train mode: reproducible per rng, differs from eval; rate ~0 and rate 0 equal eval.

  The implementations draw different masks (per_head folds the head index into the rng), so
  with dropout on only each one's own reproducibility is asserted, not equality between them.
  """
  b, t, n, h = 4, 16, 2, 16  # [B, T, N, H]: 16 tokens, the relative grid below.
  x = jnp.asarray(np.random.default_rng(12).normal(size=(b, t, n * h)), jnp.float32)
  kw = dict(relative_grid=(3, 5), num_prefix=1)  # 1 + 3 * 5 = 16 tokens.
  params = random_params(_module(impl, **kw), 13, x, x)

  def run(rate, seed=None):
    module = _module(impl, attention_dropout_rate=rate, **kw)
    if seed is None:
      return module.apply(params, x, x)
    return module.apply(params, x, x, deterministic=False, rngs={'dropout': jax.random.key(seed)})

  eval_out = run(0.3)
  np.testing.assert_array_equal(run(0.3, 1), run(0.3, 1))
  assert np.abs(run(0.3, 1) - run(0.3, 2)).max() > 1e-3
  assert np.abs(run(0.3, 1) - eval_out).max() > 1e-3
  # rate 0 draws no mask (and needs no rng): the eval computation itself, op for op, on the
  # same inputs, so the same bits.
  np.testing.assert_array_equal(run(0.0, 1), eval_out)
  # A tiny rate takes the dropout code path yet keeps every weight (1 - 1e-12 is 1.0 in
  # float32), so it must compute the eval function (with the relative bias) in another
  # program: sums of 32 (projections), 16 (q.k, softmax, weights.v) terms, logits of rms ~3:
  # ~(3*sqrt(48) + sqrt(80))*eps*sqrt(2) ~ 40 eps = 5e-6 of the outputs' scale typical, worst
  # ~1e-4. 2e-5 of max |eval_out|.
  scale = np.abs(eval_out).max()
  np.testing.assert_allclose(run(1e-12, 1), eval_out, rtol=0, atol=2e-5 * scale)


def test_unknown_implementation_is_one_clear_error():
  with pytest.raises(
    ValueError,
    match=r"unknown attention implementation 'flash'; choose one "
    r"of \('auto', 'per_head', 'xla', 'cudnn'\)",
  ) as e:
    dot_product.resolve_implementation('flash', jnp.float32, 64)
  assert '\n' not in str(e.value)
  with pytest.raises(ValueError, match="unknown attention implementation 'Per_Head'"):
    jax.eval_shape(tiny(attention_impl='Per_Head').init, jax.random.key(0), IMAGES)


# -- bfloat16 compute ---------------------------------------------------------------------------


@pytest.mark.parametrize('impl', ['per_head', 'xla'])
def test_bfloat16_compute_tracks_float32(impl):
  """dtype=bfloat16 with float32 params: float32 logits within a bf16-sized error of f32."""
  kw = dict(classifier='token', posemb='relative_bias', attention_impl=impl)
  params = _vit_params(tiny(**kw), seed=14)
  f32 = jax.jit(tiny(**kw).apply)(params, IMAGES)
  bf16 = jax.jit(tiny(dtype=jnp.bfloat16, **kw).apply)(params, IMAGES)
  assert bf16.dtype == jnp.float32 and bf16.shape == (2, 5)
  # bfloat16 matmul operands (<= 2**-8 = 3.9e-3 relative each, float32 accumulation and
  # residual stream): each dot is off by ~sqrt(2)*2**-8/sqrt(3) = 3.2e-3 rms; ~8 per block, 2
  # blocks, patch embedding and head in quadrature: ~sqrt(18)*3.2e-3 = 1.4e-2 typical, worst
  # case ~0.1. 3e-2. Above 1e-4: in float32 it would be within 1e-5, so the matmuls really
  # ran in bfloat16.
  assert 1e-4 < rel_err(bf16, f32) < 3e-2, rel_err(bf16, f32)


def test_config_rejects_unknown_attention_impl_in_one_line(tmp_path):
  config = load_config('default', model__attention_impl='flash')
  with pytest.raises(
    setup_run.ConfigError,
    match=r"^config.model.attention_impl='flash'; use "
    r"one of \('auto', 'per_head', 'xla', 'cudnn'\)\.$",
  ):
    setup_run.build(config, str(tmp_path))
