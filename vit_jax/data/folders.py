"""Image folders: DIR/<split>/<class_name>/*.{jpg,jpeg,png,bmp,gif}, read with random access.

Labels are indices into the sorted union of the class folder names of all split folders, so
train and test folders agree on labels even when a class is missing from one of them. Files
are listed once, sorted by (class, file name). Training reads them in the global order of
`global_order` (a fresh pseudo-random permutation per epoch, each process its rows of every
global batch); evaluation gives each process a contiguous, near-equal part of the list.
"""

import logging
import os

import numpy as np

from vit_jax.data import errors
from vit_jax.data import splits
from vit_jax.data import tf_setup

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')
_LAYOUT = 'expected DIR/<split>/<class_name>/*.jpg (or .jpeg, .png, .bmp, .gif)'


def _is_image(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith('.')


def _subdirs(path: str) -> list[str]:
  with os.scandir(path) as entries:
    return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith('.'))


def _files(path: str) -> tuple[list[str], list[str]]:
  """Sorted image file names directly in `path`, and the other (ignored, not hidden) ones."""
  with os.scandir(path) as entries:
    names = [e.name for e in entries if e.is_file() and not e.name.startswith('.')]
  images = sorted(n for n in names if _is_image(n))
  return images, sorted(set(names) - set(images))


def _warn_ignored(others: list[str], split_dir: str) -> None:
  """One line per split folder for files that are not images (e.g. labels.txt, notes.csv)."""
  if others:
    kinds = sorted({os.path.splitext(n)[1].lower() or n for n in others})
    logging.warning(
      'Ignored %d files that are not images (%s) in %s.', len(others), ', '.join(kinds), split_dir
    )


def _warn_missing_classes(listing: dict[str, dict[str, list[str]]], root: str) -> None:
  """One line per split folder with classes that the `train` folder lacks."""
  if 'train' not in listing:
    return
  for split, classes in listing.items():
    missing = sorted(set(classes) - set(listing['train']))
    if split != 'train' and missing:
      logging.warning(
        'Classes in %s that %s lacks (never trained on): %s.',
        os.path.join(root, split),
        os.path.join(root, 'train'),
        ', '.join(missing),
      )


class FolderSource:
  """An image folder dataset. Listing happens once, at construction."""

  kind = 'folder'

  def __init__(self, root: str):
    self.root = os.path.abspath(os.path.expanduser(str(root)))
    self.name = self.root
    if not os.path.isdir(self.root):
      raise errors.DataError(
        f'Image folder {self.root} does not exist; pass an existing '
        f'folder ({_LAYOUT}) or a TFDS dataset name.'
      )
    split_names = _subdirs(self.root)
    if not split_names:
      raise errors.DataError(f'Image folder {self.root} has no split folders; {_LAYOUT}.')
    listing = {}  # split -> {class: [file names]}
    for split in split_names:
      split_dir = os.path.join(self.root, split)
      loose, ignored = _files(split_dir)
      classes = _subdirs(split_dir)
      if loose and not classes:
        raise errors.DataError(
          f'{split_dir} holds images directly, not in class folders; {_LAYOUT} (the class '
          'folder names are the labels).'
        )
      if loose:
        logging.warning(
          'Ignoring %d images directly in %s (not in a class folder), e.g. %s.',
          len(loose),
          split_dir,
          loose[0],
        )
      listing[split] = {}
      for name in classes:
        class_dir = os.path.join(split_dir, name)
        images, others = _files(class_dir)
        if not images:
          raise errors.DataError(
            f'Class folder {class_dir} has no images ({", ".join(IMAGE_EXTENSIONS)}'
            f'{f"; it has {len(others)} other files" if others else ""}); add images or '
            'remove the folder, since labels are the sorted class folder names.'
          )
        ignored += others
        listing[split][name] = images
      _warn_ignored(ignored, split_dir)
    _warn_missing_classes(listing, self.root)
    self.class_names = tuple(sorted({c for classes in listing.values() for c in classes}))
    label_of = {name: i for i, name in enumerate(self.class_names)}
    self._paths, self._labels = {}, {}
    for split, classes in listing.items():
      self._paths[split] = [
        os.path.join(self.root, split, c, f) for c, files in classes.items() for f in files
      ]
      self._labels[split] = np.array(
        [label_of[c] for c, files in classes.items() for _ in files], np.int64
      )
    self.split_sizes = {split: len(paths) for split, paths in self._paths.items()}
    self.num_classes = len(self.class_names)
    self.data_dir = None

  def describe(self) -> str:
    return f'image folder {self.root}'

  def num_examples(self, split: str) -> int:
    return sum(stop - start for _, start, stop in self._resolve(split))

  def _resolve(self, split: str):
    try:
      return splits.resolve(split, self.split_sizes)
    except errors.DataError as e:
      raise errors.DataError(f'{self.describe()}: {e}') from None

  def part_sizes(self, split: str, process_count: int) -> list[int]:
    return splits.part_sizes(self.num_examples(split), process_count)

  def _split_files(self, split: str):
    ranges = self._resolve(split)
    paths = [p for n, a, b in ranges for p in self._paths[n][a:b]]
    labels = np.concatenate([self._labels[n][a:b] for n, a, b in ranges])
    return paths, labels

  def train_part(self, split: str, process_index: int, process_count: int) -> 'FolderPart':
    """All files of `split`, read with random access (see `global_order`)."""
    del process_index, process_count  # Every process reads its rows of the global order.
    return FolderPart(*self._split_files(split))

  def part(self, split: str, process_index: int, process_count: int) -> 'FolderPart':
    """This process's part of `split` for evaluation: files [start, stop) of its file list."""
    paths, labels = self._split_files(split)
    start, stop = splits.even_part(len(paths), process_index, process_count)
    return FolderPart(paths[start:stop], labels[start:stop])


class FolderPart:
  """Files of a split (or of a process's part of it), read with random access."""

  random_access = True

  def __init__(self, paths: list[str], labels: np.ndarray):
    tf = tf_setup.tf()
    self.paths = paths
    self.num_examples = len(paths)
    # Eager tensors, captured by reference in the tf.data functions below.
    self._paths = tf.constant(paths, tf.string)
    self._labels = tf.constant(labels, tf.int64)

  def load(self, i):
    """{'data': the encoded file, 'label'} of file i (an int64 tensor) of the list."""
    tf = tf_setup.tf()
    return {'data': tf.io.read_file(self._paths[i]), 'label': self._labels[i]}

  def eval_stream(self):
    """(dataset of indices, load): load(i) reads file i of the list, in list order."""
    tf = tf_setup.tf()
    return tf.data.Dataset.range(self.num_examples), lambda i: dict(self.load(i), pos=i)

  def name_of(self, index: int) -> str:
    return self.paths[index]
