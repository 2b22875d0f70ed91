"""The host side that train and eval iterators share: a batch fetched from tf.data as NumPy,
unreadable images found from the gaps in the positions that arrive, the common arguments."""

import logging

import numpy as np

from vit_jax.data import errors
from vit_jax.data import pipeline
from vit_jax.data import preprocess as preprocess_lib
from vit_jax.data import tf_setup

_NAMES_SHOWN = 5


class SkipTracker:
  """Finds records dropped as unreadable from the gaps in the positions that arrive."""

  def __init__(
    self, where: str, skip_unreadable: bool, start: int, name_at, warn_progress: bool = True
  ):
    self.where, self._skip, self._warn_progress = where, skip_unreadable, warn_progress
    self._name_at = name_at  # position -> description of the record.
    self.expected = start  # Next position that should arrive.
    self.count = 0  # Distinct records: a broken file revisited each epoch counts once.
    self.names = []
    self._seen = set()

  def observe(self, positions: np.ndarray, end: int | None = None):
    """Positions of the real rows of a batch (ascending); `end`: the stream ends there."""
    last = (positions[-1] + 1) if len(positions) else self.expected
    last = max(last, end if end is not None else last)
    if last - self.expected == len(positions):
      self.expected = last
      return
    missing = np.setdiff1d(np.arange(self.expected, last), positions)
    self.expected = last
    for p in missing:
      name = self._name_at(int(p))
      if name not in self._seen:
        self._seen.add(name)
        if len(self.names) < _NAMES_SHOWN:
          self.names.append(name)
    before, self.count = self.count, len(self._seen)
    if not self._skip:
      raise errors.UnreadableImageError(
        f'Cannot decode {self.names[0]} ({self.where}); fix or delete it, or pass '
        '--config.skip_unreadable=True (skip_unreadable=True) to skip unreadable images '
        'with a warning.'
      )
    if self._warn_progress and self.count.bit_length() > before.bit_length():
      self.warn()  # When the count passes 1, 2, 4, 8, ..., not at every batch.

  def warn(self, total: int | None = None):
    of = f' (of {total})' if total is not None else ' so far'
    logging.warning(
      'Skipped %d unreadable images%s in %s (first: %s); pass '
      '--config.skip_unreadable=False (skip_unreadable=False) to stop at the '
      'first one instead.',
      self.count,
      of,
      self.where,
      ', '.join(self.names),
    )


def fetch_numpy(tf_iterator, where: str) -> dict[str, np.ndarray]:
  """The next batch of a tf.data NumPy iterator; a DataError when no image of an epoch decodes."""
  tf = tf_setup.tf()
  try:
    return next(tf_iterator)
  except tf.errors.InvalidArgumentError as e:
    if pipeline.NO_READABLE_IMAGE in str(e):
      raise errors.DataError(
        f'No image of a whole epoch of {where} could be decoded; check the '
        'files (are they images?) or choose another split.'
      ) from None
    raise


def check_common(crop, prefetch, image_dtype):
  """DataError (one line) for a crop, prefetch or image dtype that cannot work."""
  if not isinstance(crop, int) or crop < 1:
    raise errors.DataError(f'crop={crop!r}; pass the image side length as a positive integer.')
  if image_dtype not in preprocess_lib.IMAGE_DTYPES:
    raise errors.DataError(
      f'image_dtype={image_dtype!r}; use one of {preprocess_lib.IMAGE_DTYPES}.'
    )
  if not isinstance(prefetch, int) or prefetch < 0:
    raise errors.DataError(f'prefetch={prefetch!r}; pass a number of batches >= 0.')
