"""Dataset names -> sources (TFDS dataset or image folder), and their DatasetInfo.

A name that is an existing directory, or starts with '/', './', '../' or '~', is an image
folder; anything else is a TFDS name ('cifar10', 'imagenet2012', 'imagenet2012_subset/10pct',
'mnist:3.0.1', or the built-in offline 'sklearn_digits').
"""

import dataclasses
import os
from typing import Any

from vit_jax.data import errors

_FOLDER_PREFIXES = ('/', './', '../', '~')


def is_folder_name(dataset) -> bool:
  """Whether `dataset` names an image folder rather than a TFDS dataset."""
  if isinstance(dataset, os.PathLike):
    return True
  return str(dataset).startswith(_FOLDER_PREFIXES) or os.path.isdir(str(dataset))


def resolve(dataset, *, data_dir=None, manual_dir=None, download=False):
  """Returns the FolderSource or TfdsSource for `dataset` (see the module docstring).

  A DatasetInfo (from `get_dataset_info`) gives its source, resolved already (the other
  arguments are then those it was resolved with).
  """
  if isinstance(dataset, DatasetInfo):
    return dataset.source
  if not isinstance(dataset, (str, os.PathLike)) or not str(dataset).strip():
    raise errors.DataError(
      f'dataset={dataset!r}; pass a TFDS name (e.g. cifar10, '
      'sklearn_digits) or an image folder path.'
    )
  if is_folder_name(dataset):
    from vit_jax.data import folders

    return folders.FolderSource(dataset)
  from vit_jax.data import tfds_source

  return tfds_source.TfdsSource(
    str(dataset).strip(), data_dir=data_dir, manual_dir=manual_dir, download=download
  )


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a training job needs to know about a dataset before reading it.

  Attributes:
    name: TFDS name, or the absolute path of an image folder.
    kind: 'tfds' or 'folder'.
    num_classes: number of labels; labels are 0..num_classes-1.
    class_names: label -> name (TFDS ClassLabel names, or sorted class folder names).
    split_sizes: examples per named split (TFDS splits, or split folders).
    data_dir: TFDS data_dir root in use (None for image folders).
  """

  name: str
  kind: str
  num_classes: int
  class_names: tuple[str, ...] | None
  split_sizes: dict[str, int]
  data_dir: str | None
  source: Any = dataclasses.field(repr=False, compare=False)

  def num_examples(self, split: str) -> int:
    """Examples in a split string, e.g. 'train[:98%]', 'train+test'."""
    return self.source.num_examples(split)


def info_of(source) -> DatasetInfo:
  return DatasetInfo(
    name=source.name,
    kind=source.kind,
    num_classes=source.num_classes,
    class_names=source.class_names,
    split_sizes=dict(source.split_sizes),
    data_dir=source.data_dir,
    source=source,
  )


def get_dataset_info(dataset, *, data_dir=None, manual_dir=None, download=False) -> DatasetInfo:
  """Describes a TFDS dataset or image folder (preparing `sklearn_digits` if needed).

  Args:
    dataset: TFDS name or image folder path (see the module docstring).
    data_dir: TFDS data directory (TFDS's default, ~/tensorflow_datasets, when None).
    manual_dir: where manually downloaded files are (e.g. imagenet2012's tar files).
    download: let TFDS download and prepare a dataset that is not prepared yet.

  Returns:
    DatasetInfo.
  """
  return info_of(resolve(dataset, data_dir=data_dir, manual_dir=manual_dir, download=download))
