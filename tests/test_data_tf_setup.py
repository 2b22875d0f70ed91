"""TensorFlow setup: CPU memory pooled on every CPU (batches do not page-fault), oneDNN off."""

import os
import resource

import numpy as np

from vit_jax import data
from vit_jax.data import synthetic
from vit_jax.data import tf_setup


def test_batches_reuse_pooled_memory(tmp_path):
  """A 58 MB batch buffer is reused, not mapped from the OS anew (1.06 faults/page if it is)."""
  images = synthetic.smooth_images(40, 48, 64, seed=0, noise=3)
  synthetic.write_image_folder(str(tmp_path), 'train', images, np.arange(40) % 2, ['a', 'b'],
                               ext='jpg')
  batch, crop = 96, 224
  it = data.train_iterator(str(tmp_path), 'train', global_batch=batch, crop=crop,
                           process_index=0, process_count=1)
  for _ in range(4):  # Fills the prefetch buffers, and the pool with them.
    next(it)
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(6):
    assert next(it)['image'].shape == (batch, crop, crop, 3)
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
  pages = 6 * batch * crop * crop * 3 * 4 / 4096
  assert faults / pages < 0.05, f'{faults / pages:.2f} page faults per page of batch memory'


def test_tensorflow_runs_with_pooled_allocator_and_without_onednn():
  tf = tf_setup.tf()
  assert os.environ['TF_CPU_ALLOCATOR_USE_BFC'] == 'true'
  assert os.environ['TF_ENABLE_ONEDNN_OPTS'] == '0'
  from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-import-not-at-top
  assert not _pywrap_util_port.IsMklEnabled()
  assert tf.config.get_visible_devices() == tf.config.get_visible_devices('CPU')
