"""TFDS datasets by name: prepared-data checks, per-process splits, encoded records.

Images stay encoded (`SkipDecoding`) until after shuffling; the pipeline decodes them. A
dataset must have an `image` Image feature and a `label` ClassLabel feature. Nothing is
downloaded unless the caller asks (`download=True`), except `sklearn_digits`, which is
prepared from the copy inside scikit-learn.
"""

import difflib
import logging

from vit_jax import quiet_logs
from vit_jax.data import errors
from vit_jax.data import preprocess
from vit_jax.data import tf_setup

BUILTIN = 'sklearn_digits'
FOREVER = 2**62  # Epoch count of the endless stream.


def _base_name(name: str) -> str:
  """'imagenet2012_subset/10pct:5.0.0' -> 'imagenet2012_subset'."""
  return name.split(':')[0].split('/')[0].strip()


class TfdsSource:
  """A TFDS dataset, prepared in `data_dir` (TFDS's default when None)."""

  kind = 'tfds'

  def __init__(self, name: str, *, data_dir=None, manual_dir=None, download=False):
    tfds = tf_setup.tfds()
    self.name = name
    if _base_name(name) == BUILTIN:
      from vit_jax.data import digits_builder  # pylint: disable=g-import-not-at-top,unused-import
    try:
      with quiet_logs.absl_errors_only():
        self.builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
      close = difflib.get_close_matches(_base_name(name), tfds.list_builders() + [BUILTIN], 3)
      hint = f' (did you mean {", ".join(close)}?)' if close else ''
      raise errors.DataError(
          f'Unknown dataset {name!r}{hint}: it is neither an existing folder nor a TFDS '
          f'dataset name; pass a TFDS name (e.g. cifar10, {BUILTIN}) or an image folder path '
          '(DIR/<split>/<class>/*.jpg).') from None
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
      manual = (' (imagenet2012 needs its tar files in --manual_dir)'
                if _base_name(name).startswith('imagenet') else '')
      raise errors.DataError(
          f'TFDS dataset {name!r} is not prepared in data_dir={self.data_dir} (looked for '
          f'{self.builder.data_dir}); prepare it with `python -m vit_jax.data.prepare {name} '
          f'--data_dir={self.data_dir}`{manual}, pass download=True, or use an image folder '
          'DIR/<split>/<class>/*.jpg instead.')
    logging.info('Preparing TFDS dataset %s in %s.', name, self.data_dir)
    config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    try:
      self.builder.download_and_prepare(download_config=config)
    except Exception as e:  # pylint: disable=broad-except
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

  def _check_features(self):
    tfds = tf_setup.tfds()
    features = self.builder.info.features
    keys = list(features.keys()) if hasattr(features, 'keys') else []
    image = features['image'] if 'image' in keys else None
    label = features['label'] if 'label' in keys else None
    if not isinstance(image, tfds.features.Image) or not isinstance(
        label, tfds.features.ClassLabel):
      raise errors.DataError(
          f'TFDS dataset {self.name!r} has no `image` Image and `label` ClassLabel features '
          f'(it has {keys}); use an image classification dataset or an image folder.')

  def describe(self) -> str:
    return f'TFDS dataset {self.name}'

  def num_examples(self, split: str) -> int:
    try:
      return self.builder.info.splits[split].num_examples
    except (ValueError, KeyError) as e:
      first = str(e).strip().splitlines()[0]
      raise errors.DataError(f'{self.describe()}: bad split {split!r}: {first} Use TFDS split '
                             'syntax, e.g. "train", "train[:98%]", "train[98%:]".') from None

  def _process_splits(self, split: str, process_count: int):
    self.num_examples(split)  # Validates the split string.
    return tf_setup.tfds().even_splits(split, process_count)

  def part_sizes(self, split: str, process_count: int) -> list[int]:
    return [self.builder.info.splits[p].num_examples
            for p in self._process_splits(split, process_count)]

  def part(self, split: str, process_index: int, process_count: int) -> 'TfdsPart':
    return TfdsPart(self.builder, self._process_splits(split, process_count)[process_index])


class TfdsPart:
  """A process's share of a TFDS split; records hold the encoded image bytes."""

  def __init__(self, builder, split):
    tf, tfds = tf_setup.tf(), tf_setup.tfds()
    self.builder = builder
    self.split = split
    self.num_examples = builder.info.splits[split].num_examples
    decoders = tfds.decode.PartialDecoding(
        {'image': True, 'label': True}, decoders={'image': tfds.decode.SkipDecoding()})
    # Built once, eagerly; the per-epoch datasets below capture it. Small splits are cached
    # in memory by TFDS (autocache), so later epochs do not re-read the files.
    with quiet_logs.absl_errors_only():
      ds = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
    self._records = ds.map(lambda x: (x['image'], tf.cast(x['label'], tf.int64)))

  def eval_stream(self):
    """(dataset of records in the stored order, load)."""
    stream = self._records.enumerate().map(
        lambda pos, r: {'data': r[0], 'label': r[1], 'pos': pos})
    return stream, lambda record: record

  def train_stream(self, start: int, epoch_seed, shuffle_buffer: int):
    """(endless dataset of records, load): the train stream of `pipeline`, from `start`.

    Epoch e is the stored order through a `shuffle_buffer` seeded by epoch_seed(e) (TFDS
    shuffled the examples when it prepared them; the buffer reshuffles each epoch), then a
    marker. Leaving out the start of an epoch reads those records (without decoding them).

    Args:
      start: stream position of the first record.
      epoch_seed: int64 epoch tensor -> int64 [2] seed of that epoch's order.
      shuffle_buffer: size of the shuffle buffer, in (encoded) records.
    """
    tf = tf_setup.tf()
    n = self.num_examples
    first_epoch, first_skip = divmod(start, n)
    placeholder = preprocess.placeholder_png()

    def epoch(e, skip):
      e = tf.cast(e, tf.int64)
      seed = tf.random.stateless_uniform([], epoch_seed(e), None, None, tf.int64)
      records = self._records.shuffle(shuffle_buffer, seed=seed).skip(skip)
      records = records.enumerate(start=e * n + skip).map(
          lambda pos, r: {'data': r[0], 'label': r[1], 'pos': pos,
                          'epoch_start': tf.constant(-1, tf.int64)})
      marker = tf.data.Dataset.from_tensors({
          'data': placeholder, 'label': tf.constant(-1, tf.int64),
          'pos': tf.constant(-1, tf.int64), 'epoch_start': e * n})
      return records.concatenate(marker)

    later = tf.data.Dataset.range(first_epoch + 1, FOREVER).flat_map(lambda e: epoch(e, 0))
    return epoch(first_epoch, first_skip).concatenate(later), lambda record: record

  def name_of(self, index: int, epoch_seed=None) -> str:
    where = 'in stored order' if epoch_seed is None else 'of the shuffled epoch'
    return f'record {index} {where} of split {self.split}'
