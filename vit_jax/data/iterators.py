"""Train iterators: host side of the training pipeline, resumable state, skipped images.

it = train_iterator('cifar10', 'train[:98%]', global_batch=512, crop=224, sharding=s)
batch = next(it)            # {'image': [512, 224, 224, 3] f32 in [-1, 1], 'label': [512] i32}
state = it.get_state()      # small JSON dict; save it with the checkpoint
it = train_iterator(..., state=state)   # continues with exactly the next batch

Eval iterators are in eval_iterators.py; what both share (fetching, skipped images) in
batch_fetch.py.
"""

import functools

import numpy as np

from vit_jax.data import batch_fetch
from vit_jax.data import errors
from vit_jax.data import global_order
from vit_jax.data import handoff
from vit_jax.data import pipeline
from vit_jax.data import preprocess as preprocess_lib
from vit_jax.data import randaugment as randaugment_lib
from vit_jax.data import sources
from vit_jax.data import stderr_filter

STATE_VERSION = 2  # 2: the global order of random-access parts (1 was per process).
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


def _fetch_train(tf_iterator, tracker, sharding, process_count):
  """Next batch (on its way to the devices) and the stream position after it."""
  batch = batch_fetch.fetch_numpy(tf_iterator, tracker.where)
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
      or not 0 <= randaugment[1] <= randaugment_lib.MAX_MAGNITUDE
    ):
      raise errors.DataError(
        f'randaugment={randaugment!r}; pass (num_layers >= 0, magnitude in [0, '
        f'{randaugment_lib.MAX_MAGNITUDE}]) or None.'
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
  batch_fetch.check_common(crop, prefetch, image_dtype)
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

  tracker = batch_fetch.SkipTracker(where, skip_unreadable, start, name_at)
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
