"""Image files decoded as a run's evaluation decodes them, for predictions on a user's files.

Files are read through etils.epath (gs:// works), then decoded and resized in parallel by
tf.data with the eval preprocessing (vit_jax.data.preprocess.eval_image); an image that fails
to decode is dropped there (`ignore_errors`), as in training, which keeps TensorFlow's C++
error logs off the terminal, and reported with its reason.
"""

import functools
import io
from typing import Optional, Sequence
import warnings

from etils import epath
import numpy as np

from vit_jax.data import preprocess
from vit_jax.data import tf_setup
from vit_jax.system import quiet_logs

UNDECODABLE = 'not a decodable image (JPEG, PNG, GIF, BMP or WebP)'
# Decoded images above this many pixels are refused per file: a 48 KB PNG can hold 20000x20000
# pixels, 1.2 GB as uint8 RGB and several times that while being resized (7 GB, measured).
MAX_PIXELS = 1 << 26  # 67 megapixels, e.g. 8192 x 8192.


def _too_large(data: bytes) -> Optional[str]:
  """The reason to refuse an image whose header says it has more than MAX_PIXELS; None for
  others (and for what Pillow cannot parse: TensorFlow's decoder has the last word)."""
  from PIL import Image

  tail = f'(at most {MAX_PIXELS:,} pixels); resize it first'
  try:
    with warnings.catch_warnings():  # Pillow warns above 89M pixels: our reason says it.
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      with Image.open(io.BytesIO(data)) as image:  # reads the header only.
        width, height = image.size
  except Image.DecompressionBombError:  # Pillow refuses to parse more than twice its limit.
    return f'too large: more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels {tail}'
  except Exception:  # not an image Pillow knows: the decoder reports it.
    return None
  if width * height <= MAX_PIXELS:
    return None
  return f'too large: {width}x{height} pixels, {width * height * 3 / 2**30:.1f} GiB decoded {tail}'


def decode(
  paths: Sequence[str], *, crop: int, resize_mode: str, resize_small: Optional[int]
) -> list[tuple[Optional[np.ndarray], Optional[str]]]:
  """Per path: (uint8 [crop, crop, 3], None) for a readable image, else (None, the reason)."""
  out: list[tuple[Optional[np.ndarray], Optional[str]]] = [(None, UNDECODABLE)] * len(paths)
  rows, blobs = [], []
  for i, path in enumerate(paths):
    try:
      data = epath.Path(path).read_bytes()
    except OSError as e:
      out[i] = (None, quiet_logs.first_line(e))
      continue
    if not data:
      out[i] = (None, 'empty file')
    elif reason := _too_large(data):
      out[i] = (None, reason)
    else:
      rows.append(i)
      blobs.append(data)
  if not rows:
    return out
  tf = tf_setup.tf()
  eval_image = functools.partial(
    preprocess.eval_image,
    crop=crop,
    resize_mode=resize_mode,
    resize_small=resize_small,
    image_dtype='uint8',
  )
  ds = tf.data.Dataset.from_tensor_slices((np.asarray(rows, np.int32), tf.constant(blobs)))
  ds = ds.map(
    lambda i, data: (i, eval_image(data)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  ).ignore_errors()
  for i, image in ds.as_numpy_iterator():
    out[i] = (image, None)
  return out
