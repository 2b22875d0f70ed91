"""RandAugment as the TF/TPU original (big_vision's `randaug`): every operation's numbers on
constructed images (hand-computed, numpy or PIL references), the magnitude -> argument map with
the original's quirks, and the choice of operations."""

import collections

import numpy as np
from PIL import Image
from PIL import ImageOps
import pytest

from vit_jax.data import randaugment as ra
from vit_jax.data import synthetic


@pytest.fixture(scope='module')
def image():
  # Narrow value range, so that auto-contrast and equalize have work to do.
  x = synthetic.smooth_images(1, 33, 47, seed=9, noise=6)[0].astype(np.float32)
  return (60 + x * 0.5).astype(np.uint8)


def _const(h, w, rgb):
  return np.tile(np.asarray(rgb, np.uint8), (h, w, 1))


def test_arguments_follow_the_original_magnitude_map():
  a = ra.arguments(10)
  assert (a['Rotate'], a['Posterize'], a['Solarize'], a['SolarizeAdd'], a['Cutout']) == (
    30.0,
    4,
    0,
    110,
    40,
  )  # Solarize: int(256) wraps to 0 as a uint8 threshold.
  assert a['ShearX'] == a['ShearY'] == 0.3 and a['TranslateX'] == a['TranslateY'] == 100.0
  # Python floats: level * 1.8 + 0.1, <= 3 roundings of eps64/2 (eps64 = 2.2e-16). 1e-15.
  assert all(
    a[k] == pytest.approx(1.9, rel=1e-15) for k in ('Color', 'Contrast', 'Brightness', 'Sharpness')
  )
  a = ra.arguments(5)
  assert (a['Posterize'], a['Solarize'], a['SolarizeAdd'], a['Cutout'], a['TranslateX']) == (
    2,
    128,
    55,
    20,
    50.0,
  )
  assert a['Color'] == pytest.approx(1.0, rel=1e-15)
  a = ra.arguments(0)  # Not the identity: enhance 0.1, 0 bits, threshold 0.
  assert (a['Posterize'], a['Solarize'], a['SolarizeAdd'], a['Cutout'], a['Rotate']) == (
    0,
    0,
    0,
    0,
    0.0,
  )
  assert a['Brightness'] == pytest.approx(0.1, rel=1e-15)
  a = ra.arguments(15)  # AugReg's 'medium' magnitudes extrapolate.
  assert (a['Posterize'], a['Solarize'], a['TranslateX']) == (6, 128, 150.0)
  assert a['Contrast'] == pytest.approx(2.8, rel=1e-15)
  assert (ra.arguments(20)['Posterize'], ra.arguments(20)['Solarize']) == (8, 0)


def test_invert_solarize_solarize_add():
  x = np.array([[[0, 100, 127], [128, 200, 255]]], np.uint8)
  np.testing.assert_array_equal(ra.invert(x).numpy(), 255 - x)
  np.testing.assert_array_equal(ra.solarize(x, 128).numpy(), [[[0, 100, 127], [127, 55, 0]]])
  np.testing.assert_array_equal(ra.solarize(x, 256).numpy(), x)
  np.testing.assert_array_equal(ra.solarize(x, 0).numpy(), 255 - x)
  np.testing.assert_array_equal(
    ra.solarize_add(x, 110).numpy(), [[[110, 210, 237], [128, 200, 255]]]
  )
  np.testing.assert_array_equal(
    ra.solarize_add(x, 200).numpy(), [[[200, 255, 255], [128, 200, 255]]]
  )


def test_solarize_and_posterize_match_pil(image):
  for threshold in (0, 100, 128, 255):
    np.testing.assert_array_equal(
      ra.solarize(image, threshold).numpy(),
      np.asarray(ImageOps.solarize(Image.fromarray(image), threshold)),
    )
  for bits in range(1, 9):
    np.testing.assert_array_equal(
      ra.posterize(image, bits).numpy(),
      np.asarray(ImageOps.posterize(Image.fromarray(image), bits)),
    )


def test_posterize_shift_is_clamped_like_tensorflow():
  x = np.array([[[183, 127, 255]]], np.uint8)  # 183 = 0b10110111.
  np.testing.assert_array_equal(ra.posterize(x, 4).numpy(), [[[176, 112, 240]]])
  np.testing.assert_array_equal(ra.posterize(x, 0).numpy(), [[[128, 0, 128]]])  # shift 8 -> 7
  np.testing.assert_array_equal(ra.posterize(x, 8).numpy(), x)
  np.testing.assert_array_equal(ra.posterize(x, 10).numpy(), [[[128, 0, 128]]])  # -2 -> 7


def test_enhance_ops_blend_and_truncate():
  # Exact values, not a tolerance: every blend below is exact in float32 (integers times 0.5
  # or 1) or lands >= 0.08 from a truncation boundary (0.3 * 200: fl(0.3) > 0.3, so >= 60),
  # while float32 errors at <= 255 are < 1e-4.
  # Colour: TF's luma of (10, 200, 30) is 124; 124 + f * (v - 124), truncated and clipped.
  px = _const(2, 3, [10, 200, 30])
  np.testing.assert_array_equal(ra.color(px, 0.3).numpy()[0, 0], [89, 146, 95])
  np.testing.assert_array_equal(ra.color(px, 0.5).numpy()[0, 0], [67, 162, 77])
  np.testing.assert_array_equal(ra.color(px, 1.9).numpy()[0, 0], [0, 255, 0])
  np.testing.assert_array_equal(ra.color(px, 1.0).numpy(), px)
  grey = _const(4, 4, [77, 77, 77])
  np.testing.assert_array_equal(ra.color(grey, 1.9).numpy(), grey)
  # Brightness: f * v.
  px = _const(2, 2, [101, 200, 3])
  np.testing.assert_array_equal(ra.brightness(px, 0.3).numpy()[0, 0], [30, 60, 0])
  np.testing.assert_array_equal(ra.brightness(px, 1.9).numpy()[0, 0], [191, 255, 5])
  # Contrast towards min(H*W/256, 255), not towards the mean luma (205 here).
  px = _const(32, 40, [205, 205, 205])  # 1280 / 256 = 5.
  np.testing.assert_array_equal(ra.contrast(px, 0.5).numpy()[0, 0], [105, 105, 105])
  np.testing.assert_array_equal(ra.contrast(px, 1.9).numpy()[0, 0], [255, 255, 255])
  np.testing.assert_array_equal(
    ra.contrast(_const(16, 16, [101] * 3), 0.5).numpy()[0, 0], [51, 51, 51]
  )  # 256 / 256 = 1.
  np.testing.assert_array_equal(
    ra.contrast(_const(256, 512, [100] * 3), 0.5).numpy()[0, 0], [177, 177, 177]
  )  # 512 -> 255: 255 + 0.5 * (100 - 255).


def test_sharpness_smooths_the_interior_only():
  x = np.zeros((5, 5, 3), np.uint8)
  x[2, 2] = 131
  smooth = ra.sharpness(x, 0.0).numpy()[..., 0]
  expected = np.zeros((5, 5), np.uint8)
  expected[1:4, 1:4] = 10  # 131 / 13 = 10.08, truncated.
  expected[2, 2] = 50  # 5 * 131 / 13 = 50.4.
  np.testing.assert_array_equal(smooth, expected)
  sharp = ra.sharpness(x, 1.9).numpy()[..., 0]
  assert sharp[2, 2] == 203  # 50 + 1.9 * (131 - 50) = 203.9, truncated.
  assert (sharp[1:4, 1:4].sum() == 203) and (sharp[0] == 0).all()  # 10 - 1.9 * 10 < 0.


def test_auto_contrast_truncates(image):
  x = np.zeros((2, 2, 3), np.uint8)
  x[..., 0] = [[50, 100], [75, 150]]
  x[..., 1] = 9  # one value: unchanged.
  x[..., 2] = [[0, 0], [0, 255]]  # already full range.
  out = ra.auto_contrast(x).numpy()
  # PIL rounds: 128, 64. x * 2.55 + (-50 * 2.55) in float32 gives exactly 0, 127.5 (or just
  # below), 63.75 (or just below) and 255.0, fused multiply-add or not: exact after truncation.
  np.testing.assert_array_equal(out[..., 0], [[0, 127], [63, 255]])
  np.testing.assert_array_equal(out[..., 1:], x[..., 1:])
  pil = np.asarray(ImageOps.autocontrast(Image.fromarray(image))).astype(int)
  ours = ra.auto_contrast(image).numpy().astype(int)
  # Truncation against PIL's rounding: <= 1 level (float32 errors < 1e-4 cannot add one).
  assert np.abs(ours - pil).max() <= 1 and ours.min() == 0 and ours.max() == 255


def test_equalize_matches_pil_exactly(image):
  np.testing.assert_array_equal(
    ra.equalize(image).numpy(), np.asarray(ImageOps.equalize(Image.fromarray(image)))
  )


def test_rotate_is_nearest_about_the_centre_with_grey_fill():
  square = synthetic.smooth_images(1, 21, 21, seed=2, noise=20)[0]
  np.testing.assert_array_equal(ra.rotate(square, 90.0).numpy(), np.rot90(square, k=1))
  np.testing.assert_array_equal(ra.rotate(square, -90.0).numpy(), np.rot90(square, k=-1))
  np.testing.assert_array_equal(ra.rotate(square, 0.0).numpy(), square)
  out = ra.rotate(square, 45.0).numpy()
  assert (out[0, 0] == 128).all() and (out[-1, -1] == 128).all()
  np.testing.assert_array_equal(out[10, 10], square[10, 10])  # The centre stays.
  assert np.isin(out[3:18, 3:18], square).all()  # Nearest: no new values inside.


def test_shear_is_about_the_top_left_corner():
  x = synthetic.smooth_images(1, 12, 16, seed=3, noise=20)[0]
  out = ra.shear_x(x, 1.0).numpy()  # Row y samples column x + y.
  for y in range(12):
    np.testing.assert_array_equal(out[y, : 16 - y], x[y, y:])
    assert (out[y, 16 - y :] == 128).all()
  out = ra.shear_y(x, -0.5).numpy()  # Column x samples row y - x / 2 (nearest).
  np.testing.assert_array_equal(out[:, 0], x[:, 0])
  np.testing.assert_array_equal(out[2:, 4], x[:-2, 4])
  assert (out[:2, 4] == 128).all()


def test_translate_is_in_pixels_with_grey_fill(image):
  out = ra.translate_x(image, 5.0).numpy()  # Output x samples input x + 5.
  np.testing.assert_array_equal(out[:, :-5], image[:, 5:])
  assert (out[:, -5:] == 128).all()
  out = ra.translate_y(image, -3.0).numpy()
  np.testing.assert_array_equal(out[3:], image[:-3])
  assert (out[:3] == 128).all()
  assert (ra.translate_x(image, 100.0).numpy() == 128).all()  # M=10 on a 47px-wide image.


def test_cutout_greys_a_clipped_square():
  x = synthetic.smooth_images(1, 10, 12, seed=4)[0]
  out = ra.cutout(x, 3, np.array([2, 10], np.int32)).numpy()
  inside = np.zeros((10, 12), bool)
  inside[0:5, 7:12] = True  # rows [2-3, 2+3) clipped to [0, 5), columns [7, 13) to [7, 12).
  assert (out[inside] == 128).all()
  np.testing.assert_array_equal(out[~inside], x[~inside])
  np.testing.assert_array_equal(ra.cutout(x, 0, np.array([5, 5], np.int32)).numpy(), x)


def test_apply_op_dispatches_with_the_mapped_arguments(image):
  a = ra.arguments(7)
  centre = np.array([10, 20], np.int32)
  expected = {
    'AutoContrast': ra.auto_contrast(image),
    'Equalize': ra.equalize(image),
    'Invert': ra.invert(image),
    'Rotate': ra.rotate(image, -a['Rotate']),
    'Posterize': ra.posterize(image, 2),
    'Solarize': ra.solarize(image, 179),
    'Color': ra.color(image, 1.36),
    'Contrast': ra.contrast(image, 1.36),
    'Brightness': ra.brightness(image, 1.36),
    'Sharpness': ra.sharpness(image, 1.36),
    'ShearX': ra.shear_x(image, -0.21),
    'ShearY': ra.shear_y(image, -0.21),
    'TranslateX': ra.translate_x(image, -70.0),
    'TranslateY': ra.translate_y(image, -70.0),
    'Cutout': ra.cutout(image, 28, centre),
    'SolarizeAdd': ra.solarize_add(image, 77),
  }
  assert list(expected) == list(ra.OPS)
  for i, name in enumerate(ra.OPS):
    got = ra.apply_op(image, np.int32(i), 7, np.float32(-1.0), centre).numpy()
    np.testing.assert_array_equal(got, expected[name].numpy(), err_msg=name)


def _which_op(out, image, magnitude):
  """Names of the operations (with sign) that turn `image` into `out` at `magnitude`."""
  a = ra.arguments(magnitude)
  fixed = {
    'AutoContrast': ra.auto_contrast(image),
    'Equalize': ra.equalize(image),
    'Invert': ra.invert(image),
    'Posterize': ra.posterize(image, a['Posterize']),
    'Solarize': ra.solarize(image, a['Solarize']),
    'SolarizeAdd': ra.solarize_add(image, a['SolarizeAdd']),
  }
  for name in ('Color', 'Contrast', 'Brightness', 'Sharpness'):
    fixed[name] = getattr(ra, name.lower())(image, a[name])
  for sign in (1, -1):
    fixed[f'Rotate{sign:+d}'] = ra.rotate(image, sign * a['Rotate'])
    for name, fn in (
      ('ShearX', ra.shear_x),
      ('ShearY', ra.shear_y),
      ('TranslateX', ra.translate_x),
      ('TranslateY', ra.translate_y),
    ):
      fixed[f'{name}{sign:+d}'] = fn(image, sign * a[name])
  names = [k for k, v in fixed.items() if np.array_equal(out, v.numpy())]
  changed = np.any(out != image, axis=-1)
  if changed.any() and (out[changed] == 128).all():
    rows, cols = np.nonzero(changed)
    box = changed[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    if box.all() and max(box.shape) <= 2 * a['Cutout']:
      names.append('Cutout')
  return names


def test_each_layer_picks_one_of_the_16_ops_uniformly():
  image = synthetic.smooth_images(1, 120, 120, seed=5, noise=8)[0]
  counts = collections.Counter()
  draws = 240
  for i in range(draws):
    out = ra.randaugment(image, np.array([i, 7], np.int64), 1, 9).numpy()
    names = _which_op(out, image, 9)
    assert len(names) == 1, (i, names)
    counts[names[0].rstrip('+-1')] += 1
  assert set(counts) == set(ra.OPS), counts
  assert max(counts.values()) <= 3 * draws / 16, counts  # expected 15 each.


def test_randaugment_is_a_function_of_the_seed(image):
  seed = np.array([1, 2], np.int64)
  a = ra.randaugment(image, seed, 2, 10).numpy()
  np.testing.assert_array_equal(a, ra.randaugment(image, seed, 2, 10).numpy())
  assert a.shape == image.shape and a.dtype == np.uint8
  np.testing.assert_array_equal(ra.randaugment(image, seed, 0, 10).numpy(), image)
  # No identity among the ops: two layers at M=10 change the image (Cutout's square may miss
  # nothing; ShearX/Y, Rotate and Translate always bring grey in).
  changed = [
    not np.array_equal(ra.randaugment(image, np.array([s, 2]), 2, 10).numpy(), image)
    for s in range(20)
  ]
  assert sum(changed) >= 19
