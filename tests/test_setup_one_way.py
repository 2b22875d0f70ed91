"""Setup does each thing once: pre-trained files are read only for a fresh run, the data
source is resolved once, and the host copy of pre-trained params is not kept."""

import numpy as np
import pytest

from helpers import load_config
from vit_jax import data
from vit_jax.data import folders
from vit_jax.data import synthetic
from vit_jax.train import loop
from vit_jax.train import setup_run


def test_a_resumed_run_does_not_read_the_pretrained_file(tmp_path, digits_data_dir):
  config = load_config(
    'default', data_dir=digits_data_dir, pretrained_path=str(tmp_path / 'gone.npz')
  )
  with pytest.raises(setup_run.ConfigError, match='gone.npz'):  # Fresh: it is read (and fails).
    setup_run.build(config, str(tmp_path / 'fresh'))
  (tmp_path / 'resumed' / 'checkpoints' / '7').mkdir(parents=True)  # A step to resume.
  run = setup_run.build(config, str(tmp_path / 'resumed'))
  assert run.pretrained is None


def test_the_image_folder_is_walked_once(tmp_path, monkeypatch):
  images = synthetic.smooth_images(16, 8, 8, seed=0)
  for split in ('train', 'test'):
    synthetic.write_image_folder(
      str(tmp_path / 'images'), split, images, np.arange(16) % 2, ['a', 'b']
    )
  made = []
  init = folders.FolderSource.__init__
  monkeypatch.setattr(
    folders.FolderSource, '__init__', lambda self, root: (made.append(root), init(self, root))[1]
  )
  config = load_config(
    'default', dataset=str(tmp_path / 'images'), pp__crop=8, batch=8, batch_eval=8
  )
  run = setup_run.build(config, str(tmp_path / 'run'))
  train_iter, evals = loop.data_iterators(run, None)
  assert next(train_iter)['image'].shape == (8, 8, 8, 3) and len(evals['test']) == 2
  assert len(made) == 1
  assert data.get_dataset_info(run.info).source is run.info.source
