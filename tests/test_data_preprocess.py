"""Per-example preprocessing: decoding of every format, crops, flips, resizes, value range."""

import io

import numpy as np
from PIL import Image
import pytest

from vit_jax.data import preprocess
from vit_jax.data import synthetic
from vit_jax.data import tf_setup


def _encode(array, fmt, **kwargs):
  buf = io.BytesIO()
  image = array if isinstance(array, Image.Image) else Image.fromarray(array)
  image.save(buf, format=fmt, **kwargs)
  return buf.getvalue()


def _seed(i):
  return np.array([i, 12345], np.int64)


@pytest.fixture(scope='module')
def rgb():
  return synthetic.smooth_images(1, 90, 160, seed=4, noise=4)[0]


def test_decode_converts_every_format_to_rgb(rgb):
  gray = rgb[..., 0]
  rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 77, np.uint8)], axis=-1)
  palette = Image.fromarray(rgb).convert('P')
  deep = (rgb[..., 1].astype(np.uint16) * 257 + 200).astype(np.uint16)  # 16-bit gray.
  cases = {
    'png': (_encode(rgb, 'PNG'), rgb),
    'gray png': (_encode(gray, 'PNG'), np.repeat(gray[..., None], 3, -1)),
    'rgba png': (_encode(rgba, 'PNG'), rgb),  # Alpha dropped.
    'palette png': (_encode(palette, 'PNG'), np.asarray(palette.convert('RGB'))),
    '16-bit png': (
      _encode(Image.fromarray(deep), 'PNG'),
      np.repeat((deep >> 8).astype(np.uint8)[..., None], 3, -1),
    ),  # High byte.
    'bmp': (_encode(rgb, 'BMP'), rgb),
    'gif': (_encode(palette, 'GIF'), np.asarray(palette.convert('RGB'))),
  }
  for name, (encoded, expected) in cases.items():
    got = preprocess.decode(encoded).numpy()
    assert got.dtype == np.uint8 and got.shape == (90, 160, 3), name
    np.testing.assert_array_equal(got, expected, err_msg=name)
  gray_jpeg = preprocess.decode(_encode(gray, 'JPEG', quality=95)).numpy()
  assert gray_jpeg.shape == (90, 160, 3) and (gray_jpeg[..., 0] == gray_jpeg[..., 2]).all()


def test_inception_crop_windows_obey_the_ranges(rgb):
  encoded = _encode(rgb, 'PNG')
  areas, aspects = [], []
  for i in range(60):
    h, w, _ = preprocess.decode_inception_crop(encoded, _seed(i)).shape
    areas.append(h * w / (90 * 160))
    aspects.append(w / h)
  areas, aspects = np.array(areas), np.array(aspects)
  full = areas == 1.0  # The fallback after 10 failed attempts.
  assert areas.min() >= 0.045 and areas.max() <= 1.0
  assert aspects[~full].min() >= 0.70 and aspects[~full].max() <= 1.42  # 3/4..4/3 + rounding.
  assert areas.std() > 0.1 and full.mean() < 0.2  # Really random, rarely the fallback.


def test_jpeg_crop_decodes_only_the_window_with_same_result(rgb):
  """decode_and_crop_jpeg (JPEG path) == decode whole then crop (other formats), same seed."""
  jpeg = _encode(rgb, 'JPEG', quality=95, subsampling=0)
  whole = preprocess.decode(jpeg).numpy()
  png_of_decoded = _encode(whole, 'PNG')
  for i in range(10):
    from_jpeg = preprocess.decode_inception_crop(jpeg, _seed(i)).numpy()
    from_png = preprocess.decode_inception_crop(png_of_decoded, _seed(i)).numpy()
    assert from_jpeg.shape == from_png.shape
    # Integer decoding (IDCT, colour conversion) rounds each stage to a level; decoding only
    # the window may take the other rounding at block edges: +-1 per stage. 2 levels.
    np.testing.assert_allclose(from_jpeg.astype(int), from_png.astype(int), atol=2)


def test_train_image_shape_range_and_determinism(rgb):
  encoded = _encode(rgb, 'JPEG', quality=90)
  a = preprocess.train_image(encoded, _seed(1), crop=32).numpy()
  b = preprocess.train_image(encoded, _seed(1), crop=32).numpy()
  c = preprocess.train_image(encoded, _seed(2), crop=32).numpy()
  assert a.shape == (32, 32, 3) and a.dtype == np.float32
  assert -1.0 <= a.min() and a.max() <= 1.0
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - c).mean() > 0.01


def test_plain_resize_and_flip(rgb):
  """area_range=(1, 1): whole image resized; flips mirror it, for about half of the seeds."""
  tf = tf_setup.tf()
  encoded = _encode(rgb, 'PNG')
  resized = preprocess.value_range(tf.image.resize(rgb, [16, 16])).numpy()
  # float32 (eps = 2**-23): a flipped output is resize(flip(x)), whose sample positions
  # (<= 160 px) round differently from the mirrored ones by ~2 ulps = 3e-5 px, times neighbour
  # differences <= 29 levels: <= 9e-4 levels, plus the 4-tap sum and value range (~1e-4
  # levels): <= 8e-6 after / 127.5. 1e-5 (unflipped: the same ops, so within that too).
  flipped = 0
  for i in range(40):
    out = preprocess.train_image(encoded, _seed(i), crop=16, area_range=(1.0, 1.0)).numpy()
    if np.allclose(out, resized, atol=1e-5):
      continue
    np.testing.assert_allclose(out, resized[:, ::-1], atol=1e-5)
    flipped += 1
  assert 8 <= flipped <= 32
  unflipped = preprocess.train_image(
    encoded, _seed(3), crop=16, area_range=(1.0, 1.0), flip=False
  ).numpy()
  np.testing.assert_allclose(unflipped, resized, atol=1e-5)


def test_value_range_maps_0_and_255_to_minus_one_and_one():
  black_white = np.zeros((8, 8, 3), np.uint8)
  black_white[:, 4:] = 255
  out = preprocess.eval_image(_encode(black_white, 'PNG'), crop=8).numpy()
  assert out[:, :4].tolist() == np.full((8, 4, 3), -1.0).tolist()
  assert out[:, 4:].tolist() == np.full((8, 4, 3), 1.0).tolist()


def test_eval_resize_crop_keeps_aspect_and_takes_the_centre():
  # 40 x 120 image whose columns 0..39 | 40..79 | 80..119 are 0 | 128 | 255.
  image = np.zeros((40, 120, 3), np.uint8)
  image[:, 40:80] = 128
  image[:, 80:] = 255
  out = preprocess.eval_image(
    _encode(image, 'PNG'), crop=20, resize_mode='resize_crop', resize_small=20
  ).numpy()
  # Short side 40 -> 20, long side 120 -> 60; the central 20 columns are the middle third.
  assert out.shape == (20, 20, 3)
  # float32: 128 times resize weights summing to 1 +- 2 eps, 2 products, then / 127.5 - 1:
  # ~(2 + 1)*eps*128/127.5 + 2*eps/2 ~ 4 eps = 4.8e-7 worst case. 1e-6.
  np.testing.assert_allclose(out, 128 / 127.5 - 1.0, atol=1e-6)
  squashed = preprocess.eval_image(_encode(image, 'PNG'), crop=20).numpy()
  assert squashed[:, 0].max() == -1.0 and squashed[:, -1].min() == 1.0  # Whole width kept.
  assert preprocess.default_resize_small(224) == 256


def test_tiny_images_through_inception_crop():
  tiny = synthetic.smooth_images(1, 8, 8, seed=1)[0]
  for i in range(20):
    out = preprocess.train_image(_encode(tiny, 'PNG'), _seed(i), crop=32).numpy()
    assert out.shape == (32, 32, 3) and np.isfinite(out).all()


def test_randaugment_in_train_image_is_deterministic(rgb):
  encoded = _encode(rgb, 'PNG')
  outs = [
    preprocess.train_image(encoded, _seed(i), crop=24, randaugment=(2, 10)).numpy()
    for i in (5, 5, 6)
  ]
  np.testing.assert_array_equal(outs[0], outs[1])
  assert outs[0].shape == (24, 24, 3) and -1.0 <= outs[0].min() and outs[0].max() <= 1.0


@pytest.mark.parametrize('area', [(1.0, 1.0), (0.3, 1.0)])
def test_uint8_output_is_the_float_output_rounded(rgb, area):
  """image_dtype='uint8': the same pixels in [0, 255], rounded after resizing (flips included;
  with the same seed the same crop is taken and the same flip decided)."""
  encoded = _encode(rgb, 'JPEG', quality=90)
  mirrored = 0
  for i in range(12):
    f = preprocess.train_image(encoded, _seed(i), crop=24, area_range=area).numpy()
    u = preprocess.train_image(
      encoded, _seed(i), crop=24, area_range=area, image_dtype='uint8'
    ).numpy()
    assert u.dtype == np.uint8 and u.shape == (24, 24, 3)
    err = np.abs((f + 1.0) * 127.5 - u)
    # Rounding (0.5) only, no flip mismatch: in float32, (f + 1) * 127.5 recovers the resized
    # value to ~5 roundings of values <= 255 (5e-5 levels), and the float path resizes the
    # flipped crop (sample positions ~3e-5 px off the mirrored ones, times neighbour differences
    # <= 29: <= 9e-4 levels). 1e-3.
    assert err.max() <= 0.5 + 1e-3, (i, err.max())
    mirrored += not np.allclose(f, f[:, ::-1])
  assert mirrored > 0
  f = preprocess.eval_image(encoded, crop=20, resize_mode='resize_crop').numpy()
  u = preprocess.eval_image(
    encoded, crop=20, resize_mode='resize_crop', image_dtype='uint8'
  ).numpy()
  # No flip here: the same resized values, recovered to ~5e-5 levels (as above). 1e-4.
  assert u.dtype == np.uint8 and np.abs((f + 1.0) * 127.5 - u).max() <= 0.5 + 1e-4
  r = preprocess.train_image(encoded, _seed(5), crop=24, randaugment=(2, 10)).numpy()
  ru = preprocess.train_image(
    encoded, _seed(5), crop=24, randaugment=(2, 10), image_dtype='uint8'
  ).numpy()
  assert ru.dtype == np.uint8 and r.shape == ru.shape
