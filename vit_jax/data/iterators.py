"""Train and eval iterators: host side of the pipelines, resumable state, skipped images.

it = train_iterator('cifar10', 'train[:98%]', global_batch=512, crop=224, sharding=s)
batch = next(it)            # {'image': [512, 224, 224, 3] f32 in [-1, 1], 'label': [512] i32}
state = it.get_state()      # small JSON dict; save it with the checkpoint
it = train_iterator(..., state=state)   # continues with exactly the next batch

ev = eval_iterator('cifar10', 'test', global_batch=512, crop=224, sharding=s)
for batch in ev: ...        # len(ev) batches (same on every process), + 'mask' f32 [512]
"""

import functools
import logging

import numpy as np

from vit_jax.data import errors
from vit_jax.data import global_order
from vit_jax.data import handoff
from vit_jax.data import pipeline
from vit_jax.data import preprocess as preprocess_lib
from vit_jax.data import sources
from vit_jax.data import stderr_filter
from vit_jax.data import tf_setup

STATE_VERSION = 2  # 2: the global order of random-access parts (1 was per process).
_NAMES_SHOWN = 5
# Keys of the state that must match between the saving and the restoring iterator.
_STATE_KEYS = (
  'dataset',
  'split',
  'num_examples',
  'seed',
  'global_batch',
  'process_count',
  'shuffle_buffer',
)


class _SkipTracker:
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


def _fetch_numpy(tf_iterator, where: str) -> dict[str, np.ndarray]:
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


def _fetch_train(tf_iterator, tracker, sharding, process_count):
  """Next batch (on its way to the devices) and the stream position after it."""
  batch = _fetch_numpy(tf_iterator, tracker.where)
  stderr_filter.report()
  positions = batch.pop('pos')
  del batch['epoch_start']
  tracker.observe(positions)
  return handoff.to_global(batch, sharding, process_count), int(positions[-1]) + 1


class TrainIterator:
  """Endless iterator of batches; see `train_iterator`."""

  def __init__(
    self,
    *,
    config: dict,
    info,
    dataset,
    tracker,
    sharding,
    process_index: int,
    process_count: int,
    prefetch: int,
    start: int,
    batches: int,
    num_local_examples: int,
  ):
    self.info = info
    self.local_batch = config['global_batch'] // process_count
    self.num_local_examples = num_local_examples  # This process's epoch.
    self._config, self._tracker = config, tracker
    self._process_index, self._process_count = process_index, process_count
    self._position, self._batches = start, batches
    # The fetch function must not refer to `self`: a reference cycle would keep the tf.data
    # threads of a dropped iterator running until the garbage collector finds it.
    fetch = functools.partial(
      _fetch_train, dataset.as_numpy_iterator(), tracker, sharding, process_count
    )
    self._queue = handoff.DeviceQueue(fetch, prefetch)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch, self._position = self._queue.next()
    self._batches += 1
    return batch

  @property
  def num_skipped(self) -> int:
    """Distinct unreadable images skipped so far (including a few already read ahead)."""
    return self._tracker.count

  def get_state(self) -> dict:
    """JSON-serialisable position of the stream after the last batch returned.

    In a multi-process job every process must call this at the same step: it gathers the
    positions of all processes (they differ when processes skipped unreadable images), so
    that any process's copy restores all of them.
    """
    positions = {str(self._process_index): self._position}
    if self._process_count > 1 and self._process_count == _jax_process_count():
      from jax.experimental import multihost_utils

      gathered = multihost_utils.process_allgather(np.array([self._position], np.int64))
      positions = {str(i): int(p) for i, p in enumerate(np.asarray(gathered).reshape(-1))}
    return dict(self._config, version=STATE_VERSION, batches=self._batches, positions=positions)


def _jax_process_count() -> int:
  import jax

  return jax.process_count()


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
    tracker = _SkipTracker(
      self._where, self._skip_unreadable, 0, self._part.name_of, warn_progress=False
    )
    tf_iterator = self._dataset.as_numpy_iterator()

    def fetch():
      batch = _fetch_numpy(tf_iterator, self._where)
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


def _check_common(crop, prefetch, image_dtype):
  if not isinstance(crop, int) or crop < 1:
    raise errors.DataError(f'crop={crop!r}; pass the image side length as a positive integer.')
  if image_dtype not in preprocess_lib.IMAGE_DTYPES:
    raise errors.DataError(
      f'image_dtype={image_dtype!r}; use one of {preprocess_lib.IMAGE_DTYPES}.'
    )
  if not isinstance(prefetch, int) or prefetch < 0:
    raise errors.DataError(f'prefetch={prefetch!r}; pass a number of batches >= 0.')


def _check_train_args(seed, area_range, aspect_range, randaugment, shuffle_buffer):
  if not isinstance(seed, int) or not -(2**63) <= seed < 2**63:
    raise errors.DataError(f'seed={seed!r}; pass an integer that fits in int64.')
  lo, hi = area_range
  if not 0 < lo <= hi <= 1:
    raise errors.DataError(
      f'area_range={area_range!r}; need 0 < min <= max <= 1 '
      '(fractions of the image area; (1, 1) means no crop).'
    )
  lo, hi = aspect_range
  if not 0 < lo <= hi:
    raise errors.DataError(f'aspect_range={aspect_range!r}; need 0 < min <= max (width/height).')
  if randaugment is not None:
    if (
      len(randaugment) != 2
      or not isinstance(randaugment[0], int)
      or randaugment[0] < 0
      or not 0 <= randaugment[1] <= 30
    ):
      raise errors.DataError(
        f'randaugment={randaugment!r}; pass (num_layers >= 0, magnitude in [0, 30]) or None.'
      )
  if not isinstance(shuffle_buffer, int) or shuffle_buffer < 1:
    raise errors.DataError(f'shuffle_buffer={shuffle_buffer!r}; pass a positive integer.')


def _start_from_state(state, config, process_index, random_access: bool) -> tuple[int, int]:
  """(stream position, batches) stored in `state` for this process.

  A random-access split's global order does not depend on the process count, so a state
  saved with another process count restores too when no process had skipped an image (every
  position is then batches x rows per process).
  """
  if state is None:
    return 0, 0
  if not isinstance(state, dict) or state.get('version') != STATE_VERSION:
    raise errors.DataError(
      f'state={state!r:.80} is not a state from TrainIterator.get_state() '
      f'(version {STATE_VERSION}); pass the saved dict or None.'
    )
  batches = int(state.get('batches', 0))
  positions = state.get('positions', {})
  count = state.get('process_count')
  if random_access and isinstance(count, int) and count != config['process_count']:
    if positions and all(
      p == batches * (config['global_batch'] // count) for p in positions.values()
    ):
      return batches * (config['global_batch'] // config['process_count']), batches
  for key in _STATE_KEYS:
    if state.get(key) != config[key]:
      also = (
        ' (another process count restores only when no image was skipped, on image '
        'folders and TFDS splits held in memory)'
        if key == 'process_count'
        else ''
      )
      raise errors.DataError(
        f'The iterator state was saved with {key}={state.get(key)!r} but this iterator has '
        f'{key}={config[key]!r}; restore with the same {", ".join(_STATE_KEYS)}{also}.'
      )
  position = positions.get(str(process_index))
  if not isinstance(position, int) or position < 0:
    raise errors.DataError(
      f'The iterator state has no position for process {process_index} '
      f'(it has {sorted(positions)}); save the state of '
      'every process (get_state() gathers them when called on all).'
    )
  return position, batches


def train_iterator(
  dataset,
  split: str,
  *,
  global_batch: int,
  crop: int,
  sharding=None,
  seed: int = 0,
  data_dir=None,
  manual_dir=None,
  download: bool = False,
  area_range=(0.05, 1.0),
  aspect_range=(3 / 4, 4 / 3),
  flip: bool = True,
  randaugment=None,
  shuffle_buffer: int = 50_000,
  skip_unreadable: bool = True,
  prefetch: int = 2,
  image_dtype: str = 'float32',
  process_index=None,
  process_count=None,
  state=None,
) -> TrainIterator:
  """Endless, shuffled, augmented training batches of `split`, resumable.

  Args:
    dataset: TFDS name (e.g. 'cifar10', 'sklearn_digits'), image folder path, or the
      DatasetInfo of either from `get_dataset_info` (resolved once: a folder is not re-walked).
    split: TFDS-style split string, e.g. 'train', 'train[:98%]'.
    global_batch: rows per batch over all processes; each process reads 1/process_count.
    crop: output image side.
    sharding: jax.sharding.Sharding of the batch; None yields this process's numpy rows.
    seed: all randomness (epoch order, crops, flips, RandAugment) derives from it.
    data_dir, manual_dir, download: see `get_dataset_info`.
    area_range, aspect_range: inception crop ranges; area_range=(1, 1) is a plain resize.
    flip: random horizontal flips.
    randaugment: None or (num_layers, magnitude).
    shuffle_buffer: TFDS shuffle buffer, in records (image folders shuffle exactly).
    skip_unreadable: skip undecodable images with a warning; False raises at the first.
    prefetch: batches kept ready on the devices (or on the host when sharding is None).
    image_dtype: 'float32' gives pixels in [-1, 1], as the models take them; 'uint8' gives
      [0, 255] (rounded after resizing): a quarter of the bytes to batch on the host and to
      copy to the devices, mapped to [-1, 1] on the devices by `models.layers.model_input` (the
      trainer's choice).
    process_index, process_count: default to jax's; pass both to simulate processes.
    state: a dict from `TrainIterator.get_state()` to continue a run.

  Returns:
    TrainIterator yielding {'image': [B, crop, crop, 3] of image_dtype, 'label': int32 [B]},
    B = global_batch (global jax.Arrays) with sharding, else global_batch / process_count.
  """
  process_index, process_count = handoff.resolve_processes(process_index, process_count)
  local_batch = handoff.local_rows(global_batch, process_count, sharding)
  _check_common(crop, prefetch, image_dtype)
  stderr_filter.install()
  _check_train_args(seed, area_range, aspect_range, randaugment, shuffle_buffer)
  source = sources.resolve(dataset, data_dir=data_dir, manual_dir=manual_dir, download=download)
  config = {
    'dataset': source.name,
    'split': split,
    'num_examples': source.num_examples(split),
    'seed': seed,
    'global_batch': global_batch,
    'process_count': process_count,
    'shuffle_buffer': shuffle_buffer,
  }
  part = source.train_part(split, process_index, process_count)
  random_access = getattr(part, 'random_access', False)
  start, batches = _start_from_state(state, config, process_index, random_access)
  where = f'{source.describe()} split {split!r} (process {process_index} of {process_count})'
  if part.num_examples == 0:
    raise errors.DataError(f'{where} has no examples; choose a larger split.')
  share = None
  if random_access:
    rows = global_order.process_rows(global_batch, process_index, process_count, sharding)
    share = global_order.Share(rows, global_batch, part.num_examples)
  preprocess = functools.partial(
    preprocess_lib.train_image,
    crop=crop,
    area_range=tuple(area_range),
    aspect_range=tuple(aspect_range),
    flip=flip,
    randaugment=tuple(randaugment) if randaugment is not None else None,
    image_dtype=image_dtype,
  )
  ds = pipeline.train_dataset(
    part,
    preprocess=preprocess,
    local_batch=local_batch,
    seed=seed,
    share=share,
    process_index=process_index,
    start=start,
    shuffle_buffer=shuffle_buffer,
  )

  def name_at(position):
    if share is None:
      return part.name_of(position % part.num_examples)
    return part.name_of(pipeline.record_at(part, share, position, pipeline.epoch_seed_fn(seed, 0)))

  tracker = _SkipTracker(where, skip_unreadable, start, name_at)
  return TrainIterator(
    config=config,
    info=sources.info_of(source),
    dataset=ds,
    tracker=tracker,
    sharding=sharding,
    process_index=process_index,
    process_count=process_count,
    prefetch=prefetch,
    start=start,
    batches=batches,
    num_local_examples=share.epoch_share if share else part.num_examples,
  )


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
  _check_common(crop, prefetch, image_dtype)
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
