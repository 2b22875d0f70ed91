"""Per-example image preprocessing in TensorFlow: decode, crops, flip, resize, value range.

Every function works on one example inside a tf.data map. Randomness comes only from the
`seed` argument (stateless ops), so the output is a function of (image, seed): reproducible,
and independent of tf.data's thread scheduling.
"""

from collections.abc import Sequence

from vit_jax.data import randaugment as randaugment_lib
from vit_jax.data import tf_setup

RESIZE_MODES = ('resize', 'resize_crop')
# Output pixels: float32 in [-1, 1] (what the models take), or uint8 in [0, 255] (a quarter of
# the bytes to batch and to copy to the devices; the train step maps them to [-1, 1]).
IMAGE_DTYPES = ('float32', 'uint8')


def placeholder_png():
  """Encoded 1x1 black PNG, standing in for the image of elements that carry none."""
  tf = tf_setup.tf()
  return tf.io.encode_png(tf.zeros([1, 1, 3], tf.uint8))


def decode(data):
  """Decodes JPEG/PNG/GIF/BMP bytes to uint8 [H, W, 3].

  Grayscale is repeated to RGB, the alpha channel of RGBA is dropped, palette PNGs are
  expanded, 16-bit PNGs keep their high byte, animated GIFs give their first frame.
  """
  tf = tf_setup.tf()
  image = tf.io.decode_image(data, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def _crop_window(image_hw, seed, area_range, aspect_range):
  """Samples an inception-style crop window [y, x, h, w] (int32) inside an image of image_hw."""
  tf = tf_setup.tf()
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
    image_size=tf.concat([image_hw, [3]], axis=0),
    bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
    seed=seed,
    min_object_covered=0.0,
    aspect_ratio_range=tuple(aspect_range),
    area_range=tuple(area_range),
    max_attempts=10,  # Then falls back to the whole image.
    use_image_if_no_bounding_boxes=True,
  )
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def decode_inception_crop(data, seed, area_range=(0.05, 1.0), aspect_range=(3 / 4, 4 / 3)):
  """Decodes a random crop of `area_range` of the image with width/height in `aspect_range`.

  JPEGs decode only the crop window (`decode_and_crop_jpeg`), which is what keeps the train
  pipeline as fast as plain decoding. Other formats are decoded whole, then cropped with the
  same window for the same seed.

  Args:
    data: scalar tf.string, encoded image.
    seed: int [2], stateless seed.
    area_range: (min, max) fraction of the image area.
    aspect_range: (min, max) width / height of the crop.

  Returns:
    uint8 [h, w, 3].
  """
  tf = tf_setup.tf()

  def jpeg():
    window = _crop_window(tf.image.extract_jpeg_shape(data)[:2], seed, area_range, aspect_range)
    return tf.image.decode_and_crop_jpeg(data, window, channels=3)

  def other():
    image = decode(data)
    y, x, h, w = tf.unstack(_crop_window(tf.shape(image)[:2], seed, area_range, aspect_range))
    return image[y : y + h, x : x + w]

  image = tf.cond(tf.io.is_jpeg(data), jpeg, other)
  image.set_shape([None, None, 3])
  return image


def _resize(image, size):
  """Bilinear resize (as the original vit_jax) of uint8 [h, w, 3] to float32 [*size, 3].

  Casting first is not a detour: TF's bilinear kernel is ~2x faster on float32 than on uint8.
  """
  tf = tf_setup.tf()
  return tf.image.resize(tf.cast(image, tf.float32), size)


def value_range(image):
  """Maps [0, 255] (any real or integer dtype) to float32 [-1, 1], as the checkpoints expect."""
  tf = tf_setup.tf()
  return tf.cast(image, tf.float32) / 127.5 - 1.0


def _to_uint8(image):
  """Rounds float pixels in [0, 255] to uint8 (saturating)."""
  tf = tf_setup.tf()
  return tf.saturate_cast(tf.round(image), tf.uint8)


def _finish(image, image_dtype: str):
  """[0, 255] pixels (any dtype) -> the output of `image_dtype` (see IMAGE_DTYPES)."""
  tf = tf_setup.tf()
  if image_dtype == 'uint8':
    return image if image.dtype == tf.uint8 else _to_uint8(image)
  if image_dtype == 'float32':
    return value_range(image)
  raise ValueError(f'image_dtype={image_dtype!r}; use one of {IMAGE_DTYPES}.')


def _random_flip(image, seed):
  """Mirrors left-right with probability 1/2 (tf.image.stateless_random_flip_left_right,
  without its shape assertions)."""
  tf = tf_setup.tf()
  mirror = tf.random.stateless_uniform([], seed) < 0.5
  return tf.cond(mirror, lambda: tf.reverse(image, [1]), lambda: image)


def train_image(
  data,
  seed,
  *,
  crop: int,
  area_range: Sequence[float] = (0.05, 1.0),
  aspect_range: Sequence[float] = (3 / 4, 4 / 3),
  flip: bool = True,
  randaugment: tuple[int, float] | None = None,
  image_dtype: str = 'float32',
):
  """Train preprocessing of one encoded image.

  Args:
    data: scalar tf.string, encoded image.
    seed: int [2], stateless seed of this example.
    crop: output side length.
    area_range: inception crop area fraction; (1, 1) means no crop, a plain resize.
    aspect_range: inception crop width / height range.
    flip: random horizontal flip with probability 1/2.
    randaugment: optional (num_layers, magnitude), applied after crop, flip and resize.
    image_dtype: 'float32' or 'uint8', see IMAGE_DTYPES.

  Returns:
    float32 [crop, crop, 3] in [-1, 1], or uint8 [crop, crop, 3] (image_dtype='uint8').
  """
  tf = tf_setup.tf()
  crop_seed, flip_seed, augment_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  if area_range[0] >= 1.0:
    image = decode(data)
  else:
    image = decode_inception_crop(data, crop_seed, area_range, aspect_range)
  # Bilinear resizing commutes with the flip; it is done where there are fewest bytes: on the
  # uint8 crop when the output is float32, on the uint8 output (150 KB at 224px) otherwise.
  uint8 = image_dtype == 'uint8'
  if flip and not uint8:
    image = _random_flip(image, flip_seed)
  image = _resize(image, [crop, crop])
  if uint8 or randaugment is not None:
    image = _to_uint8(image)
  if flip and uint8:
    image = _random_flip(image, flip_seed)
  if randaugment is not None:
    image = randaugment_lib.randaugment(image, augment_seed, *randaugment)
  return _finish(image, image_dtype)


def eval_image(
  data,
  *,
  crop: int,
  resize_mode: str = 'resize',
  resize_small: int | None = None,
  image_dtype: str = 'float32',
):
  """Eval preprocessing of one encoded image (deterministic).

  Args:
    data: scalar tf.string, encoded image.
    crop: output side length.
    resize_mode: 'resize' squashes the whole image to crop x crop; 'resize_crop' resizes the
      short side to `resize_small` keeping the aspect ratio, then takes the central crop.
    resize_small: short side for 'resize_crop'; default round(crop * 8 / 7) (256 for 224).
    image_dtype: 'float32' or 'uint8', see IMAGE_DTYPES.

  Returns:
    float32 [crop, crop, 3] in [-1, 1], or uint8 [crop, crop, 3] (image_dtype='uint8').
  """
  tf = tf_setup.tf()
  image = decode(data)
  if resize_mode == 'resize':
    image = _resize(image, [crop, crop])
  elif resize_mode == 'resize_crop':
    small = resize_small or default_resize_small(crop)
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = small / tf.reduce_min(hw)
    new_hw = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), small)
    image = _resize(image, new_hw)
    top, left = tf.unstack((new_hw - crop) // 2)
    image = image[top : top + crop, left : left + crop]
  else:
    raise ValueError(f'resize_mode={resize_mode!r}; use one of {RESIZE_MODES}.')
  image.set_shape([crop, crop, 3])
  return _finish(image, image_dtype)


def default_resize_small(crop: int) -> int:
  """Short side before the central crop in 'resize_crop' mode (crop / 0.875)."""
  return int(round(crop * 8 / 7))
