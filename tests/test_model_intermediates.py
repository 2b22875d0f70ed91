"""What the analyses read from the models: attention weights and the residual stream, sown
into `intermediates` only when asked for, in every model layout (loop, scan, remat, Mixer)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import models
from vit_jax.analysis import capture
from vit_jax.models import layouts

TINY = dict(patch_size=(4, 4), hidden_size=16, num_layers=2, num_heads=2, mlp_dim=24)
IMAGES = np.random.default_rng(0).uniform(-1, 1, (2, 8, 12, 3)).astype(np.float32)


def tiny(**kw):
  return models.VisionTransformer(**{'num_classes': 5, **TINY, **kw})


def _params(model, seed=0):
  """Random params with nothing zero (head, class token), so every token matters."""
  shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), IMAGES))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: jnp.asarray(rng.normal(0, 0.3, x.shape), x.dtype), shapes)


def _numpy_weights(params, block, x):
  """softmax(q k^T / sqrt(H)) per head for the LayerNorm'ed block input x [B, T, D], float64."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params['params']['Transformer'][block])
  ln = p['LayerNorm_0']
  x = np.asarray(x, np.float64)
  y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
  y = y * ln['scale'] + ln['bias']
  att = p['MultiHeadDotProductAttention_1']
  q, k = (
    np.einsum('btd,dnh->btnh', y, att[n]['kernel']) + att[n]['bias'] for n in ('query', 'key')
  )
  logits = np.einsum('btnh,bsnh->bnts', q, k) / np.sqrt(q.shape[-1])
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  return weights / weights.sum(-1, keepdims=True)


@pytest.mark.parametrize('impl', ['per_head', 'xla'])
@pytest.mark.parametrize(
  'classifier,posemb', [('token', 'learn'), ('gap', 'relative'), ('map', 'relative_bias')]
)
def test_attention_weights_and_residual_stream_match_a_numpy_reference(impl, classifier, posemb):
  model = tiny(classifier=classifier, posemb=posemb, attention_impl=impl)
  params = _params(model)
  got = capture.run(model, params, IMAGES)
  prefix = 1 if classifier == 'token' else 0
  tokens = prefix + 2 * 3
  assert got.names == [
    'embedding',
    'block_0/attention',
    'block_0/mlp',
    'block_1/attention',
    'block_1/mlp',
  ]
  assert got.geometry == capture.Geometry((2, 3), 4, prefix)
  assert [r.shape for r in got.residual] == [(2, tokens, 16)] * 5
  assert [a.shape for a in got.attention] == [(2, 2, tokens, tokens)] * 2
  # float32 softmax over <= 7 keys, summed in float32: the normaliser's 6 additions, exp's few
  # ulps and the sum's 6 additions, ~(6 + 3 + 6)*eps/2 ~ 1e-6 worst case. 2e-6.
  np.testing.assert_allclose(got.attention[0].sum(-1), 1.0, atol=2e-6)
  # The capturing pass (jitted, with the sown extras) and plain apply are two float32
  # programs: reductions of <= 48 terms over 2 blocks, ~sqrt(48)*2*eps*sqrt(2) = 2.3e-6 of the
  # logits' scale typical (x ~2 for logits of rms ~1.5 in the softmax), worst ~1e-4. 1e-5 of
  # max |logits|.
  logits = np.asarray(model.apply(params, IMAGES))
  np.testing.assert_allclose(got.logits, logits, rtol=0, atol=1e-5 * np.abs(logits).max())
  if posemb == 'learn':  # Without a relative term, the weights follow from the block input.
    for layer in range(2):
      expected = _numpy_weights(params, f'encoderblock_{layer}', got.residual[2 * layer])
      # float32 vs float64 from the same block input: LayerNorm (16 terms), q and k (16), q.k
      # (8): the logits' relative error ~sqrt(40)*eps, times logits up to ~5, is the weights'
      # (<= 1) error: ~32 eps = 3.8e-6 typical, (5*40 + 7)*eps = 2.5e-5 worst case. 2e-5.
      np.testing.assert_allclose(got.attention[layer], expected, atol=2e-5)
  # The stream after block 0 is the input of block 1: each sub-block adds to it.
  assert np.abs(got.residual[1] - got.residual[0]).max() > 1e-2


def test_scanned_and_rematerialised_blocks_give_the_looped_values():
  looped = tiny(posemb='relative')
  params = _params(looped)
  reference = capture.run(looped, params, IMAGES)
  for kw in [
    dict(scan=True),
    dict(remat_policy='nothing_saveable'),
    dict(scan=True, remat_policy='dots_saveable'),
  ]:
    model = tiny(posemb='relative', **kw)
    p = params
    if kw.get('scan'):
      p = {'params': layouts.to_scan(params['params'])}
    got = capture.run(model, p, IMAGES)
    assert got.names == reference.names, kw
    # Two float32 programs: reductions of <= 48 terms over <= 2 blocks, ~sqrt(48)*2*eps*sqrt(2)
    # = 2.3e-6 of each array's scale typical (x ~2 through the softmax), worst ~1e-4. 1e-5 of
    # max |b| (residual streams reach ~6, attention weights 1).
    for a, b in zip(got.attention + got.residual, reference.attention + reference.residual):
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max(), err_msg=str(kw))


def test_mixer_sows_its_residual_stream():
  model = models.get_model(
    'Mixer-B_16',
    num_classes=3,
    num_blocks=2,
    hidden_dim=8,
    tokens_mlp_dim=4,
    channels_mlp_dim=8,
    patch_size=(4, 4),
  )
  got = capture.run(model, _params(model), IMAGES)
  assert got.attention == []
  assert got.names == [
    'embedding',
    'block_0/token_mixing',
    'block_0/channel_mixing',
    'block_1/token_mixing',
    'block_1/channel_mixing',
  ]
  assert got.kinds[1:3] == ['token_mixing', 'channel_mixing']
  assert [r.shape for r in got.residual] == [(2, 6, 8)] * 5


def test_nothing_is_sown_or_computed_when_intermediates_are_not_asked_for():
  """Plain `apply` returns no state, and the compiled forward pass computes one softmax per
  head and block: the analysis-only weights are not computed on the normal path."""
  model = tiny(attention_impl='per_head')
  params = _params(model)
  out = model.apply(params, IMAGES)
  assert not isinstance(out, tuple)
  forward = jax.jit(model.apply).lower(params, IMAGES).as_text()
  captured = (
    jax.jit(lambda p, x: model.apply(p, x, mutable=['intermediates']))
    .lower(params, IMAGES)
    .as_text()
  )
  # One exponential per head and block (the softmax), 2 x 2 = 4; the capturing pass adds the
  # separately computed weights (one batched softmax per block).
  assert forward.count('stablehlo.exponential') == 4
  assert captured.count('stablehlo.exponential') == 4 + 2
