"""Eval iterators: one pass over a split per `iter()`, every example exactly once across the
processes, padded batches masked.

    ev = eval_iterator('cifar10', 'test', global_batch=512, crop=224, sharding=s)
    for batch in ev: ...        # len(ev) batches (same on every process), + 'mask' f32 [512]
"""

import functools

import numpy as np

from vit_jax.data import batch_fetch
from vit_jax.data import errors
from vit_jax.data import handoff
from vit_jax.data import pipeline
from vit_jax.data import preprocess as preprocess_lib
from vit_jax.data import sources
from vit_jax.data import stderr_filter


class EvalIterator:
  """One pass over a split per `iter()`; see `eval_iterator`."""

  def __init__(
    self,
    *,
    info,
    dataset,
    part,
    part_size: int,
    split_size: int,
    num_batches: int,
    sharding,
    process_count: int,
    prefetch: int,
    where: str,
    skip_unreadable: bool,
  ):
    self.info = info
    self.num_batches = num_batches
    self.num_examples = split_size  # Whole split, all processes.
    self.num_local_examples = part_size
    self.num_skipped = 0  # Of this process, in the last complete pass.
    self._dataset, self._part, self._where = dataset, part, where
    self._sharding, self._process_count, self._prefetch = sharding, process_count, prefetch
    self._skip_unreadable = skip_unreadable

  def __len__(self) -> int:
    return self.num_batches

  def __iter__(self):
    tracker = batch_fetch.SkipTracker(
      self._where, self._skip_unreadable, 0, self._part.name_of, warn_progress=False
    )
    tf_iterator = self._dataset.as_numpy_iterator()

    def fetch():
      batch = batch_fetch.fetch_numpy(tf_iterator, self._where)
      stderr_filter.report()
      positions = batch.pop('pos')
      tracker.observe(positions[positions >= 0])
      return handoff.to_global(batch, self._sharding, self._process_count)

    queue = handoff.DeviceQueue(fetch, self._prefetch)
    while True:
      try:
        batch = queue.next()
      except StopIteration:
        break
      yield batch
    tracker.observe(np.zeros([0], np.int64), end=self.num_local_examples)
    self.num_skipped = tracker.count
    if tracker.count:
      tracker.warn(total=self.num_local_examples)
      if tracker.count == self.num_local_examples:
        raise errors.DataError(f'No image of {self._where} could be decoded; check the files.')


def eval_iterator(
  dataset,
  split: str,
  *,
  global_batch: int,
  crop: int,
  sharding=None,
  resize_mode: str = 'resize',
  resize_small=None,
  data_dir=None,
  manual_dir=None,
  download: bool = False,
  skip_unreadable: bool = True,
  prefetch: int = 2,
  image_dtype: str = 'float32',
  process_index=None,
  process_count=None,
) -> EvalIterator:
  """One pass (per `iter()`) over every example of `split` exactly once, padded and masked.

  Args:
    dataset, split, global_batch, crop, sharding, data_dir, manual_dir, download,
      skip_unreadable, prefetch, image_dtype, process_index, process_count: as in
      `train_iterator`.
    resize_mode: 'resize' (whole image to crop x crop) or 'resize_crop' (short side to
      `resize_small`, default crop * 8/7, then the central crop).
    resize_small: see resize_mode.

  Returns:
    EvalIterator; len() batches, the same on every process, each {'image': [B, crop, crop, 3]
    of image_dtype, 'label': int32 [B], 'mask': float32 [B]} with mask 0 on padding rows.
    Over a pass, sum(mask) over all processes == the split size (minus skipped images).
  """
  process_index, process_count = handoff.resolve_processes(process_index, process_count)
  local_batch = handoff.local_rows(global_batch, process_count, sharding)
  batch_fetch.check_common(crop, prefetch, image_dtype)
  stderr_filter.install()
  if resize_mode not in preprocess_lib.RESIZE_MODES:
    raise errors.DataError(
      f'resize_mode={resize_mode!r}; use one of {preprocess_lib.RESIZE_MODES}.'
    )
  if resize_small is not None and (not isinstance(resize_small, int) or resize_small < crop):
    raise errors.DataError(f'resize_small={resize_small!r}; pass an integer >= crop ({crop}).')
  source = sources.resolve(dataset, data_dir=data_dir, manual_dir=manual_dir, download=download)
  sizes = source.part_sizes(split, process_count)
  if sum(sizes) == 0:
    raise errors.DataError(f'{source.describe()} split {split!r} has no examples.')
  num_batches = -(-max(sizes) // local_batch)  # Same on all processes: steps are collectives.
  part = source.part(split, process_index, process_count)
  preprocess = functools.partial(
    preprocess_lib.eval_image,
    crop=crop,
    resize_mode=resize_mode,
    resize_small=resize_small,
    image_dtype=image_dtype,
  )
  ds = pipeline.eval_dataset(
    part,
    preprocess=preprocess,
    local_batch=local_batch,
    num_batches=num_batches,
    crop=crop,
    image_dtype=image_dtype,
  )
  where = f'{source.describe()} split {split!r} (process {process_index} of {process_count})'
  return EvalIterator(
    info=sources.info_of(source),
    dataset=ds,
    part=part,
    part_size=part.num_examples,
    split_size=sum(sizes),
    num_batches=num_batches,
    sharding=sharding,
    process_count=process_count,
    prefetch=prefetch,
    where=where,
    skip_unreadable=skip_unreadable,
  )
