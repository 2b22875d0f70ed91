"""TFDS datasets by name: prepared-data checks, per-process splits, encoded records.

Images stay encoded (`SkipDecoding`) until after shuffling; the pipeline decodes them. A
dataset must have an `image` Image feature and a `label` ClassLabel feature. Nothing is
downloaded unless the caller asks (`download=True`), except `sklearn_digits`, which is
prepared from the copy inside scikit-learn.
"""

import difflib
import logging
import os

from vit_jax.data import errors
from vit_jax.data import preprocess
from vit_jax.data import tf_setup
from vit_jax.system import quiet_logs
from vit_jax.system import runtime

BUILTIN = 'sklearn_digits'
FOREVER = 2**62  # Epoch count of the endless stream.
# Train splits up to this size (TFDS's num_bytes) are read into memory for random access.
IN_MEMORY_MAX_BYTES = 1 << 30
# Seconds the download host has to answer before a dataset that needs downloading is refused.
NETWORK_TIMEOUT = 5.0


def _base_name(name: str) -> str:
  """'imagenet2012_subset/10pct:5.0.0' -> 'imagenet2012_subset'."""
  return name.split(':')[0].split('/')[0].strip()


class TfdsSource:
  """A TFDS dataset, prepared in `data_dir` (TFDS's default when None)."""

  kind = 'tfds'

  def __init__(self, name: str, *, data_dir=None, manual_dir=None, download=False):
    tfds = tf_setup.tfds()
    self.name = name
    # `--config.data_dir=~/tensorflow_datasets`: the shell leaves a `~` after `=` as it is.
    data_dir = os.path.expanduser(data_dir) if data_dir else data_dir
    manual_dir = os.path.expanduser(manual_dir) if manual_dir else manual_dir
    if _base_name(name) == BUILTIN:
      from vit_jax.data import digits_builder  # noqa: F401
    try:
      with quiet_logs.absl_errors_only():
        self.builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
      close = difflib.get_close_matches(_base_name(name), tfds.list_builders() + [BUILTIN], 3)
      hint = f' (did you mean {", ".join(close)}?)' if close else ''
      raise errors.DataError(
        f'Unknown dataset {name!r}{hint}: it is neither an existing folder nor a TFDS '
        f'dataset name; pass a TFDS name (e.g. cifar10, {BUILTIN}) or an image folder path '
        '(DIR/<split>/<class>/*.jpg).'
      ) from None
    except (ValueError, AssertionError) as e:  # Unknown config or version.
      first = str(e).strip().splitlines()[0]
      raise errors.DataError(f'TFDS dataset {name!r} cannot be built: {first}') from None
    self.data_dir = str(self.builder.data_dir_root)
    self._check_features()
    with quiet_logs.absl_errors_only():
      prepared = self.builder.is_prepared()
    if not prepared:
      self._prepare(download=download, manual_dir=manual_dir)
    label = self.builder.info.features['label']
    self.num_classes = label.num_classes
    self.class_names = tuple(label.names)
    self.split_sizes = {k: v.num_examples for k, v in self.builder.info.splits.items()}

  def _prepare(self, *, download, manual_dir):
    tfds = tf_setup.tfds()
    name = self.name
    if _base_name(name) != BUILTIN and not download:
      manual = (
        ' (imagenet2012 needs its tar files in --manual_dir)'
        if _base_name(name).startswith('imagenet')
        else ''
      )
      raise errors.DataError(
        f'TFDS dataset {name!r} is not prepared in data_dir={self.data_dir} (looked for '
        f'{self.builder.data_dir}); prepare it with `python -m vit_jax.data.prepare {name} '
        f'--data_dir={self.data_dir}`{manual}, pass download=True, or use an image folder '
        'DIR/<split>/<class>/*.jpg instead.'
      )
    if _base_name(name) != BUILTIN and not manual_dir:
      self._check_network()
    logging.info('Preparing TFDS dataset %s in %s.', name, self.data_dir)
    config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    try:
      self.builder.download_and_prepare(download_config=config)
    except Exception as e:
      # Several processes may prepare one shared data_dir at once; one of them wins.
      if not self.builder.is_prepared():
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise errors.DataError(
          f'Preparing TFDS dataset {name!r} in {self.data_dir} failed ({first}); prepare it '
          f'with `python -m vit_jax.data.prepare {name} --data_dir={self.data_dir}` or use '
          'an image folder.'
        ) from e
    # Re-open the builder so that its info (splits, sizes) comes from the prepared files.
    with quiet_logs.absl_errors_only():
      self.builder = tfds.builder(name, data_dir=self.data_dir)

  def _check_network(self):
    """Offline, TFDS retries each download for minutes before it fails: a probe of a few
    seconds says so first, with where the files can come from instead."""
    if runtime.online(timeout=NETWORK_TIMEOUT):
      return
    raise errors.DataError(
      f'cannot download TFDS dataset {self.name!r}: no network ({runtime.RELEASES_HOST}:443 '
      f'did not answer in {NETWORK_TIMEOUT:g} s). On a machine with network, run `python -m '
      f'vit_jax.data.prepare {self.name} --data_dir=DIR` and copy DIR here as '
      f'--data_dir={self.data_dir}; or put its downloaded archives in --manual_dir=DIR; or use '
      'an image folder DIR/<split>/<class>/*.jpg.'
    )

  def _check_features(self):
    tfds = tf_setup.tfds()
    features = self.builder.info.features
    keys = list(features.keys()) if hasattr(features, 'keys') else []
    image = features['image'] if 'image' in keys else None
    label = features['label'] if 'label' in keys else None
    if not isinstance(image, tfds.features.Image) or not isinstance(
      label, tfds.features.ClassLabel
    ):
      raise errors.DataError(
        f'TFDS dataset {self.name!r} has no `image` Image and `label` ClassLabel features '
        f'(it has {keys}); use an image classification dataset or an image folder.'
      )

  def describe(self) -> str:
    return f'TFDS dataset {self.name}'

  def num_examples(self, split: str) -> int:
    try:
      return self.builder.info.splits[split].num_examples
    except (ValueError, KeyError) as e:
      first = str(e).strip().splitlines()[0]
      raise errors.DataError(
        f'{self.describe()}: bad split {split!r}: {first} Use TFDS split '
        'syntax, e.g. "train", "train[:98%]", "train[98%:]".'
      ) from None

  def _process_splits(self, split: str, process_count: int):
    self.num_examples(split)  # Validates the split string.
    return tf_setup.tfds().even_splits(split, process_count)

  def part_sizes(self, split: str, process_count: int) -> list[int]:
    return [
      self.builder.info.splits[p].num_examples for p in self._process_splits(split, process_count)
    ]

  def train_part(self, split: str, process_index: int, process_count: int):
    """The part training reads: the whole split in memory (random access, see
    `global_order`) when it is small, else this process's part streamed from the files."""
    self.num_examples(split)  # Validates the split string.
    size = self.builder.info.splits[split].num_bytes
    if 0 < size <= IN_MEMORY_MAX_BYTES:
      return TfdsMemoryPart(self.builder, split)
    return TfdsFilePart(
      self.builder, self._process_splits(split, process_count)[process_index], self.describe()
    )

  def part(self, split: str, process_index: int, process_count: int) -> 'TfdsPart':
    """This process's part of `split` for evaluation, in stored order."""
    return TfdsPart(self.builder, self._process_splits(split, process_count)[process_index])


def _decoders():
  tfds = tf_setup.tfds()
  return tfds.decode.PartialDecoding(
    {'image': True, 'label': True}, decoders={'image': tfds.decode.SkipDecoding()}
  )


def _records(builder, split):
  """Dataset of (encoded image, int64 label) of `split` in stored order."""
  tf = tf_setup.tf()
  with quiet_logs.absl_errors_only():
    ds = builder.as_dataset(split=split, decoders=_decoders(), shuffle_files=False)
  return ds.map(lambda x: (x['image'], tf.cast(x['label'], tf.int64)))


class TfdsPart:
  """A process's share of a TFDS split for evaluation; records hold the encoded images."""

  def __init__(self, builder, split):
    self.split = split
    self.num_examples = builder.info.splits[split].num_examples
    self._records = _records(builder, split)

  def eval_stream(self):
    """(dataset of records in the stored order, load)."""
    stream = self._records.enumerate().map(lambda pos, r: {'data': r[0], 'label': r[1], 'pos': pos})
    return stream, lambda record: record

  def name_of(self, index: int) -> str:
    return f'record {index} in stored order of split {self.split}'


class TfdsMemoryPart:
  """A whole (small) TFDS split held in memory as encoded records: random access."""

  random_access = True

  def __init__(self, builder, split):
    self.split = split
    self.num_examples = builder.info.splits[split].num_examples
    records = _records(builder, split).batch(self.num_examples)
    self._data, self._labels = records.get_single_element()

  def load(self, i):
    """{'data': encoded image, 'label'} of record i (int64 tensor) in stored order."""
    return {'data': self._data[i], 'label': self._labels[i]}

  def name_of(self, index: int) -> str:
    return f'record {index} in stored order of split {self.split}'


class TfdsFilePart:
  """A process's share of a TFDS split, streamed from its TFRecord files.

  Epoch e: the files (TFDS file instructions: file, skip, take) in an order shuffled by the
  epoch's seed, read one after another; that sequence is cut into windows of
  `shuffle_buffer` records, each shuffled exactly (a shuffle whose buffer holds the whole
  window) with its own seed; then a marker. A window starts at a known file and offset, so
  resuming at any position reads at most one window (plus the skipped start of one file),
  however far into the epoch it is. Two windows are read at once (the next one fills while
  the current one is used), so memory holds up to 2 x shuffle_buffer encoded records.
  """

  def __init__(self, builder, split, where: str):
    tf = tf_setup.tf()
    tfds = tf_setup.tfds()
    if builder.info.file_format != tfds.core.FileFormat.TFRECORD:
      raise errors.DataError(
        f'{where} is stored as {builder.info.file_format.value}; streaming reads TFRecord '
        "files: prepare it with file_format=tfrecord (TFDS's default)."
      )
    self.split = split
    info = builder.info.splits[split]
    self.num_examples = info.num_examples
    instructions = [f for f in info.file_instructions if f.take > 0]
    self._files = tf.constant([f.filename for f in instructions], tf.string)
    self._skips = tf.constant([f.skip for f in instructions], tf.int64)
    self._takes = tf.constant([f.take for f in instructions], tf.int64)
    partial = _decoders()
    features = partial.extract_features(builder.info.features)

    def parse(record):
      with quiet_logs.absl_errors_only():  # TFDS's own deprecation warnings, at tracing.
        return features.deserialize_example(record, decoders=partial.decoders)

    self._parse = parse

  def _window(self, epoch_seed, w, size: int):
    """Records [w * size, (w + 1) * size) of the epoch's file sequence, shuffled."""
    tf = tf_setup.tf()
    order = tf.random.experimental.stateless_shuffle(
      tf.range(tf.size(self._takes, tf.int64)),
      tf.random.experimental.stateless_fold_in(epoch_seed, 0),
    )
    takes, skips = tf.gather(self._takes, order), tf.gather(self._skips, order)
    ends = tf.cumsum(takes)
    lo = tf.maximum(ends - takes, w * size)
    hi = tf.minimum(ends, tf.minimum((w + 1) * size, self.num_examples))
    keep = hi > lo
    pieces = tf.data.Dataset.from_tensor_slices(
      (
        tf.boolean_mask(tf.gather(self._files, order), keep),
        tf.boolean_mask(skips + lo - (ends - takes), keep),
        tf.boolean_mask(hi - lo, keep),
      )
    )
    records = pieces.flat_map(lambda f, s, t: tf.data.TFRecordDataset(f).skip(s).take(t))
    seed = tf.random.experimental.stateless_fold_in(epoch_seed, w + 1)
    return records.shuffle(size, seed=seed[0])

  def train_stream(self, start: int, epoch_seed, shuffle_buffer: int):
    """(endless dataset of serialized records, load): the train stream from `start`.

    Args:
      start: local position of the first record.
      epoch_seed: int64 epoch tensor -> int64 [2] seed of that epoch's order.
      shuffle_buffer: records per exactly shuffled window.
    """
    tf = tf_setup.tf()
    n = self.num_examples
    size = min(shuffle_buffer, n)
    windows = -(-n // size)
    first_epoch, offset = divmod(start, n)
    placeholder = preprocess.placeholder_png()

    def epoch(e, skip):
      e = tf.cast(e, tf.int64)
      seed = epoch_seed(e)
      records = tf.data.Dataset.range(skip // size, windows).interleave(
        lambda w: self._window(seed, w, size),
        cycle_length=2,
        block_length=size,
        num_parallel_calls=2,
        deterministic=True,
      )
      records = (
        records.skip(skip % size)
        .enumerate(start=e * n + skip)
        .map(
          lambda pos, r: {
            'data': r,
            'label': tf.constant(0, tf.int64),
            'pos': pos,
            'epoch_start': tf.constant(-1, tf.int64),
          }
        )
      )
      marker = tf.data.Dataset.from_tensors(
        {
          'data': tf.constant(b''),
          'label': tf.constant(-1, tf.int64),
          'pos': tf.constant(-1, tf.int64),
          'epoch_start': e * n,
        }
      )
      return records.concatenate(marker)

    def load(element):
      """Parses a record (in the parallel map); the marker gets a placeholder image."""
      is_marker = element['pos'] < 0
      parsed = tf.cond(
        is_marker,
        lambda: {'image': placeholder, 'label': tf.constant(-1, tf.int64)},
        lambda: _image_label(self._parse(element['data'])),
      )
      return dict(element, data=parsed['image'], label=parsed['label'])

    later = tf.data.Dataset.range(first_epoch + 1, FOREVER).flat_map(lambda e: epoch(e, 0))
    return epoch(first_epoch, offset).concatenate(later), load

  def name_of(self, index: int) -> str:
    return f'record {index} of the shuffled epoch of split {self.split}'


def _image_label(example):
  tf = tf_setup.tf()
  return {'image': example['image'], 'label': tf.cast(example['label'], tf.int64)}
