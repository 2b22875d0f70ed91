"""RandAugment (Cubuk et al., 2020) on uint8 images, stateless given a seed.

Each of `num_layers` layers picks one of the 14 operations of the paper uniformly at random
and applies it at `magnitude` m (0..10 spans the ranges below; larger values extrapolate, as
the AugReg recipes' m=15/20 do). Signed operations get a random sign.

  Identity, AutoContrast, Equalize        no magnitude
  Rotate       +-30 degrees * m/10        Solarize   threshold 256 * (1 - m/10)
  Color, Contrast, Brightness, Sharpness  enhance factor 1 +- 0.9 * m/10 (PIL semantics)
  Posterize    keep 8 - round(4 * m/10) bits (at least 1)
  ShearX/Y     +-0.3 * m/10 (about the centre)
  TranslateX/Y +-0.45 * m/10 of the image size
Pixels that geometric operations move in from outside are grey (128).
"""

import math

from vit_jax.data import tf_setup

OPS = ('Identity', 'AutoContrast', 'Equalize', 'Rotate', 'Solarize', 'Color', 'Posterize',
       'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')
FILL = 128.0


def _to_uint8(image):
  tf = tf_setup.tf()
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _blend(degenerate, image, factor):
  """degenerate + factor * (image - degenerate), as PIL.ImageEnhance; uint8 out."""
  tf = tf_setup.tf()
  image = tf.cast(image, tf.float32)
  return _to_uint8(degenerate + factor * (image - degenerate))


def _grayscale(image):
  """float32 [H, W, 1] luma with PIL's weights."""
  tf = tf_setup.tf()
  weights = tf.constant([0.299, 0.587, 0.114])
  return tf.reduce_sum(tf.cast(image, tf.float32) * weights, axis=-1, keepdims=True)


def auto_contrast(image):
  """Stretches each channel to span 0..255 (channels with one value are unchanged)."""
  tf = tf_setup.tf()
  x = tf.cast(image, tf.float32)
  lo = tf.reduce_min(x, axis=[0, 1])
  hi = tf.reduce_max(x, axis=[0, 1])
  scale = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1.0), 1.0)
  offset = tf.where(hi > lo, lo, 0.0)
  return _to_uint8((x - offset) * scale)


def equalize(image):
  """Histogram equalisation of each channel, with PIL.ImageOps.equalize's lookup table."""
  tf = tf_setup.tf()

  def channel(values):  # uint8 [H, W]
    flat = tf.reshape(tf.cast(values, tf.int32), [-1])
    hist = tf.math.bincount(flat, minlength=256, maxlength=256)
    last_nonzero = tf.gather(hist, tf.reduce_max(tf.where(hist > 0)))
    step = (tf.reduce_sum(hist) - tf.cast(last_nonzero, tf.int32)) // 255
    before = tf.cumsum(hist, exclusive=True)
    lut = tf.minimum((before + step // 2) // tf.maximum(step, 1), 255)
    return tf.where(step > 0, tf.gather(lut, tf.cast(values, tf.int32)),
                    tf.cast(values, tf.int32))

  channels = [channel(image[..., c]) for c in range(3)]
  return tf.cast(tf.stack(channels, axis=-1), tf.uint8)


def solarize(image, threshold):
  """Inverts pixels >= threshold."""
  tf = tf_setup.tf()
  x = tf.cast(image, tf.float32)
  return _to_uint8(tf.where(x < threshold, x, 255.0 - x))


def posterize(image, bits):
  """Keeps the top `bits` (int32 scalar, 1..8) bits of each value."""
  tf = tf_setup.tf()
  mask = tf.bitwise.left_shift(255, 8 - bits) % 256
  return tf.cast(tf.bitwise.bitwise_and(tf.cast(image, tf.int32), mask), tf.uint8)


def color(image, factor):
  return _blend(_grayscale(image), image, factor)


def contrast(image, factor):
  tf = tf_setup.tf()
  mean = tf.floor(tf.reduce_mean(_grayscale(image)) + 0.5)
  return _blend(mean, image, factor)


def brightness(image, factor):
  return _blend(0.0, image, factor)


def sharpness(image, factor):
  """Blends with a 3x3 smoothed copy (PIL's SMOOTH kernel); border pixels stay as they are."""
  tf = tf_setup.tf()
  x = tf.cast(image, tf.float32)
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.nn.depthwise_conv2d(x[None], kernel, [1, 1, 1, 1], 'VALID')[0]
  degenerate = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
  interior = tf.pad(tf.ones_like(smooth), [[1, 1], [1, 1], [0, 0]])
  degenerate = interior * degenerate + (1.0 - interior) * x
  return _blend(degenerate, image, factor)


def affine(image, transform):
  """Samples output (x, y) from input (a0 x + a1 y + a2, b0 x + b1 y + b2); bilinear, grey fill.

  Args:
    image: uint8 [H, W, 3].
    transform: float32 [6] = (a0, a1, a2, b0, b1, b2), pixel-index coordinates (x = column).
  """
  tf = tf_setup.tf()
  transform = tf.concat([tf.cast(transform, tf.float32), [0.0, 0.0]], axis=0)
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=tf.cast(image, tf.float32)[None], transforms=transform[None],
      output_shape=tf.shape(image)[:2], fill_value=FILL, interpolation='BILINEAR',
      fill_mode='CONSTANT')
  return _to_uint8(out[0])


def _centre(image):
  tf = tf_setup.tf()
  hw = tf.cast(tf.shape(image)[:2], tf.float32)
  return (hw[1] - 1.0) / 2.0, (hw[0] - 1.0) / 2.0  # (cx, cy)


def rotate(image, degrees):
  tf = tf_setup.tf()
  cx, cy = _centre(image)
  theta = degrees * math.pi / 180.0
  c, s = tf.cos(theta), tf.sin(theta)
  return affine(image, [c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy])


def shear_x(image, shear):
  _, cy = _centre(image)
  return affine(image, [1.0, shear, -shear * cy, 0.0, 1.0, 0.0])


def shear_y(image, shear):
  cx, _ = _centre(image)
  return affine(image, [1.0, 0.0, 0.0, shear, 1.0, -shear * cx])


def translate_x(image, pixels):
  return affine(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0])


def translate_y(image, pixels):
  return affine(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels])


def apply_op(image, op_index, level, sign):
  """Applies OPS[op_index] at `level` = magnitude / 10 with `sign` +-1 (float32 scalars)."""
  tf = tf_setup.tf()
  image = tf.convert_to_tensor(image, tf.uint8)
  hw = tf.cast(tf.shape(image)[:2], tf.float32)
  factor = tf.maximum(1.0 + sign * 0.9 * level, 0.0)
  branches = [
      lambda: image,
      lambda: auto_contrast(image),
      lambda: equalize(image),
      lambda: rotate(image, sign * 30.0 * level),
      lambda: solarize(image, tf.maximum(256.0 * (1.0 - level), 0.0)),
      lambda: color(image, factor),
      lambda: posterize(image, tf.maximum(8 - tf.cast(tf.round(4.0 * level), tf.int32), 1)),
      lambda: contrast(image, factor),
      lambda: brightness(image, factor),
      lambda: sharpness(image, factor),
      lambda: shear_x(image, sign * 0.3 * level),
      lambda: shear_y(image, sign * 0.3 * level),
      lambda: translate_x(image, sign * 0.45 * level * hw[1]),
      lambda: translate_y(image, sign * 0.45 * level * hw[0]),
  ]
  assert len(branches) == len(OPS)
  out = tf.switch_case(op_index, branches)
  out.set_shape(image.shape)
  return out


def randaugment(image, seed, num_layers: int, magnitude: float):
  """RandAugment(num_layers, magnitude) of uint8 [H, W, 3] with int [2] seed; uint8 out."""
  tf = tf_setup.tf()
  image = tf.convert_to_tensor(image, tf.uint8)
  level = tf.constant(magnitude / 10.0, tf.float32)
  seeds = tf.random.experimental.stateless_split(seed, 2 * max(num_layers, 1))
  for layer in range(num_layers):
    op_index = tf.random.stateless_uniform([], seeds[2 * layer], 0, len(OPS), tf.int32)
    coin = tf.random.stateless_uniform([], seeds[2 * layer + 1])
    image = apply_op(image, op_index, level, tf.where(coin < 0.5, -1.0, 1.0))
  return image
