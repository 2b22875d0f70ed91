r"""MNIST IDX files -> an image folder that training reads offline (train / test splits).

  python -m vit_jax.data.mnist_folder --out=/tmp/mnist [--mnist_dir=DIR]

Without --mnist_dir, MNIST's test-set files (`t10k-*-ubyte.gz`, 10,000 digits: both splits
are taken from them) are downloaded once from TFDS's public copy (gs://cvdf-datasets/mnist,
over HTTPS) into $VIT_JAX_CACHE (vit_jax.system.downloads), as released checkpoints are;
offline, one line names the URL and where to put the file.

`train` is the first `num_train` of a fixed permutation of images 0 .. N - num_test - 1, `test`
the last `num_test` images (disjoint from train), one PNG per image under <split>/<digit>/.
Writing is skipped when `out` already holds the same split sizes.
"""

import os
import sys

from absl import app
from absl import flags
import numpy as np

from vit_jax.data import synthetic
from vit_jax.system import downloads

FILES = ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')
# TFDS's copy of the MNIST files (its `mnist` builder downloads from there).
MIRROR = 'gs://cvdf-datasets/mnist'


def fetch_mnist() -> str:
  """The folder holding FILES, downloaded once into the cache (vit_jax.weights.catalogue).

  Raises:
    downloads.FetchError: (one line) offline or not found, naming the URL and the local path.
  """
  return os.path.dirname([downloads.fetch(f'{MIRROR}/{name}') for name in FILES][0])


def write_mnist_folder(
  mnist_dir: str, root: str, num_train: int = 8000, num_test: int = 2000
) -> str:
  """root/{train,test}/<digit>/*.png from the IDX files in `mnist_dir`; returns root."""
  paths = [os.path.join(mnist_dir, f) for f in FILES]
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise FileNotFoundError(
      f'{", ".join(missing)} not found; pass --mnist_dir=the folder with {" and ".join(FILES)}.'
    )
  marker = os.path.join(root, f'written_{num_train}_{num_test}')
  if os.path.exists(marker):
    return root
  images, labels = synthetic.read_mnist_idx(*paths)
  if num_train + num_test > len(images):
    raise ValueError(
      f'{num_train} train + {num_test} test images > the {len(images)} in '
      f'{mnist_dir}; ask for fewer.'
    )
  names = [str(d) for d in range(10)]
  train = np.random.default_rng(0).permutation(len(images) - num_test)[:num_train]
  synthetic.write_image_folder(root, 'train', images[train], labels[train], names)
  test = np.arange(len(images) - num_test, len(images))
  synthetic.write_image_folder(root, 'test', images[test], labels[test], names)
  open(marker, 'w').close()
  return root


def main(argv):
  del argv
  f = flags.FLAGS
  try:
    mnist_dir = f.mnist_dir or fetch_mnist()
    root = write_mnist_folder(mnist_dir, f.out, f.num_train, f.num_test)
  except (FileNotFoundError, ValueError, OSError) as e:
    print(f'Error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'Wrote {f.num_train} train and {f.num_test} test images to {root}')


if __name__ == '__main__':
  # Flags only for the command line: importing the module defines none.
  flags.DEFINE_string(
    'mnist_dir', None, f'Folder with {" and ".join(FILES)} (default: downloaded once).'
  )
  flags.DEFINE_string('out', None, 'Image folder to write.', required=True)
  flags.DEFINE_integer('num_train', 8000, 'Training images.')
  flags.DEFINE_integer('num_test', 2000, 'Test images (the last ones of the file).')
  app.run(main)
