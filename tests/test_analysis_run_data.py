"""The images of the analyses come preprocessed as the run trained (vit_jax.analysis.run_data):
the run's dataset, splits and augmentation, whatever data.train_iterator's defaults are."""

import json

import numpy as np
import pytest

from helpers import load_config
from vit_jax import data
from vit_jax.analysis import run_data


@pytest.fixture
def calls(monkeypatch):
  """The arguments of every data.train_iterator call; each yields one batch of zeros."""
  recorded = []

  def train_iterator(dataset, split, **kwargs):
    recorded.append(dict(kwargs, dataset=dataset, split=split))
    n, size = kwargs['global_batch'], kwargs['crop']
    return iter([{'image': np.zeros((n, size, size, 3)), 'label': np.zeros(n, np.int32)}] * 9)

  monkeypatch.setattr(data, 'train_iterator', train_iterator)
  return recorded


def test_training_batches_are_augmented_as_the_run_trained(tmp_path, calls):
  config = load_config('default', data_dir='/data', train_split='train[:90%]')
  (tmp_path / 'config.json').write_text(config.to_json())
  images = run_data.RunData.from_workdir(tmp_path, 16, seed=3)
  batches = images.train_batches(8, 2)
  assert len(batches) == 2 and batches[0]['image'].shape == (8, 16, 16, 3)
  (call,) = calls
  # configs/default.py: crops of >= 60% of the area, no flips (the defaults: 5%, flips).
  assert {k: call[k] for k in ('dataset', 'split', 'data_dir', 'area_range', 'flip', 'seed')} == {
    'dataset': 'sklearn_digits',
    'split': 'train[:90%]',
    'data_dir': '/data',
    'area_range': (0.6, 1.0),
    'flip': False,
    'seed': 3,
  }
  assert call['randaugment'] is None and 'aspect_range' not in call  # the loop's default.


def test_the_eval_sample_is_whole_images_of_the_test_split(calls):
  config = json.loads(load_config('default', test_split='test[:50%]').to_json())
  images, labels = run_data.RunData(config, 24).eval_batch(5)
  assert images.shape == (5, 24, 24, 3) and labels.shape == (5,)
  (call,) = calls
  assert (call['split'], call['area_range'], call['aspect_range'], call['flip']) == (
    'test[:50%]',
    (1.0, 1.0),
    (1.0, 1.0),
    False,
  )


def test_a_file_without_a_run_gets_whole_images_and_needs_a_dataset(calls):
  with pytest.raises(run_data.NoImagesError, match='pass --dataset='):
    run_data.RunData(None, 16).train_batches(4, 1)
  run_data.RunData(None, 16, dataset='cifar10').train_batches(4, 1)
  assert calls[0]['area_range'] == (1.0, 1.0) and calls[0]['flip'] is False
