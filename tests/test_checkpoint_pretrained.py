"""load_pretrained: new head, dropped pre_logits, resampled position embeddings, clear errors."""

import jax
import numpy as np
import pytest
import scipy.ndimage

from vit_jax import models
from vit_jax.weights import fit
from vit_jax.weights import released
from vit_jax.weights import resample
from vit_jax.weights import tree


def vit(size=32, **kw):
  model = models.VisionTransformer(
    **{
      'num_classes': 4,
      'patch_size': (8, 8),
      'hidden_size': 12,
      'num_layers': 1,
      'num_heads': 3,
      'mlp_dim': 16,
      **kw,
    }
  )
  return model, init_like(model, (1, size, size, 3))


def init_like(model, image_shape):
  """Params as `init` makes them, shapes from eval_shape (compiling init is slow on CPU).

  Zeros everywhere, which for the head is what init gives; tests randomize what they compare.
  """
  shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros(image_shape, np.float32))
  return jax.tree.map(
    lambda x: np.zeros(x.shape, x.dtype), tree.unflatten(tree.flatten(shapes['params']))
  )


def randomized(params, seed=0):
  rng = np.random.default_rng(seed)
  flat = tree.flatten(params)
  return {k: rng.normal(size=v.shape).astype(v.dtype) for k, v in flat.items()}


def saved(tmp_path, flat, name='pre.npz'):
  released.save(tmp_path / name, tree.unflatten(flat))
  return tmp_path / name


def test_new_head_new_classes_and_pre_logits_dropped(tmp_path):
  _, pre = vit(num_classes=1000, representation_size=12)
  pre = randomized(pre)
  model, init = vit(num_classes=10)
  out = tree.flatten(fit.load_pretrained(saved(tmp_path, pre), init))
  target = tree.flatten(init)
  assert sorted(out) == sorted(target)  # no pre_logits, head for 10 classes.
  assert out['head/kernel'].shape == (12, 10)
  np.testing.assert_array_equal(out['head/kernel'], 0.0)
  for key in target:
    if not key.startswith('head/'):
      np.testing.assert_array_equal(out[key], pre[key])
  logits = model.apply({'params': tree.unflatten(out)}, np.ones((2, 32, 32, 3)))
  assert logits.shape == (2, 10)


def test_keep_head_is_strict_and_exact(tmp_path):
  _, params = vit(representation_size=6)
  flat = randomized(params)
  out = tree.flatten(fit.load_pretrained(saved(tmp_path, flat), params, keep_head=True))
  for key in flat:
    np.testing.assert_array_equal(out[key], flat[key])
  _, no_repr = vit()
  with pytest.raises(ValueError, match=r'not in the model: pre_logits/bias \(6,\)'):
    fit.load_pretrained(saved(tmp_path, flat), no_repr, keep_head=True)


def test_position_embeddings_resampled_for_new_resolution(tmp_path):
  _, pre = vit(size=32)  # 4x4 grid + class token.
  pre = randomized(pre)
  model, init = vit(size=48)  # 6x6 grid.
  out = fit.load_pretrained(saved(tmp_path, pre), init)
  pe = out['Transformer']['posembed_input']['pos_embedding']
  old = pre['Transformer/posembed_input/pos_embedding']
  assert pe.shape == (1, 37, 12) and pe.dtype == np.float32
  np.testing.assert_array_equal(pe[0, 0], old[0, 0])  # class token row untouched.
  expected = scipy.ndimage.zoom(
    old[0, 1:].reshape(4, 4, 12).astype(np.float64), (1.5, 1.5, 1), order=1
  )
  # Bilinear in float64 (differences from scipy's ~eps64 = 2.2e-16 relative), rounded once to
  # float32: <= 2**-24 relative; eps = 2**-23.
  np.testing.assert_allclose(pe[0, 1:].reshape(6, 6, 12), expected, rtol=2**-23)
  assert model.apply({'params': out}, np.ones((1, 48, 48, 3))).shape == (1, 4)


def test_2d_and_relative_position_params_resampled(tmp_path):
  for kind in ('learn_2d', 'relative_bias', 'relative_2d'):
    _, pre = vit(size=32, posemb=kind)
    model, init = vit(size=64, posemb=kind)
    out = fit.load_pretrained(randomized(pre), init)
    shapes = {k: v.shape for k, v in tree.flatten(out).items()}
    assert shapes == {k: v.shape for k, v in tree.flatten(init).items()}
    assert model.apply({'params': out}, np.ones((1, 64, 64, 3))).shape == (1, 4)
  table = np.arange(7 * 7 + 3, dtype=np.float64).reshape(-1, 1)
  new = resample.resample_relative_table(table, (4, 4), (6, 6))
  assert new.shape == (11 * 11 + 3, 1)
  np.testing.assert_array_equal(new[-3:], table[-3:])
  assert new[0, 0] == 0 and new[120, 0] == 48  # extreme offsets map to extreme offsets.


@pytest.mark.parametrize('align', ['corners', 'half_pixel'])
@pytest.mark.parametrize('old,new', [(4, 7), (7, 4), (14, 24), (24, 14)])
def test_linear_embedding_stays_linear(align, old, new):
  rows, cols = np.meshgrid(np.arange(old), np.arange(old), indexing='ij')
  # Channel c holds a_c * row + b_c * col + k_c: a linear function of position.
  a, b, k = np.array([1.0, -2.0, 0.5]), np.array([3.0, 0.0, -1.0]), np.array([0.0, 5.0, 2.0])
  grid = rows[..., None] * a + cols[..., None] * b + k
  cls = np.full((1, 1, 3), 42.0)
  posemb = np.concatenate([cls, grid.reshape(1, -1, 3)], axis=1)
  out = resample.resample_posemb(posemb, 1, (old, old), (new, new), align)
  np.testing.assert_array_equal(out[0, 0], cls[0, 0])
  out = out[0, 1:].reshape(new, new, 3)
  # Expected: the same plane evaluated at each new sample's source position.
  if align == 'corners':
    src = np.arange(new) * (old - 1) / (new - 1)
    interior = slice(None)
  else:
    src = np.clip((np.arange(new) + 0.5) * old / new - 0.5, 0, old - 1)
    interior = slice(1, -1) if new > old else slice(None)  # borders clamp when upsampling.
  expected = src[:, None, None] * a + src[None, :, None] * b + k
  # float64 (eps64 = 2.2e-16) on values |v| <= ~125: source positions off by ~24*eps64 times
  # slopes <= 3, and ~4 roundings of the interpolation: ~1e-13 worst case. Second differences
  # add 4 of them. 1e-12.
  np.testing.assert_allclose(out[interior, interior], expected[interior, interior], atol=1e-12)
  # Linearity itself: second differences vanish along both axes.
  inner = out[interior, interior]
  np.testing.assert_allclose(np.diff(inner, 2, axis=0), 0, atol=1e-12)
  np.testing.assert_allclose(np.diff(inner, 2, axis=1), 0, atol=1e-12)


def test_corners_alignment_equals_scipy_zoom_of_the_original_and_big_vision():
  grid = np.random.default_rng(0).normal(size=(14, 14, 5))
  ours = resample.resample_grid(grid, (24, 24), 'corners')
  original = scipy.ndimage.zoom(grid, (24 / 14, 24 / 14, 1), order=1)
  # Both float64: source positions (<= 13) computed two ways differ by ~13*eps64 = 3e-15,
  # times neighbour differences <= ~8, plus a few roundings of values <= ~4: ~3e-14. 1e-13.
  np.testing.assert_allclose(ours, original, atol=1e-13)


def test_mismatches_name_keys_and_shapes(tmp_path):
  _, wide = vit(hidden_size=12)
  _, narrow = vit(hidden_size=6, num_heads=2)
  with pytest.raises(
    ValueError,
    match=r'shape mismatch: Transformer/encoder_norm/bias \(12,\) vs '
    r'model \(6,\), .* and 9 more\)',
  ) as e:
    fit.load_pretrained(saved(tmp_path, randomized(wide)), narrow)
  assert '\n' not in str(e.value)
  _, two_layers = vit(num_layers=2)
  with pytest.raises(
    ValueError,
    match=r'missing from the checkpoint: '
    r'Transformer/encoderblock_1/LayerNorm_0/bias \(12,\)',
  ):
    fit.load_pretrained(saved(tmp_path, randomized(wide)), two_layers)
  with pytest.raises(ValueError, match=r'not in the model: Transformer/encoderblock_1/'):
    fit.load_pretrained(saved(tmp_path, randomized(two_layers)), wide)
  _, gap = vit(classifier='gap')
  with pytest.raises(ValueError, match=r'not in the model: cls \(1, 1, 12\)'):
    fit.load_pretrained(saved(tmp_path, randomized(wide)), gap)
  _, with_repr = vit(representation_size=5)
  with pytest.raises(ValueError, match=r'missing from the checkpoint: pre_logits/bias'):
    fit.load_pretrained(saved(tmp_path, randomized(wide)), with_repr)


def test_non_square_grid_needs_explicit_grid():
  _, pre = vit(size=32)
  model = models.VisionTransformer(
    num_classes=4, patch_size=(8, 8), hidden_size=12, num_layers=1, num_heads=3, mlp_dim=16
  )
  init = init_like(model, (1, 32, 48, 3))
  with pytest.raises(ValueError, match=r'24 positions do not form a square grid; pass grid'):
    fit.load_pretrained(randomized(pre), init)
  out = fit.load_pretrained(randomized(pre), init, grid=(4, 6))
  assert out['Transformer']['posembed_input']['pos_embedding'].shape == (1, 25, 12)
