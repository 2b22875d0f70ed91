"""RandAugment operations against independent references (PIL, numpy)."""

import numpy as np
import pytest
from PIL import Image
from PIL import ImageEnhance
from PIL import ImageOps

from vit_jax.data import randaugment as ra
from vit_jax.data import synthetic


@pytest.fixture(scope='module')
def image():
  # Narrow value range, so that auto-contrast and equalize have work to do.
  x = synthetic.smooth_images(1, 33, 47, seed=9, noise=6)[0].astype(np.float32)
  return (60 + x * 0.5).astype(np.uint8)


def _pil(fn, image, *args):
  return np.asarray(fn(Image.fromarray(image), *args))


def test_pixel_ops_match_pil_exactly(image):
  np.testing.assert_array_equal(ra.equalize(image).numpy(), _pil(ImageOps.equalize, image))
  for bits in (1, 4, 7, 8):
    np.testing.assert_array_equal(ra.posterize(image, bits).numpy(),
                                  _pil(ImageOps.posterize, image, bits))
  for threshold in (0, 100, 128, 256):
    np.testing.assert_array_equal(ra.solarize(image, float(threshold)).numpy(),
                                  _pil(ImageOps.solarize, image, threshold))


def test_auto_contrast_matches_pil_within_rounding(image):
  ours = ra.auto_contrast(image).numpy().astype(int)
  np.testing.assert_allclose(ours, _pil(ImageOps.autocontrast, image).astype(int), atol=1)
  assert ours.min() == 0 and ours.max() == 255
  flat = np.full((5, 5, 3), 77, np.uint8)
  np.testing.assert_array_equal(ra.auto_contrast(flat).numpy(), flat)


@pytest.mark.parametrize('name', ['color', 'contrast', 'brightness', 'sharpness'])
@pytest.mark.parametrize('factor', [0.1, 0.55, 1.0, 1.9])
def test_enhance_ops_match_pil_within_rounding(image, name, factor):
  enhancer = {'color': ImageEnhance.Color, 'contrast': ImageEnhance.Contrast,
              'brightness': ImageEnhance.Brightness, 'sharpness': ImageEnhance.Sharpness}[name]
  expected = np.asarray(enhancer(Image.fromarray(image)).enhance(factor)).astype(int)
  ours = getattr(ra, name)(image, factor).numpy().astype(int)
  assert np.abs(ours - expected).max() <= 1, name


def test_translate_moves_pixels_and_fills_grey(image):
  out = ra.translate_x(image, 5.0).numpy()  # Output x samples input x + 5.
  np.testing.assert_array_equal(out[:, :-5], image[:, 5:])
  assert (out[:, -5:] == 128).all()
  out = ra.translate_y(image, -3.0).numpy()
  np.testing.assert_array_equal(out[3:], image[:-3])
  assert (out[:3] == 128).all()


def test_rotate_and_shear_geometry():
  square = synthetic.smooth_images(1, 21, 21, seed=2)[0]
  np.testing.assert_allclose(ra.rotate(square, 90.0).numpy().astype(int),
                             np.rot90(square, k=1).astype(int), atol=1)
  np.testing.assert_array_equal(ra.rotate(square, 0.0).numpy(), square)
  np.testing.assert_array_equal(ra.shear_x(square, 0.0).numpy(), square)
  sheared = ra.shear_x(square, 1.0).numpy()  # Row y samples x + (y - 10).
  np.testing.assert_array_equal(sheared[10], square[10])  # The centre row stays.
  np.testing.assert_array_equal(sheared[12, :-2], square[12, 2:])
  np.testing.assert_array_equal(ra.shear_y(square, 1.0).numpy()[:, 10], square[:, 10])


def test_magnitude_zero_is_identity_up_to_the_unparameterised_ops(image):
  allowed = [image, ra.auto_contrast(image).numpy(), ra.equalize(image).numpy()]
  kinds = set()
  for i in range(100):
    out = ra.randaugment(image, np.array([i, 3], np.int64), 1, 0.0).numpy()
    matches = [k for k, ref in enumerate(allowed) if np.array_equal(out, ref)]
    assert matches, i
    kinds.add(matches[0])
  assert kinds == {0, 1, 2}


def test_randaugment_is_a_function_of_the_seed(image):
  seed = np.array([1, 2], np.int64)
  a = ra.randaugment(image, seed, 2, 10.0).numpy()
  np.testing.assert_array_equal(a, ra.randaugment(image, seed, 2, 10.0).numpy())
  assert a.shape == image.shape and a.dtype == np.uint8
  changed = [not np.array_equal(ra.randaugment(image, np.array([s, 2]), 2, 10.0).numpy(), image)
             for s in range(30)]
  assert sum(changed) >= 25  # Two layers at full magnitude: identity twice is rare (1/196).
  np.testing.assert_array_equal(ra.randaugment(image, seed, 0, 10.0).numpy(), image)
