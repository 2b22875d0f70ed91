"""Loss landscapes (analysis B4): filter norms of the directions, a quadratic's surface."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import models
from vit_jax.analysis import landscape

BLOCK = 'MultiHeadDotProductAttention_1'


def _vit_like_params(seed=0):
  """A tiny tree with the ViT param paths and layouts (D=8, 2 heads of 4, patch 4)."""
  rng = np.random.default_rng(seed)

  def arr(*shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)

  return {
    'embedding': {'kernel': arr(4, 4, 3, 8), 'bias': arr(8)},
    'cls': arr(1, 1, 8),
    'Transformer': {
      'posembed_input': {'pos_embedding': arr(1, 5, 8)},
      'encoderblock_0': {
        'LayerNorm_0': {'scale': arr(8), 'bias': arr(8)},
        BLOCK: {
          'query': {'kernel': arr(8, 2, 4), 'bias': arr(2, 4)},
          'out': {'kernel': arr(2, 4, 8), 'bias': arr(8)},
          'relative_position_bias': arr(9, 2),
        },
        'MlpBlock_3': {'Dense_0': {'kernel': arr(8, 16), 'bias': arr(16)}},
      },
      # The scan layout: the same leaves stacked over 3 layers.
      'encoderblock': {
        'LayerNorm_0': {'scale': arr(3, 8)},
        BLOCK: {'key': {'kernel': arr(3, 8, 2, 4)}},
        'MlpBlock_3': {'Dense_0': {'kernel': arr(3, 8, 16)}},
      },
    },
    # Boxed, as models.init returns params.
    'head': {'kernel': nn.LogicallyPartitioned(arr(8, 3), ('embed', 'classes'))},
  }


def _norms(x, axes):
  return np.sqrt(np.sum(np.square(np.asarray(x, np.float64)), axis=axes))


def test_filter_norms_match_params():
  params = _vit_like_params()
  d = landscape.filter_normalized_direction(jax.random.key(0), params)
  plain = nn.meta.unbox(params)
  assert jax.tree.structure(d) == jax.tree.structure(plain)
  blk, scan = plain['Transformer']['encoderblock_0'], plain['Transformer']['encoderblock']
  dblk, dscan = d['Transformer']['encoderblock_0'], d['Transformer']['encoderblock']
  cases = [
    # (direction leaf, param leaf, axes of one filter's norm, number of filters)
    (d['embedding']['kernel'], plain['embedding']['kernel'], (0, 1, 2), 8),  # conv
    (dblk['MlpBlock_3']['Dense_0']['kernel'], blk['MlpBlock_3']['Dense_0']['kernel'], 0, 16),
    (dblk[BLOCK]['query']['kernel'], blk[BLOCK]['query']['kernel'], 0, 8),  # per (head, dim)
    (dblk[BLOCK]['out']['kernel'], blk[BLOCK]['out']['kernel'], (0, 1), 8),
    (d['head']['kernel'], plain['head']['kernel'], 0, 3),
    (dscan[BLOCK]['key']['kernel'], scan[BLOCK]['key']['kernel'], 1, 3 * 8),  # per layer
    (dscan['MlpBlock_3']['Dense_0']['kernel'], scan['MlpBlock_3']['Dense_0']['kernel'], 1, 3 * 16),
  ]
  for dx, x, axes, num in cases:
    assert dx.shape == x.shape and dx.dtype == x.dtype
    assert _norms(x, axes).size == num
    # float32 (eps = 2**-23): d = g * ||x|| / ||g|| per filter of K <= 48 entries; each norm
    # sums K squares (<= K eps/2, halved by the sqrt), then a product and a division per entry:
    # <= (48/2 + 2)*eps = 3.1e-6 worst case. 5e-6.
    np.testing.assert_allclose(_norms(dx, axes), _norms(x, axes), rtol=5e-6)
    # A random direction, not the params rescaled.
    assert abs(np.corrcoef(np.ravel(dx), np.ravel(x))[0, 1]) < 0.5


def test_excluded_leaves_are_exactly_zero():
  d = landscape.filter_normalized_direction(jax.random.key(0), _vit_like_params())
  blk, scan = d['Transformer']['encoderblock_0'], d['Transformer']['encoderblock']
  for leaf in [
    d['embedding']['bias'],
    d['cls'],
    d['Transformer']['posembed_input']['pos_embedding'],
    blk['LayerNorm_0']['scale'],
    blk['LayerNorm_0']['bias'],
    blk[BLOCK]['query']['bias'],
    blk[BLOCK]['out']['bias'],
    blk[BLOCK]['relative_position_bias'],
    blk['MlpBlock_3']['Dense_0']['bias'],
    scan['LayerNorm_0']['scale'],
  ]:
    assert not np.any(np.asarray(leaf))
  nonzero = [d['embedding']['kernel'], blk[BLOCK]['query']['kernel'], d['head']['kernel']]
  assert all(np.all(np.asarray(leaf) != 0) for leaf in nonzero)


def test_is_excluded_overrides_the_default():
  def only_head(path, _):
    return path[0] == 'head'

  d = landscape.filter_normalized_direction(jax.random.key(1), _vit_like_params(), only_head)
  assert not np.any(np.asarray(d['head']['kernel']))
  # The class token is now a direction too: per output (last) axis, norm as the params'.
  cls = np.asarray(nn.meta.unbox(_vit_like_params())['cls'])
  # Filters of one entry (as above with K = 1): two squares and square roots, a product and a
  # division, ~5 roundings of 2**-24 = 2.5 eps = 3e-7 worst case. 5e-7.
  np.testing.assert_allclose(_norms(d['cls'], (0, 1)), _norms(cls, (0, 1)), rtol=5e-7)
  # ... and a 1-D bias: every entry its own filter, so |d_i| = |θ_i|.
  bias = np.asarray(_vit_like_params()['embedding']['bias'])
  np.testing.assert_allclose(np.abs(d['embedding']['bias']), np.abs(bias), rtol=5e-7)


def test_same_key_same_direction_other_key_other():
  params = _vit_like_params()
  d1, d2, d3 = (landscape.filter_normalized_direction(jax.random.key(k), params) for k in (0, 0, 1))
  a, b, c = (
    np.asarray(d['Transformer']['encoderblock_0']['MlpBlock_3']['Dense_0']['kernel'])
    for d in (d1, d2, d3)
  )
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_surface_of_a_quadratic_matches_closed_form_and_compiles_once():
  rng = np.random.default_rng(0)
  m = rng.normal(size=(6, 6))
  a_mat, g = m @ m.T - 2 * np.eye(6), rng.normal(size=6)  # indefinite, with a linear term
  traces = []

  def flat(p):
    return jnp.concatenate([p['u'].ravel(), p['v']])

  def loss(p):
    traces.append(1)
    x = flat(p)
    return 0.5 * x @ jnp.asarray(a_mat, jnp.float32) @ x + jnp.asarray(g, jnp.float32) @ x

  def tree(x):
    return {
      'u': jnp.asarray(x[:4].reshape(2, 2), jnp.float32),
      'v': jnp.asarray(x[4:], jnp.float32),
    }

  x0, e1, e2 = (rng.normal(size=6) for _ in range(3))
  surface = landscape.loss_surface(
    loss, tree(x0), (tree(e1), tree(e2)), steps=21, span=1.5, progress=False
  )
  np.testing.assert_array_equal(surface.coords, np.linspace(-1.5, 1.5, 21))  # the same call.
  assert surface.losses.shape == (21, 21) and surface.losses.dtype == np.float64
  # Closed form in float64 from the float32-rounded inputs.
  x0, e1, e2 = (np.float64(np.float32(v)) for v in (x0, e1, e2))
  alpha, beta = np.meshgrid(surface.coords, surface.coords, indexing='ij')
  x = x0 + alpha[..., None] * e1 + beta[..., None] * e2
  expected = 0.5 * np.einsum('ijk,kl,ijl->ij', x, a_mat, x) + x @ g
  # float32 (eps = 2**-23): θ + a d1 + b d2 rounds each coordinate (moving the loss by <= ~2
  # ulps times sum |grad_i x_i| <= ~130), and the loss sums 36 + 6 terms whose absolute values
  # add up to <= ~150 on this grid: ~sqrt(42)*eps/2*150 + 2*eps/2*130 = 7e-5 typical,
  # (42*150 + 2*130)*eps/2 = 4e-4 worst case, the same anywhere on the grid (losses cross 0).
  # 2e-4 absolute.
  np.testing.assert_allclose(surface.losses, expected, rtol=0, atol=2e-4)
  assert surface.losses[10, 10] == np.float32(loss(tree(x0)))
  assert len(traces) == 2  # one trace for the 441 grid points, one for the eager call above


@pytest.mark.parametrize('scan', [False, True])
def test_default_rule_on_a_real_vit_tree(scan):
  """On the model's own param tree (shapes only): every kernel moves, nothing else does."""
  model = models.VisionTransformer(
    num_classes=5,
    patch_size=(4, 4),
    hidden_size=16,
    num_layers=2,
    num_heads=2,
    mlp_dim=24,
    scan=scan,
  )
  shapes = nn.meta.unbox(
    jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 8, 8, 3), np.float32))['params']
  )
  moved = {}
  for key_path, x in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    path = tuple(k.key for k in key_path)
    if not landscape.default_is_excluded(path, x):
      moved[path] = landscape.filter_axes(path, x)
  block = ('Transformer', 'encoderblock' if scan else 'encoderblock_0')
  attention = block + ('MultiHeadDotProductAttention_1',)
  assert moved[('embedding', 'kernel')] == (0, 1, 2)
  assert moved[('head', 'kernel')] == (0,)
  # Per layer when scanned: the stacked layer axis 0 is never reduced.
  for name in ('query', 'key', 'value'):
    assert moved[attention + (name, 'kernel')] == ((1,) if scan else (0,))
  assert moved[attention + ('out', 'kernel')] == ((1, 2) if scan else (0, 1))
  assert moved[block + ('MlpBlock_3', 'Dense_0', 'kernel')] == ((1,) if scan else (0,))
  assert all(path[-1] == 'kernel' for path in moved)
  assert len(moved) == 2 + 6 * (1 if scan else 2)  # embedding, head; q, k, v, out, 2 Dense
