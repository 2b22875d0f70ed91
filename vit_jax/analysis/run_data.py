"""The images the analyses read, preprocessed as the run they analyse was.

A loss measured at a run's trained parameters is the run's loss only on batches made the way
the run made them: its dataset, splits and training augmentation (crop area, flips,
RandAugment) come from the run's config, never from `data.train_iterator`'s defaults (5% crops
and flips: on the default job, trained on >= 60% crops without flips, an 88% model measured a
chance-level loss of 2.30 on those). `python -m vit_jax.analyze` and colabs/analysis.ipynb
both read their images here.
"""

from typing import Any, Mapping, Optional

import numpy as np

from vit_jax.run import workdir as workdir_lib


class NoImagesError(ValueError):
  """Neither the run nor the caller named a dataset; one line saying what to pass."""


class RunData:
  """A run's images for the analyses: a sample of its test split without augmentation
  (`eval_batch`) and training batches augmented as it trained (`train_batches`)."""

  def __init__(
    self,
    config: Optional[Mapping[str, Any]],
    size: int,
    *,
    dataset: Optional[str] = None,
    data_dir: Optional[str] = None,
    seed: int = 0,
  ):
    """`config`: the run's (a ConfigDict, or config.json as a dict; None for a file without
    one); `size`: the model's input side; `dataset`, `data_dir`: instead of the config's."""
    config = config.to_dict() if hasattr(config, 'to_dict') else dict(config or {})
    self.config, self.size, self.seed = config, size, seed
    self.dataset = dataset or config.get('dataset')
    self.data_dir = data_dir or config.get('data_dir')

  @classmethod
  def from_workdir(cls, workdir, size: int, **kwargs) -> 'RunData':
    """The run in `workdir` (its config.json; local or gs://)."""
    return cls(workdir_lib.read_config(workdir), size, **kwargs)

  def _iterator(self, split: str, batch: int, **augmentation):
    if not self.dataset:
      raise NoImagesError(
        'this analysis needs images: pass --dataset=TFDS_NAME or an image folder.'
      )
    from vit_jax import data  # TensorFlow

    return data.train_iterator(
      self.dataset,
      split,
      global_batch=batch,
      crop=self.size,
      seed=self.seed,
      data_dir=self.data_dir,
      shuffle_buffer=10_000,
      **augmentation,
    )

  def eval_batch(self, num_images: int, split: Optional[str] = None):
    """(images float32 [n, size, size, 3] in [-1, 1], labels int32 [n]): a random sample of
    `split` (default: the run's test split; folders and TFDS splits are often sorted by class),
    each image resized whole to the model's size, without augmentation."""
    split = split or self.config.get('test_split') or 'test'
    whole = dict(area_range=(1.0, 1.0), aspect_range=(1.0, 1.0), flip=False)
    batch = next(iter(self._iterator(split, num_images, **whole)))
    return np.asarray(batch['image']), np.asarray(batch['label'])

  def train_batches(self, batch_size: int, count: int, split: Optional[str] = None):
    """`count` batches {'image', 'label'} of `split` (default: the run's training split),
    augmented as the run trained (its config.pp; a run without a config: none)."""
    split = split or self.config.get('train_split') or 'train'
    pp = self.config.get('pp') or {}
    augmentation = dict(
      area_range=(pp.get('area_min', 1.0), 1.0),
      flip=pp.get('flip', False),
      randaugment=pp.get('randaugment'),
    )
    if not pp:  # no recorded augmentation (a file): whole images.
      augmentation['aspect_range'] = (1.0, 1.0)
    batches = self._iterator(split, batch_size, **augmentation)
    return [
      {'image': np.asarray(b['image']), 'label': np.asarray(b['label'])}
      for b, _ in zip(batches, range(count))
    ]
