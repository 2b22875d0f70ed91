"""`sklearn_digits`: scikit-learn's 1,797 real 8x8 handwritten digits as a TFDS dataset.

The images ship inside the scikit-learn package, so this dataset is prepared offline (the
pipeline prepares it into `data_dir` on first use) and is read through exactly the same code
as `cifar10` or `imagenet2012`. Importing this module registers the builder, after which
`tfds.builder('sklearn_digits')` works; `tfds build --imports vit_jax.data.digits_builder
sklearn_digits` prepares it from the command line.

Contents (version 1.0.0), from `sklearn.datasets.load_digits()` (the UCI optdigits test set):
  image: uint8 [8, 8, 1], PNG-encoded. sklearn's pixel values v in 0..16 become
         (v * 255 + 8) // 16 in 0..255 (rounding half up: 0->0, 1->16, 8->128, 16->255).
  label: ClassLabel(num_classes=10), the digit.
  index: int32, the example's row in `load_digits()` (for tracing back to sklearn).
Fixed, stratified split: 'test' = for each digit, the first 36 of its rows in the order
`np.random.RandomState(0).permutation(1797)` (360 examples, 36 per digit; RandomState's
stream is frozen by numpy, so this never changes); 'train' = the other 1,437 rows.
"""

import pathlib

import numpy as np

from vit_jax.data import tf_setup

tfds = tf_setup.tfds()

NAME = 'sklearn_digits'
NUM_EXAMPLES = 1797
TEST_PER_CLASS = 36


def to_uint8(values: np.ndarray) -> np.ndarray:
  """Maps sklearn's digit intensities (0..16, any float/int dtype) to uint8 0..255."""
  values = np.asarray(values).astype(np.int64)
  return ((values * 255 + 8) // 16).astype(np.uint8)


def split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
  """Rows of `load_digits()` in each split (sorted): {'train': [1437], 'test': [360]} int64.

  Args:
    labels: `load_digits().target`, int [1797].
  """
  order = np.random.RandomState(0).permutation(NUM_EXAMPLES)
  test = np.concatenate([order[labels[order] == c][:TEST_PER_CLASS] for c in range(10)])
  is_test = np.zeros(NUM_EXAMPLES, bool)
  is_test[test] = True
  return {'train': np.flatnonzero(~is_test), 'test': np.flatnonzero(is_test)}


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's 8x8 handwritten digits (1,797 real images, 10 classes), no download."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Train 1,437 / test 360 (36 per digit).'}
  # TFDS derives this from package resources, which needs the `importlib_resources` backport
  # for builders outside tensorflow_datasets; the file path is all it is used for.
  code_path = pathlib.Path(__file__)

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=tfds.features.FeaturesDict(
        {
          'image': tfds.features.Image(shape=(8, 8, 1), encoding_format='png'),
          'label': tfds.features.ClassLabel(num_classes=10),
          'index': tfds.features.Scalar(dtype=np.int32),
        }
      ),
      supervised_keys=('image', 'label'),
      homepage='https://scikit-learn.org/stable/modules/generated/'
      'sklearn.datasets.load_digits.html',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the data ships with scikit-learn.
    from sklearn import datasets

    digits = datasets.load_digits()
    images = to_uint8(digits.images)[..., None]
    labels = digits.target.astype(np.int64)
    return {
      name: self._generate_examples(images, labels, rows)
      for name, rows in split_indices(labels).items()
    }

  def _generate_examples(self, images, labels, rows):
    for row in rows:
      yield int(row), {'image': images[row], 'label': int(labels[row]), 'index': int(row)}
