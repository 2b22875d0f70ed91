"""Per-process splits, eval padding, exact resume, determinism and hand-off to the mesh."""

import collections
import json
import subprocess
import sys

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest
from sklearn import datasets

from vit_jax import data
from vit_jax.data import digits_builder
from vit_jax.data import pipeline
from vit_jax.data import synthetic
from vit_jax.data import tf_setup
from vit_jax.data import tfds_source


@pytest.fixture(scope='module')
def digits_dir(digits_data_dir):
  """The test run's TFDS data_dir with sklearn_digits prepared (conftest), read only here."""
  return digits_data_dir


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  """train: 23 smooth 24x32 JPEGs in 3 classes; test: 9 PNGs."""
  root = str(tmp_path_factory.mktemp('folder'))
  images = synthetic.smooth_images(32, 24, 32, seed=0, noise=3)
  labels = np.arange(32) % 3
  synthetic.write_image_folder(root, 'train', images[:23], labels[:23], ['a', 'b', 'c'], ext='jpg')
  synthetic.write_image_folder(root, 'test', images[23:], labels[23:], ['a', 'b', 'c'])
  return root


def _digit_keys(images, labels):
  """(label, image bytes) of 8x8 digits that went through the pipeline without resizing."""
  pixels = np.round((images[..., 0] + 1.0) * 127.5).astype(np.uint8)
  return [(int(l), p.tobytes()) for p, l in zip(pixels, labels)]


def _sklearn_keys(split):
  digits = datasets.load_digits()
  rows = digits_builder.split_indices(digits.target)[split]
  return collections.Counter(
    _digit_keys(
      digits_builder.to_uint8(digits.images[rows])[..., None] / 127.5 - 1.0, digits.target[rows]
    )
  )


def _global_batches(process_count, n, **kwargs):
  """The first n global batches, each the processes' rows concatenated in process order."""
  its = [
    data.train_iterator(process_index=i, process_count=process_count, **kwargs)
    for i in range(process_count)
  ]
  batches = [[next(it) for it in its] for _ in range(n)]
  return [
    {k: np.concatenate([b[k] for b in parts]) for k in ('image', 'label')} for parts in batches
  ]


def test_processes_read_disjoint_complete_epochs_of_one_global_order(digits_dir):
  """Random access (a small TFDS split in memory): the global batches do not depend on the
  process count, and each epoch's records, over all processes, are the split exactly once."""
  args = dict(
    dataset='sklearn_digits',
    split='train',
    global_batch=64,
    crop=8,
    area_range=(1.0, 1.0),
    flip=False,
    data_dir=digits_dir,
    seed=3,
  )
  one = _global_batches(1, 46, **args)
  for count in (2, 4):
    many = _global_batches(count, 46, **args)
    for a, b in zip(one, many):
      np.testing.assert_array_equal(a['image'], b['image'])
      np.testing.assert_array_equal(a['label'], b['label'])
  images = np.concatenate([b['image'] for b in one])
  labels = np.concatenate([b['label'] for b in one])
  for epoch in range(2):  # 46 * 64 = 2944 >= 2 epochs of 1437.
    rows = slice(epoch * 1437, (epoch + 1) * 1437)
    assert collections.Counter(_digit_keys(images[rows], labels[rows])) == _sklearn_keys('train')
  assert not np.array_equal(images[:1437], images[1437:2874])  # A new order each epoch.


def test_streamed_tfds_parts_are_disjoint_and_complete(digits_dir, monkeypatch):
  """Splits too large for memory: each process streams its TFDS even split, all of it once
  per epoch, disjoint from the other process's."""
  monkeypatch.setattr(tfds_source, 'IN_MEMORY_MAX_BYTES', 0)
  union = collections.Counter()
  for index in range(2):
    it = data.train_iterator(
      'sklearn_digits',
      'train',
      global_batch=64,
      crop=8,
      area_range=(1.0, 1.0),
      flip=False,
      data_dir=digits_dir,
      shuffle_buffer=100,
      process_index=index,
      process_count=2,
    )
    size = it.num_local_examples
    assert size == (719, 718)[index]  # TFDS's even split of 1437 in 2.
    rows = [next(it) for _ in range(23)]  # 23 * 32 = 736 >= the part.
    images = np.concatenate([b['image'] for b in rows])
    labels = np.concatenate([b['label'] for b in rows])
    part = collections.Counter(_digit_keys(images[:size], labels[:size]))
    assert sum(part.values()) == size and max(part.values()) == 1  # Each example once.
    assert not set(part) & set(union)  # No overlap with the other process.
    union += part
  assert union == _sklearn_keys('train')


def test_two_processes_eval_every_example_once_and_same_length(digits_dir):
  union = collections.Counter()
  lengths = []
  for index in range(2):
    ev = data.eval_iterator(
      'sklearn_digits',
      'train',
      global_batch=64,
      crop=8,
      data_dir=digits_dir,
      process_index=index,
      process_count=2,
    )
    lengths.append(len(ev))
    batches = list(ev)
    assert len(batches) == len(ev)
    for b in batches:
      real = b['mask'] > 0
      union.update(_digit_keys(b['image'][real], b['label'][real]))
  assert lengths == [23, 23]  # ceil(719 / 32) on both, although the parts are 718 and 719.
  assert sum(union.values()) == 1437
  assert union == _sklearn_keys('train')


def test_eval_padding_masks_the_remainder(digits_dir):
  ev = data.eval_iterator(
    'sklearn_digits',
    'test',
    global_batch=100,
    crop=8,
    data_dir=digits_dir,
    process_index=0,
    process_count=1,
  )
  batches = list(ev)
  assert len(ev) == 4 and len(batches) == 4
  masks = np.stack([b['mask'] for b in batches])
  assert masks.dtype == np.float32 and masks.sum() == 360  # Not 300: nothing dropped.
  assert masks[:3].all() and masks[3, :60].all() and not masks[3, 60:].any()
  assert (batches[3]['image'][60:] == 0).all() and (batches[3]['label'][60:] == 0).all()
  assert len(list(ev)) == 4  # Re-iterable: another full pass.


def test_two_processes_folder_parts(folder):
  paths = []
  for index in range(2):
    ev = data.eval_iterator(
      folder, 'train', global_batch=4, crop=8, process_index=index, process_count=2
    )
    assert len(ev) == 6  # ceil(12 / 2) on both processes.
    assert ev.num_local_examples == (12, 11)[index]
    paths.extend(ev._part.paths)
    assert sum(float(b['mask'].sum()) for b in ev) == (12, 11)[index]
  assert len(paths) == 23 and len(set(paths)) == 23


def _take(it, n):
  return [next(it) for _ in range(n)]


@pytest.mark.parametrize('kind', ['folder', 'tfds', 'tfds_streamed'])
def test_resume_continues_with_exactly_the_next_batch(kind, folder, digits_dir, monkeypatch):
  """Batch k after save/restore == batch k of an uninterrupted run (across epoch ends and,
  streamed, across shuffle windows)."""
  if kind == 'tfds_streamed':
    monkeypatch.setattr(tfds_source, 'IN_MEMORY_MAX_BYTES', 0)
  if kind == 'folder':
    args = dict(dataset=folder, split='train', global_batch=4, crop=16)
  else:
    args = dict(
      dataset='sklearn_digits',
      split='test',
      global_batch=64,
      crop=16,
      data_dir=digits_dir,
      randaugment=(2, 9),
      shuffle_buffer=100,
    )
  args.update(seed=7, process_index=0, process_count=1)
  # The uninterrupted run, saving its state (as with a checkpoint) after 3 batches (inside the
  # first epoch) and after 9 (in a later epoch).
  it, reference, states = data.train_iterator(**args), [], {}
  for i in range(14):
    if i in (3, 9):
      states[i] = json.loads(json.dumps(it.get_state()))
    reference.append(next(it))
  for k, state in states.items():
    assert state['batches'] == k and state['positions'] == {'0': k * args['global_batch']}
    resumed = data.train_iterator(**args, state=state)
    for i, batch in enumerate(_take(resumed, 14 - k)):
      for key in ('image', 'label'):
        np.testing.assert_array_equal(batch[key], reference[k + i][key])


def test_same_seed_same_batches_other_seed_other_batches(folder):
  args = dict(global_batch=4, crop=16, process_index=0, process_count=1)
  a = _take(data.train_iterator(folder, 'train', seed=1, **args), 3)
  b = _take(data.train_iterator(folder, 'train', seed=1, **args), 3)
  c = _take(data.train_iterator(folder, 'train', seed=2, **args), 3)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['image'], y['image'])
  assert not all(np.array_equal(x['image'], z['image']) for x, z in zip(a, c))


def test_epochs_are_reshuffled(folder):
  it = data.train_iterator(
    folder,
    'train',
    global_batch=23,
    crop=8,
    process_index=0,
    process_count=1,
    area_range=(1.0, 1.0),
    flip=False,
  )
  first, second = next(it), next(it)  # One batch is exactly one epoch here.
  assert sorted(first['label'].tolist()) == sorted(second['label'].tolist())
  assert not np.array_equal(first['image'], second['image'])  # Another order.
  assert sorted(first['image'].sum(axis=(1, 2, 3)).tolist()) == pytest.approx(
    sorted(second['image'].sum(axis=(1, 2, 3)).tolist()), abs=1e-3
  )  # Same images.


def test_state_must_match_the_iterator(folder):
  args = dict(global_batch=4, crop=8, process_index=0, process_count=2)
  it = data.train_iterator(folder, 'train', **args)
  next(it)
  state = it.get_state()
  with pytest.raises(data.DataError, match='global_batch=4 but this iterator has global_batch=8'):
    data.train_iterator(folder, 'train', **dict(args, global_batch=8), state=state)
  with pytest.raises(data.DataError, match='no position for process 1'):
    data.train_iterator(folder, 'train', **dict(args, process_index=1), state=state)
  with pytest.raises(data.DataError, match='not a state'):
    data.train_iterator(folder, 'train', **args, state={'position': 3})
  with pytest.raises(data.DataError, match='num_examples=23 but this iterator has num_examples=12'):
    data.train_iterator(folder, 'train[:50%]', **args, state=dict(state, split='train[:50%]'))


def test_sharded_global_arrays_equal_host_rows(folder):
  devices = jax.devices()
  assert len(devices) == 8
  sharding = NamedSharding(
    Mesh(np.array(devices).reshape(4, 2), ('data', 'fsdp')), P(('data', 'fsdp'))
  )
  args = dict(global_batch=16, crop=8, seed=3)
  host = next(data.train_iterator(folder, 'train', **args))
  it = data.train_iterator(folder, 'train', sharding=sharding, **args)
  batch = next(it)
  for key in ('image', 'label'):
    assert isinstance(batch[key], jax.Array) and batch[key].sharding == sharding
    assert batch[key].shape == host[key].shape
    assert len(batch[key].addressable_shards) == 8
    assert batch[key].addressable_shards[0].data.shape[0] == 2
    np.testing.assert_array_equal(np.asarray(batch[key]), host[key])
  step = jax.jit(lambda b: b['image'].mean(axis=(1, 2, 3)) + b['label'], in_shardings=(sharding,))
  assert step(batch).shape == (16,)
  ev = data.eval_iterator(folder, 'test', global_batch=16, crop=8, sharding=sharding)
  batches = list(ev)
  assert len(batches) == 1 and float(jax.numpy.sum(batches[0]['mask'])) == 9.0
  assert batches[0]['mask'].sharding == sharding


def test_importing_data_does_not_import_tensorflow():
  code = (
    'import sys, vit_jax.data as d; assert callable(d.train_iterator); '
    'print("tensorflow" in sys.modules)'
  )
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == 'False'


def test_uint8_batches_are_the_float_batches_rounded(folder):
  """The trainer's hand-off: same examples, order and labels as float32, pixels in uint8."""
  args = dict(global_batch=8, crop=16, seed=4, process_index=0, process_count=1)
  floats = _take(data.train_iterator(folder, 'train', **args), 3)
  ints = _take(data.train_iterator(folder, 'train', image_dtype='uint8', **args), 3)
  for f, u in zip(floats, ints):
    assert u['image'].dtype == np.uint8 and u['image'].shape == (8, 16, 16, 3)
    np.testing.assert_array_equal(f['label'], u['label'])
    assert np.abs((f['image'] + 1.0) * 127.5 - u['image']).max() <= 0.5 + 1e-3
  ev = data.eval_iterator(
    folder, 'test', global_batch=4, crop=12, image_dtype='uint8', process_index=0, process_count=1
  )
  batches = list(ev)
  assert all(b['image'].dtype == np.uint8 for b in batches)
  assert batches[-1]['mask'].sum() == 1 and (batches[-1]['image'][1:] == 0).all()  # 9 = 8 + 1.
  with pytest.raises(data.DataError, match="image_dtype='float16'; use one of"):
    data.train_iterator(folder, 'train', image_dtype='float16', **args)


def _piece_orders(part, seed, epochs, size):
  """Per epoch, the order in which the streamed part's files (pieces) were read."""
  tf = tf_setup.tf()
  stored = {r: i for i, r in enumerate(tf.data.TFRecordDataset(part._files[0]).as_numpy_iterator())}
  stream, _ = part.train_stream(0, pipeline.epoch_seed_fn(seed, 1), size)
  n = part.num_examples
  records = [x for x in stream.take(epochs * (n + 1)).as_numpy_iterator() if x['pos'] >= 0]
  orders = []
  for e in range(epochs):
    index = np.array([stored[x['data']] for x in records[e * n : (e + 1) * n]])
    assert sorted(index) == list(range(n))  # Each record once per epoch.
    windows = index.reshape(-1, size) // size  # Window w holds one whole piece.
    assert (windows == windows[:, :1]).all()
    assert not (np.diff(index.reshape(-1, size)) == 1).all()  # Shuffled within the window.
    orders.append(tuple(windows[:, 0]))
  return orders


def test_streamed_files_are_shuffled_per_epoch_from_seed_and_epoch(digits_dir):
  tf = tf_setup.tf()
  builder = data.get_dataset_info('sklearn_digits', data_dir=digits_dir).source.builder
  part = tfds_source.TfdsFilePart(builder, 'test', 'sklearn_digits test')
  # The split's one file, as four files: its four quarters of 90 records.
  part._files = tf.stack([part._files[0]] * 4)
  part._skips = tf.constant([0, 90, 180, 270], tf.int64)
  part._takes = tf.constant([90] * 4, tf.int64)
  orders = _piece_orders(part, seed=5, epochs=4, size=90)
  assert all(sorted(o) == [0, 1, 2, 3] for o in orders)
  assert len(set(orders)) > 1  # The file order changes with the epoch ...
  assert _piece_orders(part, seed=5, epochs=4, size=90) == orders  # ... and is reproducible,
  assert _piece_orders(part, seed=6, epochs=4, size=90) != orders  # ... and seed-dependent.


def test_resume_with_another_process_count(digits_dir, monkeypatch):
  """Random access: a state saved by 1 process restores on 2 (the global order is the same);
  a streamed split refuses, in one line."""
  args = dict(
    dataset='sklearn_digits',
    split='train',
    global_batch=64,
    crop=8,
    area_range=(1.0, 1.0),
    flip=False,
    data_dir=digits_dir,
    seed=3,
  )
  reference = _global_batches(1, 30, **args)
  it = data.train_iterator(process_index=0, process_count=1, **args)
  _take(it, 25)
  state = it.get_state()
  its = [
    data.train_iterator(process_index=i, process_count=2, state=state, **args) for i in range(2)
  ]
  for k in range(25, 30):
    parts = [next(i) for i in its]
    np.testing.assert_array_equal(
      np.concatenate([p['image'] for p in parts]), reference[k]['image']
    )
  monkeypatch.setattr(tfds_source, 'IN_MEMORY_MAX_BYTES', 0)
  it = data.train_iterator(process_index=0, process_count=1, **args)
  next(it)
  with pytest.raises(
    data.DataError, match='saved with process_count=1 but this iterator has process_count=2'
  ):
    data.train_iterator(process_index=0, process_count=2, state=it.get_state(), **args)
