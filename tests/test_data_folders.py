"""Image folders end to end: layout, labels, shapes, dtypes, value range; real MNIST digits."""

import collections
import os

import numpy as np
import pytest

from vit_jax import data
from vit_jax.data import splits
from vit_jax.data import synthetic
from vit_jax.data import tf_setup

COLOURS = {'cat': (220, 40, 40), 'dog': (40, 220, 40), 'zebra': (40, 40, 220)}
FORMATS = ('jpg', 'png', 'bmp', 'gif', 'jpeg')


def _write_coloured(root, split, counts, seed):
  """Class k's images are mostly COLOURS[k] (so labels can be checked from pixels)."""
  rng = np.random.default_rng(seed)
  for name, count in counts.items():
    for i in range(count):
      h, w = rng.integers(20, 60, size=2)
      texture = synthetic.smooth_images(1, h, w, seed=seed * 100 + i)[0].astype(np.float32)
      image = np.clip(np.array(COLOURS[name]) + 0.15 * (texture - 128), 0, 255).astype(np.uint8)
      synthetic.write_image_folder(root, split, [image], [0], [name], ext=FORMATS[i % 5])
      os.rename(
        os.path.join(root, split, name, f'000000.{FORMATS[i % 5]}'),
        os.path.join(root, split, name, f'{i:03d}.{FORMATS[i % 5]}'),
      )


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('folder'))
  _write_coloured(root, 'train', {'cat': 6, 'dog': 5}, seed=1)  # No zebra in train.
  _write_coloured(root, 'test', {'cat': 2, 'dog': 2, 'zebra': 3}, seed=2)
  return root


def test_info_labels_are_sorted_union_of_class_folders(folder):
  info = data.get_dataset_info(folder)
  assert info.kind == 'folder'
  assert info.name == folder
  assert info.class_names == ('cat', 'dog', 'zebra')
  assert info.num_classes == 3
  assert info.split_sizes == {'test': 7, 'train': 11}
  assert info.num_examples('train[:50%]') == 6  # round(5.5) == 6 as in TFDS (banker's: 6).
  assert info.num_examples('train+test') == 18


def _dominant_class(images):
  return np.argmax(images.mean(axis=(1, 2)), axis=-1)  # Red, green, blue -> 0, 1, 2.


def test_train_pipeline_end_to_end(folder):
  it = data.train_iterator(
    folder, 'train', global_batch=4, crop=16, seed=3, process_index=0, process_count=1
  )
  labels = []
  for _ in range(11):  # 44 rows = 4 epochs of 11 files.
    batch = next(it)
    assert set(batch) == {'image', 'label'}
    assert batch['image'].shape == (4, 16, 16, 3) and batch['image'].dtype == np.float32
    assert batch['label'].shape == (4,) and batch['label'].dtype == np.int32
    assert batch['image'].min() >= -1.0 and batch['image'].max() <= 1.0
    np.testing.assert_array_equal(_dominant_class(batch['image']), batch['label'])
    labels.extend(batch['label'].tolist())
  assert collections.Counter(labels) == {0: 24, 1: 20}  # 6 cats and 5 dogs, 4 epochs.


def test_eval_pipeline_labels_and_values(folder):
  ev = data.eval_iterator(folder, 'test', global_batch=4, crop=12, process_index=0, process_count=1)
  assert len(ev) == 2 and ev.num_examples == 7
  labels, masks = [], []
  for batch in ev:
    real = batch['mask'] > 0
    np.testing.assert_array_equal(_dominant_class(batch['image'][real]), batch['label'][real])
    assert (batch['image'][~real] == 0).all() and (batch['label'][~real] == 0).all()
    labels.extend(batch['label'][real].tolist())
    masks.extend(batch['mask'].tolist())
  assert sorted(labels) == [0, 0, 1, 1, 2, 2, 2]  # Zebra (absent from train) is label 2.
  assert masks == [1.0] * 7 + [0.0]


def test_split_strings_match_tfds(tmp_path):
  """Folder split strings resolve like TFDS's (checked against TFDS on sklearn_digits)."""
  tfds = tf_setup.tfds()
  data.get_dataset_info('sklearn_digits', data_dir=str(tmp_path))
  builder = tfds.builder('sklearn_digits', data_dir=str(tmp_path))
  sizes = {'train': 1437, 'test': 360}
  for spec in (
    'train',
    'train[:98%]',
    'train[98%:]',
    'train[10:-10]',
    'train[:33%]+test',
    'test[-5%:]',
    'test[:-1]',
    'train[50%:51%]',
  ):
    ours = sum(b - a for _, a, b in splits.resolve(spec, sizes))
    assert ours == builder.info.splits[spec].num_examples, spec
  assert splits.resolve('train[98%:]', sizes) == [('train', 1408, 1437)]


def test_even_parts_cover_range_once():
  for n, count in ((10, 3), (1437, 2), (5, 8)):
    parts = [splits.even_part(n, i, count) for i in range(count)]
    covered = [k for a, b in parts for k in range(a, b)]
    assert covered == list(range(n))
    assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1
  assert splits.part_sizes(1437, 2) == [719, 718]  # Larger parts first, as tfds.even_splits.
  assert splits.part_sizes(10, 3) == [4, 3, 3]


@pytest.fixture
def mnist_folder(tmp_path_factory, shared_dir):
  """300 real MNIST test digits written as PNG files: train 200 / test 100."""
  mnist = os.path.join(shared_dir, 'data', 'mnist')
  images, labels = synthetic.read_mnist_idx(
    os.path.join(mnist, 't10k-images-idx3-ubyte.gz'),
    os.path.join(mnist, 't10k-labels-idx1-ubyte.gz'),
  )
  root = str(tmp_path_factory.mktemp('mnist'))
  names = [str(d) for d in range(10)]
  synthetic.write_image_folder(root, 'train', images[:200], labels[:200], names)
  synthetic.write_image_folder(root, 'test', images[200:300], labels[200:300], names)
  return root, images[:300], labels[:300]


def test_mnist_digits_as_png_folder_eval(mnist_folder):
  root, images, labels = mnist_folder
  assert images.shape == (300, 28, 28) and labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
  info = data.get_dataset_info(root)
  assert info.class_names == tuple(str(d) for d in range(10))
  assert info.split_sizes == {'train': 200, 'test': 100}
  # Eval order is (class name, file name); files are named by their MNIST index.
  order = sorted(range(200, 300), key=lambda i: (str(labels[i]), f'{i - 200:06d}'))
  ev = data.eval_iterator(root, 'test', global_batch=32, crop=28, process_index=0, process_count=1)
  got_images, got_labels = [], []
  for batch in ev:
    real = batch['mask'] > 0
    got_images.append(batch['image'][real])
    got_labels.append(batch['label'][real])
  got_images, got_labels = np.concatenate(got_images), np.concatenate(got_labels)
  assert got_images.shape == (100, 28, 28, 3) and got_images.dtype == np.float32
  np.testing.assert_array_equal(got_labels, labels[order])
  # float32 x / 127.5 - 1 and back is within ~5e-5 of the integer level: rounding recovers it.
  pixels = np.round((got_images + 1.0) * 127.5).astype(np.uint8)
  np.testing.assert_array_equal(pixels[..., 0], images[order])  # Gray -> RGB, exact values.
  np.testing.assert_array_equal(pixels[..., 2], images[order])


def test_mnist_digits_train_epoch_has_every_label(mnist_folder):
  root, _, labels = mnist_folder
  it = data.train_iterator(
    root, 'train', global_batch=40, crop=32, area_range=(0.5, 1.0), process_index=0, process_count=1
  )
  epoch = [next(it) for _ in range(5)]  # 200 rows: exactly one epoch.
  got = np.concatenate([b['label'] for b in epoch])
  assert np.bincount(got, minlength=10).tolist() == np.bincount(labels[:200], minlength=10).tolist()
  images = np.concatenate([b['image'] for b in epoch])
  assert images.shape == (200, 32, 32, 3)
  assert images.min() == -1.0 and images.max() <= 1.0  # MNIST backgrounds are black.


def test_non_images_and_classes_train_lacks_are_warned_once(tmp_path, caplog):
  root = str(tmp_path)
  _write_coloured(root, 'train', {'cat': 2, 'dog': 1}, seed=3)
  _write_coloured(root, 'test', {'cat': 1, 'zebra': 1}, seed=4)
  for rel in (
    'train/cat/notes.txt',
    'train/dog/labels.csv',
    'train/dog/README.txt',
    'train/dog/.DS_Store',
  ):
    with open(os.path.join(root, rel), 'w') as f:
      f.write('x\n')
  with caplog.at_level('WARNING'):
    info = data.get_dataset_info(root)
  assert info.split_sizes == {'test': 2, 'train': 3}
  assert [r.getMessage() for r in caplog.records] == [
    f'Ignored 3 files that are not images (.csv, .txt) in {root}/train.',
    f'Classes in {root}/test that {root}/train lacks (never trained on): zebra.',
  ]
