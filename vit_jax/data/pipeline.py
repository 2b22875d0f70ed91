"""tf.data pipelines: the endless, resumable train stream and the padded one-pass eval stream.

Train stream of one process, record by record: records are numbered by their local
position k = 0, 1, 2, ... in the endless stream, and the stream is a pure function of
(seed, process, start position): starting at k gives exactly what an uninterrupted run gives
from k on, and tf.data's threads cannot change the result. Images are decoded after
shuffling. Two kinds of parts supply it:
- random access (image folders; TFDS splits small enough to hold in memory): the global
  order of `global_order` -- the same global batches for any number of processes, and any
  position reached without reading the ones before it;
- streamed (larger TFDS splits): each process's own part, in an order the part defines
  (`TfdsFilePart`: files shuffled per epoch, then exact shuffles within windows).
Unreadable images are dropped (`ignore_errors`); every element carries its position `pos`
so the host sees the gaps, counts and names them. A marker element (pos = -1) after each
epoch (of this process's share) lets the stream fail with a clear error instead of spinning
forever when no image of a whole epoch can be read.

A random-access part supplies `num_examples` and `load(index)` -> {'data': encoded image,
'label'}; a streamed part `train_stream(start, epoch_seed, shuffle_buffer)` -> (cheap
sequential dataset, load), where load(element) runs inside the parallel map and returns
{'data', 'label', 'pos', 'epoch_start'}. Both supply `eval_stream()`.
"""

from collections.abc import Callable

from vit_jax.data import preprocess as preprocess_lib
from vit_jax.data import tf_setup

FOREVER = 2**62  # Length of the endless streams.
NO_READABLE_IMAGE = 'vit_jax.data: no readable image in a whole epoch'


def options():
  """tf.data options: deterministic order, one thread per op (parallelism is per element)."""
  tf = tf_setup.tf()
  opts = tf.data.Options()
  opts.deterministic = True
  opts.threading.max_intra_op_parallelism = 1
  return opts


def epoch_seed_fn(seed: int, salt: int) -> Callable:
  """epoch (int64 tensor) -> int64 [2] seed of the shuffled order of that epoch.

  salt: 0 for the global order of random-access parts, process index + 1 for streamed parts.
  """
  tf = tf_setup.tf()
  key = tf.constant([seed, 2 * salt + 1], tf.int64)
  return lambda epoch: tf.cast(tf.random.experimental.stateless_fold_in(key, epoch), tf.int64)


def _example_fn(load: Callable, preprocess: Callable, seed: int, salt: int):
  """element -> {'image', 'label' int32, 'pos', ...}; runs in the parallel map.

  The example's augmentation seed derives from (seed, salt, the element's 'aug' position,
  by default its 'pos').
  """
  tf = tf_setup.tf()
  key = tf.constant([seed, 2 * salt], tf.int64)

  @tf.autograph.experimental.do_not_convert  # No Python control flow; converting is slow.
  def fn(element):
    example = dict(load(element))
    aug = example.pop('aug') if 'aug' in example else example['pos']
    example_seed = tf.random.experimental.stateless_fold_in(key, tf.maximum(aug, 0))
    example['image'] = preprocess(example.pop('data'), example_seed)
    example['label'] = tf.cast(example['label'], tf.int32)
    return example

  return fn


def random_access_stream(part, share, start: int, epoch_seed: Callable):
  """(endless dataset of slots, load) of a random-access part, from local position `start`.

  Each "epoch" of the process's share (share.epoch_share positions) is followed by a marker
  slot. A slot is one int64, so leaving out positions costs nothing; the index math, the
  reading and the decoding happen in the parallel map that calls `load`.
  """
  tf = tf_setup.tf()
  n, m = part.num_examples, share.epoch_share
  placeholder = preprocess_lib.placeholder_png()

  def load(slot):
    q, i = slot // (m + 1), slot % (m + 1)
    is_marker = tf.equal(i, m)
    k = q * m + tf.minimum(i, m - 1)
    g = share.global_position_tf(k)
    j = tf.random.experimental.index_shuffle(g % n, epoch_seed(g // n), n - 1)
    record = tf.cond(
      is_marker,
      lambda: {'data': placeholder, 'label': tf.constant(-1, tf.int64)},
      lambda: part.load(j),
    )
    return dict(
      record, pos=tf.where(is_marker, tf.constant(-1, tf.int64), k), epoch_start=q * m, aug=g
    )

  first = (start // m) * (m + 1) + start % m
  return tf.data.Dataset.range(first, FOREVER), load


def record_at(part, share, position: int, epoch_seed) -> int:
  """Index of the record at local position `position` of a random-access part's stream."""
  tf = tf_setup.tf()
  g = int(share.global_position(position))
  n = part.num_examples
  return int(
    tf.random.experimental.index_shuffle(
      tf.constant(g % n, tf.int64), epoch_seed(tf.constant(g // n, tf.int64)), n - 1
    )
  )


def train_dataset(
  part,
  *,
  preprocess: Callable,
  local_batch: int,
  seed: int,
  share,
  process_index: int,
  start: int,
  shuffle_buffer: int,
):
  """Endless batches of this process's part, starting at local position `start`.

  Args:
    part: random-access part of the whole split (with `share`), or this process's streamed
      part (`share` None).
    preprocess: (encoded tf.string, int [2] seed) -> [crop, crop, 3] image.
    local_batch: rows per batch on this process.
    seed: the run's seed.
    share: global_order.Share of this process, for random-access parts.
    process_index: this process (mixed into the seeds of streamed parts).
    start: local position of the first record (0 for a fresh run).
    shuffle_buffer: used by streamed parts (random-access epochs are full permutations).

  Returns:
    tf.data.Dataset of {'image': [B, crop, crop, 3] (preprocess's dtype), 'label': int32 [B],
    'pos': int64 [B], 'epoch_start': int64 [B] (ignore)}, B = local_batch.
  """
  tf = tf_setup.tf()
  salt = 0 if share is not None else process_index + 1
  if share is not None:
    stream, load = random_access_stream(part, share, start, epoch_seed_fn(seed, salt))
  else:
    stream, load = part.train_stream(start, epoch_seed_fn(seed, salt), shuffle_buffer)
  ds = stream.map(_example_fn(load, preprocess, seed, salt), num_parallel_calls=tf.data.AUTOTUNE)
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


def eval_dataset(
  part,
  *,
  preprocess: Callable,
  local_batch: int,
  num_batches: int,
  crop: int,
  image_dtype: str = 'float32',
):
  """Exactly `num_batches` batches: every record of the part once, then padding rows.

  Returns:
    tf.data.Dataset of {'image': [B, crop, crop, 3] of image_dtype (preprocess's output dtype),
    'label': int32 [B],
    'mask': float32 [B] (1 real, 0 padding), 'pos': int64 [B] (-1 on padding)}.
  """
  tf = tf_setup.tf()
  stream, load = part.eval_stream()
  ds = stream.map(
    _example_fn(load, lambda data, seed: preprocess(data), 0, 0),
    num_parallel_calls=tf.data.AUTOTUNE,
  )
  ds = ds.ignore_errors().map(lambda x: dict(x, mask=tf.constant(1.0)))
  padding = tf.data.Dataset.from_tensors(
    {
      'image': tf.zeros([crop, crop, 3], image_dtype),
      'label': tf.constant(0, tf.int32),
      'pos': tf.constant(-1, tf.int64),
      'mask': tf.constant(0.0),
    }
  ).repeat()
  ds = ds.concatenate(padding).take(num_batches * local_batch)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(options())
