"""Image files decoded as a run's evaluation decodes them, for predictions on a user's files.

Files are read through etils.epath (gs:// works), then decoded and resized in parallel by
tf.data with the eval preprocessing (vit_jax.data.preprocess.eval_image); an image that fails
to decode is dropped there (`ignore_errors`), as in training, which keeps TensorFlow's C++
error logs off the terminal, and reported with its reason.
"""

import functools
from typing import Optional, Sequence

from etils import epath
import numpy as np

from vit_jax.data import preprocess
from vit_jax.data import tf_setup
from vit_jax.system import quiet_logs

UNDECODABLE = 'not a decodable image (JPEG, PNG, GIF, BMP or WebP)'


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
    if data:
      rows.append(i)
      blobs.append(data)
    else:
      out[i] = (None, 'empty file')
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
