"""tf.data pipelines: the endless, resumable train stream and the padded one-pass eval stream.

Train stream of one process, record by record:
  epoch e = this process's part of the split in the order of epoch seed (seed, process, e);
  records are numbered by their position p in the endless stream (epoch e holds positions
  [e*n, (e+1)*n)); the example at position p is preprocessed with the stateless seed
  (seed, process, p). So the stream is a pure function of (seed, process, start position):
  starting at position p gives exactly what an uninterrupted run gives from p on, only the
  current epoch is skipped through (without decoding), and tf.data's threads cannot change
  the result. Images are decoded after shuffling.
Unreadable images are dropped (`ignore_errors`); every element carries its position `pos`
so the host sees the gaps, counts and names them. A marker element (pos = -1) after each
epoch lets the stream fail with a clear error instead of spinning forever when no image of a
whole epoch can be read.

A part (FolderPart, TfdsPart) supplies the streams: `train_stream(start, epoch_seed,
shuffle_buffer)` and `eval_stream()` each return (cheap sequential dataset, load), where
load(element) runs inside the parallel map and returns {'data': encoded image, 'label',
'pos' (, 'epoch_start')}.
"""

from collections.abc import Callable

from vit_jax.data import tf_setup

NO_READABLE_IMAGE = 'vit_jax.data: no readable image in a whole epoch'


def options():
  """tf.data options: deterministic order, one thread per op (parallelism is per element)."""
  tf = tf_setup.tf()
  opts = tf.data.Options()
  opts.deterministic = True
  opts.threading.max_intra_op_parallelism = 1
  return opts


def epoch_seed_fn(seed: int, process_index: int) -> Callable:
  """epoch (int64 tensor) -> int64 [2] seed of the shuffled order of that epoch."""
  tf = tf_setup.tf()
  key = tf.constant([seed, 2 * process_index + 1], tf.int64)
  return lambda epoch: tf.cast(tf.random.experimental.stateless_fold_in(key, epoch), tf.int64)


def _example_fn(load: Callable, preprocess: Callable, seed: int, process_index: int):
  """element -> {'image', 'label' int32, 'pos', ...}; runs in the parallel map."""
  tf = tf_setup.tf()
  key = tf.constant([seed, 2 * process_index], tf.int64)

  @tf.autograph.experimental.do_not_convert  # No Python control flow; converting is slow.
  def fn(element):
    example = dict(load(element))
    example_seed = tf.random.experimental.stateless_fold_in(key, tf.maximum(example['pos'], 0))
    example['image'] = preprocess(example.pop('data'), example_seed)
    example['label'] = tf.cast(example['label'], tf.int32)
    return example

  return fn


def train_dataset(part, *, preprocess: Callable, local_batch: int, seed: int,
                  process_index: int, start: int, shuffle_buffer: int):
  """Endless batches of this process's part, starting at stream position `start`.

  Args:
    part: FolderPart or TfdsPart of this process.
    preprocess: (encoded tf.string, int [2] seed) -> [crop, crop, 3] image.
    local_batch: rows per batch on this process.
    seed: the run's seed.
    process_index: this process (mixed into all seeds).
    start: stream position of the first record (0 for a fresh run).
    shuffle_buffer: used by TFDS parts (image folders shuffle whole epochs exactly).

  Returns:
    tf.data.Dataset of {'image': [B, crop, crop, 3] (preprocess's dtype), 'label': int32 [B],
    'pos': int64 [B], 'epoch_start': int64 [B] (ignore)}, B = local_batch.
  """
  tf = tf_setup.tf()
  stream, load = part.train_stream(start, epoch_seed_fn(seed, process_index), shuffle_buffer)
  ds = stream.map(_example_fn(load, preprocess, seed, process_index),
                  num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.ignore_errors()

  def check(last_good, x):
    """Fails at an epoch's marker when nothing was readable since that epoch began."""
    is_marker = x['pos'] < 0
    ok = tf.logical_or(tf.logical_not(is_marker), last_good >= x['epoch_start'])
    with tf.control_dependencies([tf.debugging.Assert(ok, [NO_READABLE_IMAGE])]):
      last_good = tf.identity(tf.where(is_marker, last_good, x['pos']))
    return last_good, x

  ds = ds.scan(tf.constant(start - 1, tf.int64), check)
  ds = ds.filter(lambda x: x['pos'] >= 0)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(options())


def eval_dataset(part, *, preprocess: Callable, local_batch: int, num_batches: int, crop: int,
                 image_dtype: str = 'float32'):
  """Exactly `num_batches` batches: every record of the part once, then padding rows.

  Returns:
    tf.data.Dataset of {'image': [B, crop, crop, 3] of image_dtype (preprocess's output dtype),
    'label': int32 [B],
    'mask': float32 [B] (1 real, 0 padding), 'pos': int64 [B] (-1 on padding)}.
  """
  tf = tf_setup.tf()
  stream, load = part.eval_stream()
  ds = stream.map(_example_fn(load, lambda data, seed: preprocess(data), 0, 0),
                  num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.ignore_errors().map(lambda x: dict(x, mask=tf.constant(1.0)))
  padding = tf.data.Dataset.from_tensors({
      'image': tf.zeros([crop, crop, 3], image_dtype), 'label': tf.constant(0, tf.int32),
      'pos': tf.constant(-1, tf.int64), 'mask': tf.constant(0.0)}).repeat()
  ds = ds.concatenate(padding).take(num_batches * local_batch)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(options())
