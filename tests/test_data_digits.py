"""The built-in offline dataset `sklearn_digits`: real data, fixed split, same path as TFDS."""

import collections

import numpy as np
import pytest
from sklearn import datasets

from vit_jax import data
from vit_jax.data import digits_builder
from vit_jax.data import tf_setup

# Label counts of the real data (sklearn's load_digits()).
DIGIT_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('tfds'))
  data.get_dataset_info('sklearn_digits', data_dir=path)  # Prepares it.
  return path


@pytest.fixture(scope='module')
def sklearn_digits():
  return datasets.load_digits()


def _examples(data_dir, split):
  """All stored examples of a split as numpy: image [N, 8, 8, 1], label [N], index [N]."""
  tfds = tf_setup.tfds()
  ds = tfds.builder('sklearn_digits', data_dir=data_dir).as_dataset(split=split)
  rows = list(ds.as_numpy_iterator())
  return (
    np.stack([r['image'] for r in rows]),
    np.array([r['label'] for r in rows]),
    np.array([r['index'] for r in rows]),
  )


def test_info_and_fixed_split(data_dir):
  info = data.get_dataset_info('sklearn_digits', data_dir=data_dir)
  assert info.kind == 'tfds'
  assert info.num_classes == 10
  assert info.class_names == tuple(str(i) for i in range(10))
  assert info.split_sizes == {'train': 1437, 'test': 360}
  assert info.num_examples('train[:98%]') == 1408  # round(0.98 * 1437), TFDS rounding.
  assert info.data_dir == data_dir


def test_examples_are_sklearns_images_and_labels(data_dir, sklearn_digits):
  seen = []
  for split in ('train', 'test'):
    images, labels, index = _examples(data_dir, split)
    expected = digits_builder.to_uint8(sklearn_digits.images[index])[..., None]
    np.testing.assert_array_equal(images, expected)
    np.testing.assert_array_equal(labels, sklearn_digits.target[index])
    seen.append(index)
  all_rows = np.concatenate(seen)
  assert len(all_rows) == 1797 and len(set(all_rows.tolist())) == 1797  # Each row once.


def test_label_counts_are_the_real_data(data_dir):
  _, train_labels, _ = _examples(data_dir, 'train')
  _, test_labels, _ = _examples(data_dir, 'test')
  assert np.bincount(test_labels).tolist() == [36] * 10  # Stratified: all ten digits.
  assert np.bincount(train_labels).tolist() == [c - 36 for c in DIGIT_COUNTS]
  assert (np.bincount(train_labels) + np.bincount(test_labels)).tolist() == DIGIT_COUNTS


def test_split_is_fixed_and_documented(sklearn_digits):
  rows = digits_builder.split_indices(sklearn_digits.target)
  assert len(rows['train']) == 1437 and len(rows['test']) == 360
  assert not set(rows['train'].tolist()) & set(rows['test'].tolist())
  # The first rows, pinned: a change of the split would silently change reported numbers.
  assert rows['test'][:8].tolist() == [4, 5, 6, 9, 14, 17, 18, 19]
  assert rows['train'][:8].tolist() == [0, 1, 2, 3, 7, 8, 10, 11]
  order = np.random.RandomState(0).permutation(1797)
  first_zeros = [r for r in order if sklearn_digits.target[r] == 0][:36]
  assert sorted(first_zeros) == sorted(r for r in rows['test'] if sklearn_digits.target[r] == 0)


def test_pixel_mapping_and_known_pixels(data_dir, sklearn_digits):
  assert digits_builder.to_uint8(np.array([0, 1, 8, 15, 16])).tolist() == [0, 16, 128, 239, 255]
  # Row 0 of sklearn's first image is 0 0 5 13 9 1 0 0 (a zero).
  assert sklearn_digits.images[0][0].tolist() == [0, 0, 5, 13, 9, 1, 0, 0]
  for split in ('train', 'test'):
    images, labels, index = _examples(data_dir, split)
    if 0 in index:
      k = int(np.flatnonzero(index == 0)[0])
      assert images[k, 0, :, 0].tolist() == [0, 0, 80, 207, 143, 16, 0, 0]
      assert labels[k] == 0


def test_pipeline_yields_every_real_digit(data_dir, sklearn_digits):
  """1,797 images through the eval pipeline (8x8, no resize) are exactly sklearn's images."""
  got = collections.Counter()
  for split in ('train', 'test'):
    ev = data.eval_iterator(
      'sklearn_digits',
      split,
      global_batch=128,
      crop=8,
      data_dir=data_dir,
      process_index=0,
      process_count=1,
    )
    for batch in ev:
      real = batch['mask'] > 0
      pixels = np.round((batch['image'][real] + 1.0) * 127.5).astype(np.uint8)
      assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 0] == pixels[..., 2]).all()
      for image, label in zip(pixels[..., 0], batch['label'][real]):
        got[(int(label), image.tobytes())] += 1
  expected = collections.Counter(
    (int(label), image.tobytes())
    for image, label in zip(digits_builder.to_uint8(sklearn_digits.images), sklearn_digits.target)
  )
  assert sum(got.values()) == 1797
  assert got == expected


def test_builder_is_registered_for_tfds(data_dir):
  tfds = tf_setup.tfds()
  assert 'sklearn_digits' in tfds.list_builders()
  builder = tfds.builder('sklearn_digits', data_dir=data_dir)
  assert builder.is_prepared()
  assert builder.info.features['image'].shape == (8, 8, 1)


def test_prepared_automatically_in_data_dir(tmp_path):
  info = data.get_dataset_info('sklearn_digits', data_dir=str(tmp_path))
  assert info.split_sizes == {'train': 1437, 'test': 360}
  assert (tmp_path / 'sklearn_digits' / '1.0.0' / 'dataset_info.json').is_file()
