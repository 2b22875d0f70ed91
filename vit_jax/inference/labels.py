"""Class names of a checkpoint that has none of its own: the ImageNet lists, a user's label file.

A training run records its class names in `WORKDIR/labels.json` (vit_jax.run.workdir); a
released `.npz` has no such file. For ImageNet heads (1,000 or 21,843 classes) the WordNet
synset ids come from files that installed packages ship: TFDS's
`datasets/imagenet2012/labels.txt` (1k, in the order of TFDS's labels and of the released
fine-tuned checkpoints) and, when timm is installed (`pip install -e '.[bench]'`), its
`data/_info/imagenet21k_goog_synsets.txt` (21k, Google's order) and readable names
(`imagenet_synset_to_lemma.txt`). Nothing is downloaded; a `--labels=FILE` with one name per
line overrides all of these.
"""

import importlib.util
import os
from typing import Optional

from etils import epath

IMAGENET_1K = 1000
IMAGENET_21K = 21843  # Google's ImageNet-21k: fall11's 21,841 synsets and two more.


class LabelsError(ValueError):
  """A label file that cannot be used; the message says which file and what to do."""


def read_label_file(path: str, num_classes: int) -> list[str]:
  """Class names from a text file, one per line (blank lines at the end ignored).

  Raises:
    LabelsError: the file is missing or holds a different number of names than classes.
  """
  try:
    lines = epath.Path(path).read_text().rstrip('\n').split('\n')
  except (OSError, UnicodeDecodeError) as e:
    raise LabelsError(
      f'--labels={path} cannot be read ({type(e).__name__}: {e}); pass a text '
      'file with one class name per line.'
    ) from None
  names = [line.strip() for line in lines]
  if len(names) != num_classes:
    raise LabelsError(
      f'--labels={path} has {len(names)} lines but the checkpoint has '
      f'{num_classes} classes; pass one name per class, in label order.'
    )
  return names


def _package_file(package: str, relative: str) -> Optional[str]:
  """A data file inside an installed package, found without importing the package."""
  try:
    spec = importlib.util.find_spec(package)
  except (ImportError, ValueError):
    return None
  if spec is None or not spec.submodule_search_locations:
    return None
  for root in spec.submodule_search_locations:
    path = os.path.join(root, relative)
    if os.path.isfile(path):
      return path
  return None


def _lines(path: str) -> list[str]:
  with open(path, encoding='utf-8') as f:
    return [line.strip() for line in f if line.strip()]


def imagenet_names(num_classes: int) -> tuple[Optional[list[str]], str]:
  """(names, where they came from) for an ImageNet head of `num_classes`; (None, why) else.

  Names are readable (`tabby, tabby cat`) where timm's synset table is installed, else the
  WordNet synset ids (`n02123045`).
  """
  if num_classes == IMAGENET_1K:
    synset_file = _package_file('tensorflow_datasets', 'datasets/imagenet2012/labels.txt')
    source = 'TFDS imagenet2012 synsets'
  elif num_classes == IMAGENET_21K:
    synset_file = _package_file('timm', 'data/_info/imagenet21k_goog_synsets.txt')
    source = 'timm imagenet21k_goog synsets'
  else:
    return None, f'{num_classes} classes are not an ImageNet head'
  if synset_file is None:
    return None, f'{source}: file not installed'
  synsets = _lines(synset_file)
  if len(synsets) != num_classes:
    return None, f'{synset_file} lists {len(synsets)} synsets, not {num_classes}'
  lemma_file = _package_file('timm', 'data/_info/imagenet_synset_to_lemma.txt')
  if lemma_file is None:
    return synsets, source
  lemmas = dict(line.split('\t', 1) for line in _lines(lemma_file) if '\t' in line)
  return [lemmas.get(s, s) for s in synsets], f'{source}, timm lemmas'


def class_names(
  num_classes: int, labels_file: Optional[str], recorded: Optional[dict]
) -> tuple[list[str], str]:
  """(names, where they came from) for a head of `num_classes`: the `labels_file` (one name
  per line), else a run's recorded labels.json, else the ImageNet lists, else the indices.

  Raises:
    LabelsError: the label file is missing or has another number of names.
  """
  if labels_file:
    return read_label_file(labels_file, num_classes), f'--labels={labels_file}'
  if recorded and recorded['class_names'] is not None:
    return list(recorded['class_names']), f'labels.json ({recorded["dataset"]})'
  names, source = imagenet_names(num_classes)
  if names is not None:
    return names, source
  return [str(i) for i in range(num_classes)], 'class indices (pass --labels=FILE for names)'
