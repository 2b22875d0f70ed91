"""A tiny ViT's logits equal an independent float64 NumPy forward written from the equations.

The weights are built here in the released `.npz` layout (pre-Linen numbering, q/k/v kernels
[D, heads, head_dim], out kernel [heads, head_dim, D]), written to disk and read back with
`npz.load`: the test proves both the model and the checkpoint format.
"""

import functools

import jax
import numpy as np
import pytest

from vit_jax import models
from vit_jax.weights import released
from vit_jax.weights import tree

PATCH, SIZE, D, HEADS, MLP, LAYERS, REPR, CLASSES = 4, 16, 8, 2, 12, 2, 6, 5


def released_weights(rng, classifier='token', representation=True):
  """Random weights, keyed exactly as in a released ViT `.npz` file."""
  w = lambda *shape: rng.normal(0.0, 0.4, shape)
  tokens = (SIZE // PATCH) ** 2 + (classifier == 'token')
  hd = D // HEADS
  flat = {
    'embedding/kernel': w(PATCH, PATCH, 3, D),
    'embedding/bias': w(D),
    'Transformer/posembed_input/pos_embedding': w(1, tokens, D),
    'Transformer/encoder_norm/scale': 1 + w(D),
    'Transformer/encoder_norm/bias': w(D),
    'head/kernel': w(REPR if representation else D, CLASSES),
    'head/bias': w(CLASSES),
  }
  if classifier == 'token':
    flat['cls'] = w(1, 1, D)
  if representation:
    flat['pre_logits/kernel'], flat['pre_logits/bias'] = w(D, REPR), w(REPR)
  for i in range(LAYERS):
    b = f'Transformer/encoderblock_{i}/'
    for ln in ('LayerNorm_0', 'LayerNorm_2'):
      flat[b + ln + '/scale'], flat[b + ln + '/bias'] = 1 + w(D), w(D)
    att = b + 'MultiHeadDotProductAttention_1/'
    for proj in ('query', 'key', 'value'):
      flat[att + proj + '/kernel'], flat[att + proj + '/bias'] = w(D, HEADS, hd), w(HEADS, hd)
    flat[att + 'out/kernel'], flat[att + 'out/bias'] = w(HEADS, hd, D), w(D)
    mlp = b + 'MlpBlock_3/'
    flat[mlp + 'Dense_0/kernel'], flat[mlp + 'Dense_0/bias'] = w(D, MLP), w(MLP)
    flat[mlp + 'Dense_1/kernel'], flat[mlp + 'Dense_1/bias'] = w(MLP, D), w(D)
  return {k: v.astype(np.float32) for k, v in flat.items()}


def layer_norm(x, p, name):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-6) * p[name + '/scale'] + p[name + '/bias']


def gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def numpy_vit(images, p, classifier='token', representation=True):
  """float64 forward: images [N, H, W, 3] -> logits [N, CLASSES]."""
  p = {k: v.astype(np.float64) for k, v in p.items()}
  n, g = images.shape[0], SIZE // PATCH
  # Patches in row-major order, each flattened in (row, col, channel) order like an HWIO kernel.
  patches = images.reshape(n, g, PATCH, g, PATCH, 3).transpose(0, 1, 3, 2, 4, 5)
  x = patches.reshape(n, g * g, -1) @ p['embedding/kernel'].reshape(-1, D) + p['embedding/bias']
  if classifier == 'token':
    x = np.concatenate([np.repeat(p['cls'], n, axis=0), x], axis=1)
  x = x + p['Transformer/posembed_input/pos_embedding']
  for i in range(LAYERS):
    b = f'Transformer/encoderblock_{i}/'
    att = b + 'MultiHeadDotProductAttention_1/'
    y = layer_norm(x, p, b + 'LayerNorm_0')
    q, k, v = (
      np.einsum('nld,dhk->nlhk', y, p[att + t + '/kernel']) + p[att + t + '/bias']
      for t in ('query', 'key', 'value')
    )
    weights = softmax(np.einsum('nqhk,nshk->nhqs', q, k) / np.sqrt(D // HEADS))
    heads = np.einsum('nhqs,nshk->nqhk', weights, v)
    x = x + np.einsum('nqhk,hkd->nqd', heads, p[att + 'out/kernel']) + p[att + 'out/bias']
    y = layer_norm(x, p, b + 'LayerNorm_2')
    mlp = b + 'MlpBlock_3/'
    y = gelu_tanh(y @ p[mlp + 'Dense_0/kernel'] + p[mlp + 'Dense_0/bias'])
    x = x + y @ p[mlp + 'Dense_1/kernel'] + p[mlp + 'Dense_1/bias']
  x = layer_norm(x, p, 'Transformer/encoder_norm')
  x = x[:, 0] if classifier == 'token' else x.mean(1)
  if representation:
    x = np.tanh(x @ p['pre_logits/kernel'] + p['pre_logits/bias'])
  return x @ p['head/kernel'] + p['head/bias']


def tiny_vit(classifier, representation):
  return models.VisionTransformer(
    num_classes=CLASSES,
    patch_size=(PATCH, PATCH),
    hidden_size=D,
    num_layers=LAYERS,
    num_heads=HEADS,
    mlp_dim=MLP,
    classifier=classifier,
    representation_size=REPR if representation else None,
  )


@pytest.mark.parametrize('classifier,representation', [('token', True), ('gap', False)])
def test_logits_match_numpy_reference(tmp_path, classifier, representation):
  rng = np.random.default_rng(0)
  flat = released_weights(rng, classifier, representation)
  np.savez(tmp_path / 'tiny.npz', **flat)
  params = released.load(tmp_path / 'tiny.npz')
  images = rng.uniform(-1, 1, (3, SIZE, SIZE, 3)).astype(np.float32)

  apply = jax.jit(functools.partial(tiny_vit(classifier, representation).apply, train=False))
  logits = np.asarray(apply({'params': params}, images), np.float64)
  expected = numpy_vit(images.astype(np.float64), flat, classifier, representation)

  assert logits.shape == (3, CLASSES)
  rel_error = np.abs(logits - expected).max() / np.abs(expected).max()
  print(f'{classifier}: max relative error vs float64 NumPy = {rel_error:.2e}')
  # float32 vs float64: reductions of <= 48 terms (patch embedding; 17 tokens, 12 MLP) over 2
  # blocks, logits of rms ~1.3: ~sqrt(48)*2*eps = 1.7e-6 (x ~2 through the softmax) typical,
  # worst case (48 + 2*(8 + 4 + 17 + 17 + 8 + 8 + 12) + 14)*eps*~2 ~ 5e-5. 1e-5.
  assert rel_error <= 1e-5
  # The reference is sensitive to every weight: perturbing one changes the logits a lot.
  flat['Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias'][3] += 0.1
  moved = numpy_vit(images.astype(np.float64), flat, classifier, representation)
  assert np.abs(moved - expected).max() / np.abs(expected).max() > 1e-3


def test_model_init_tree_has_exactly_the_released_keys():
  rng = np.random.default_rng(0)
  flat = released_weights(rng)
  variables = jax.eval_shape(
    tiny_vit('token', True).init, jax.random.key(0), np.zeros((1, SIZE, SIZE, 3), np.float32)
  )
  shapes = {k: v.shape for k, v in tree.flatten(variables['params']).items()}
  assert shapes == {k: v.shape for k, v in flat.items()}
