"""RandAugment (Cubuk et al., 2020) as its authors' TF/TPU `autoaugment.py` does it, which is
what big_vision's `randaug(N, M)` runs: uint8 images in and out, stateless given a seed.

Each of `num_layers` layers picks one of the 16 operations below uniformly at random and
always applies it. The magnitude M (0..30; 10 is the original's maximum "level", larger values
extrapolate with the same formulas, as the AugReg recipes' M=15/20 do) sets every argument,
with l = M / 10 and the original's integer truncations; a random sign where marked +-:

  AutoContrast, Equalize, Invert          no argument
  Rotate       +-30 l degrees about the image centre          (M=10: +-30)
  Posterize    keep int(4 l) bits                             (M=10: 4 bits)
  Solarize     invert pixels >= int(256 l) mod 256            (M=10: threshold 0, all pixels)
  Color, Contrast, Brightness, Sharpness
               enhance factor 1.8 l + 0.1, no sign            (M=10: 1.9)
  ShearX/Y     +-0.3 l, about the top-left corner             (M=10: +-0.3)
  TranslateX/Y +-100 l pixels, whatever the image size        (M=10: +-100 px)
  Cutout       a grey square of side 2 int(40 l) centred at a uniform pixel, clipped by the
               image border                                   (M=10: 80 px)
  SolarizeAdd  add int(110 l) to pixels < 128, clipped at 255 (M=10: +110)

Geometric operations sample the nearest pixel; pixels they bring in from outside, and Cutout's
square, are grey (128). Every float -> uint8 conversion truncates (clip, then cast), as the
original's.

Quirks of the original, kept because they are the augmentation the published recipes were
trained with:
  - Solarize: the threshold is compared with uint8 pixels, so TensorFlow wraps it modulo 256
    (big_vision issue #110): M=10 gives 256 -> 0, i.e. every pixel inverted; M=5 gives 128.
  - Posterize keeps *more* bits as M grows; TensorFlow clamps the shift 8 - bits (as uint8,
    so also a negative one) to 0..7: M < 2.5 keeps 1 bit, M >= 20 keeps all 8.
  - Contrast blends towards a constant grey of min(H * W / 256, 255) (the original's "mean"
    is the sum of a 256-bin histogram / 256, i.e. the pixel count / 256), not the mean luma.
  - M=0 is not the identity: enhance factors are 0.1, Posterize keeps 1 bit, Solarize
    inverts everything.
The random draws (operation, sign, Cutout centre) come from `seed` instead of TensorFlow's
stateful generator: the same distribution, other samples.
"""

import math

from vit_jax.data import tf_setup

OPS = (
  'AutoContrast',
  'Equalize',
  'Invert',
  'Rotate',
  'Posterize',
  'Solarize',
  'Color',
  'Contrast',
  'Brightness',
  'Sharpness',
  'ShearX',
  'ShearY',
  'TranslateX',
  'TranslateY',
  'Cutout',
  'SolarizeAdd',
)
FILL = 128
MAX_LEVEL = 10.0
MAX_MAGNITUDE = 30  # the largest magnitude the input pipeline takes (3x the original's).
TRANSLATE_PIXELS = 100.0  # The original's RandAugment `translate_const`.
CUTOUT_PIXELS = 40  # The original's RandAugment `cutout_const` (half the square's side).


def arguments(magnitude: float) -> dict[str, float]:
  """Each parameterised operation's argument at `magnitude`, before any random sign."""
  level = float(magnitude) / MAX_LEVEL
  enhance = level * 1.8 + 0.1
  return {
    'Rotate': level * 30.0,
    'Posterize': int(level * 4),
    'Solarize': int(level * 256) % 256,
    'Color': enhance,
    'Contrast': enhance,
    'Brightness': enhance,
    'Sharpness': enhance,
    'ShearX': level * 0.3,
    'ShearY': level * 0.3,
    'TranslateX': level * TRANSLATE_PIXELS,
    'TranslateY': level * TRANSLATE_PIXELS,
    'Cutout': int(level * CUTOUT_PIXELS),
    'SolarizeAdd': int(level * 110),
  }


def _to_uint8(x):
  """float32 -> uint8, clipped to [0, 255] then truncated."""
  tf = tf_setup.tf()
  return tf.cast(tf.clip_by_value(x, 0.0, 255.0), tf.uint8)


def blend(degenerate, image, factor):
  """degenerate + factor * (image - degenerate) (PIL.ImageEnhance's rule), truncated to uint8."""
  tf = tf_setup.tf()
  degenerate = tf.cast(degenerate, tf.float32)
  return _to_uint8(degenerate + factor * (tf.cast(image, tf.float32) - degenerate))


def auto_contrast(image):
  """Stretches each channel's [min, max] to [0, 255] (channels with one value unchanged)."""
  tf = tf_setup.tf()
  x = tf.cast(image, tf.float32)
  lo = tf.reduce_min(x, axis=[0, 1])
  hi = tf.reduce_max(x, axis=[0, 1])
  scale = 255.0 / tf.where(hi > lo, hi - lo, 1.0)
  stretched = _to_uint8(x * scale + (-lo * scale))
  return tf.where(hi > lo, stretched, image)


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
    return tf.where(step > 0, tf.gather(lut, tf.cast(values, tf.int32)), tf.cast(values, tf.int32))

  channels = [channel(image[..., c]) for c in range(3)]
  return tf.cast(tf.stack(channels, axis=-1), tf.uint8)


def invert(image):
  tf = tf_setup.tf()
  return 255 - tf.convert_to_tensor(image, tf.uint8)


def solarize(image, threshold):
  """Inverts pixels >= threshold (an integer; 256 inverts none, 0 all)."""
  tf = tf_setup.tf()
  x = tf.cast(image, tf.int32)
  return tf.cast(tf.where(x < threshold, x, 255 - x), tf.uint8)


def solarize_add(image, addition, threshold: int = 128):
  """Adds `addition` to pixels < threshold, clipped to [0, 255]; the others stay."""
  tf = tf_setup.tf()
  x = tf.cast(image, tf.int32)
  return tf.cast(tf.where(x < threshold, tf.clip_by_value(x + addition, 0, 255), x), tf.uint8)


def posterize(image, bits: int):
  """Zeroes the low 8 - bits bits, with TensorFlow's uint8 shift clamped to 0..7."""
  tf = tf_setup.tf()
  shift = tf.constant(min((8 - bits) % 256, 7), tf.uint8)
  image = tf.convert_to_tensor(image, tf.uint8)
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def color(image, factor):
  tf = tf_setup.tf()
  return blend(tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image)), image, factor)


def contrast(image, factor):
  """Blends with a constant min(H*W/256, 255) (the original's "mean"; see the docstring)."""
  tf = tf_setup.tf()
  hw = tf.shape(image)[:2]
  grey = tf.cast(_to_uint8(tf.cast(hw[0] * hw[1], tf.float32) / 256.0), tf.float32)
  return blend(grey, image, factor)


def brightness(image, factor):
  return blend(0.0, image, factor)


def sharpness(image, factor):
  """Blends with a copy smoothed by PIL's SMOOTH kernel (truncated to uint8); the border
  pixels of that copy are the image's own."""
  tf = tf_setup.tf()
  x = tf.cast(image, tf.float32)
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.nn.depthwise_conv2d(x[None], kernel, [1, 1, 1, 1], 'VALID')[0]
  smooth = tf.pad(tf.cast(_to_uint8(smooth), tf.float32), [[1, 1], [1, 1], [0, 0]])
  interior = tf.pad(tf.ones(tf.shape(image) - [2, 2, 0], tf.bool), [[1, 1], [1, 1], [0, 0]])
  return blend(tf.where(interior, smooth, x), image, factor)


def affine(image, transform):
  """Output pixel (x, y) = input at (a0 x + a1 y + a2, b0 x + b1 y + b2), nearest, grey fill.

  Args:
    image: uint8 [H, W, 3].
    transform: float32 [6] = (a0, a1, a2, b0, b1, b2), pixel-index coordinates (x = column).
  """
  tf = tf_setup.tf()
  transform = tf.concat([tf.cast(tf.stack(transform), tf.float32), [0.0, 0.0]], axis=0)
  return tf.raw_ops.ImageProjectiveTransformV3(
    images=tf.convert_to_tensor(image, tf.uint8)[None],
    transforms=transform[None],
    output_shape=tf.shape(image)[:2],
    fill_value=float(FILL),
    interpolation='NEAREST',
    fill_mode='CONSTANT',
  )[0]


def rotate(image, degrees):
  """Rotates by `degrees` about the centre ((W-1)/2, (H-1)/2); positive = counter-clockwise."""
  tf = tf_setup.tf()
  hw = tf.cast(tf.shape(image)[:2], tf.float32)
  h, w = hw[0] - 1.0, hw[1] - 1.0
  theta = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  c, s = tf.cos(theta), tf.sin(theta)
  return affine(image, [c, -s, (w - (c * w - s * h)) / 2.0, s, c, (h - (s * w + c * h)) / 2.0])


def shear_x(image, shear):
  """Row y moves left by shear * y (output x samples input x + shear * y)."""
  return affine(image, [1.0, shear, 0.0, 0.0, 1.0, 0.0])


def shear_y(image, shear):
  """Column x moves up by shear * x (output y samples input y + shear * x)."""
  return affine(image, [1.0, 0.0, 0.0, shear, 1.0, 0.0])


def translate_x(image, pixels):
  """Output x samples input x + pixels (the content moves left for pixels > 0)."""
  return affine(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0])


def translate_y(image, pixels):
  return affine(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels])


def cutout(image, half_size, centre):
  """Greys rows [cy - half_size, cy + half_size) x the same columns around cx, clipped.

  Args:
    image: uint8 [H, W, 3].
    half_size: int, half the square's side (0: nothing changes).
    centre: int32 [2] = (cy, cx).
  """
  tf = tf_setup.tf()
  rows = tf.range(tf.shape(image)[0])[:, None, None]
  cols = tf.range(tf.shape(image)[1])[None, :, None]
  inside = (
    (rows >= centre[0] - half_size)
    & (rows < centre[0] + half_size)
    & (cols >= centre[1] - half_size)
    & (cols < centre[1] + half_size)
  )
  return tf.where(inside, tf.constant(FILL, tf.uint8), image)


def apply_op(image, op_index, magnitude: float, sign, cutout_centre):
  """Applies OPS[op_index] (int32 scalar) at `magnitude` with `sign` (+-1.0, float32 scalar)
  for the signed operations and `cutout_centre` (int32 [2], (cy, cx)) for Cutout."""
  tf = tf_setup.tf()
  image = tf.convert_to_tensor(image, tf.uint8)
  arg = arguments(magnitude)
  branches = {
    'AutoContrast': lambda: auto_contrast(image),
    'Equalize': lambda: equalize(image),
    'Invert': lambda: invert(image),
    'Rotate': lambda: rotate(image, sign * arg['Rotate']),
    'Posterize': lambda: posterize(image, arg['Posterize']),
    'Solarize': lambda: solarize(image, arg['Solarize']),
    'Color': lambda: color(image, arg['Color']),
    'Contrast': lambda: contrast(image, arg['Contrast']),
    'Brightness': lambda: brightness(image, arg['Brightness']),
    'Sharpness': lambda: sharpness(image, arg['Sharpness']),
    'ShearX': lambda: shear_x(image, sign * arg['ShearX']),
    'ShearY': lambda: shear_y(image, sign * arg['ShearY']),
    'TranslateX': lambda: translate_x(image, sign * arg['TranslateX']),
    'TranslateY': lambda: translate_y(image, sign * arg['TranslateY']),
    'Cutout': lambda: cutout(image, arg['Cutout'], cutout_centre),
    'SolarizeAdd': lambda: solarize_add(image, arg['SolarizeAdd']),
  }
  out = tf.switch_case(tf.convert_to_tensor(op_index, tf.int32), [branches[n] for n in OPS])
  out.set_shape(image.shape)
  return out


def randaugment(image, seed, num_layers: int, magnitude: float):
  """RandAugment(num_layers, magnitude) of uint8 [H, W, 3] with int [2] seed; uint8 out."""
  tf = tf_setup.tf()
  image = tf.convert_to_tensor(image, tf.uint8)
  hw = tf.shape(image)[:2]
  seeds = tf.random.experimental.stateless_split(seed, 4 * max(num_layers, 1))
  for layer in range(num_layers):
    op_seed, sign_seed, y_seed, x_seed = tf.unstack(seeds[4 * layer : 4 * layer + 4])
    op_index = tf.random.stateless_uniform([], op_seed, 0, len(OPS), tf.int32)
    sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
    centre = tf.stack(
      [
        tf.random.stateless_uniform([], y_seed, 0, hw[0], tf.int32),
        tf.random.stateless_uniform([], x_seed, 0, hw[1], tf.int32),
      ]
    )
    image = apply_op(image, op_index, magnitude, sign, centre)
  return image
