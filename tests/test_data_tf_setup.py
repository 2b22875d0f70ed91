"""TensorFlow setup: CPU memory pooled on every CPU (batches do not page-fault), oneDNN off."""

import importlib.util
import os
import subprocess
import sys

import pytest

from vit_jax.data import tf_setup

# Run in a fresh process: in a pytest worker, threads left by earlier tests fault pages too
# (0.18 faults/page was seen in CI, against exactly 0 alone).
_MEASURE_FAULTS = """
import resource, sys
import numpy as np
from vit_jax import data
from vit_jax.data import synthetic
images = synthetic.smooth_images(40, 48, 64, seed=0, noise=3)
synthetic.write_image_folder(sys.argv[1], 'train', images, np.arange(40) % 2, ['a', 'b'],
                             ext='jpg')
batch, crop = 96, 224
it = data.train_iterator(sys.argv[1], 'train', global_batch=batch, crop=crop,
                         process_index=0, process_count=1)
for _ in range(4):  # Fills the prefetch buffers, and the pool with them.
  next(it)
pages = 4 * batch * crop * crop * 3 * 4 / 4096
for _ in range(3):
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(4):
    assert next(it)['image'].shape == (batch, crop, crop, 3)
  print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / pages)
"""


def _faults_per_page(tmp_path):
  out = subprocess.run(
    [sys.executable, '-c', _MEASURE_FAULTS, str(tmp_path)],
    check=True,
    capture_output=True,
    text=True,
  ).stdout
  return min(float(line) for line in out.split())


def test_batches_reuse_pooled_memory(tmp_path):
  """A 58 MB batch buffer is reused, not mapped from the OS anew (~1.1 faults/page if it is)."""
  faults = _faults_per_page(tmp_path)
  assert faults < 0.05, f'{faults:.2f} page faults per page of batch memory'


def test_tensorflow_runs_with_pooled_allocator_and_without_onednn():
  tf = tf_setup.tf()
  assert os.environ['TF_CPU_ALLOCATOR_USE_BFC'] == 'true'
  assert os.environ['TF_ENABLE_ONEDNN_OPTS'] == '0'
  from tensorflow.python.util import _pywrap_util_port

  assert not _pywrap_util_port.IsMklEnabled()
  assert tf.config.get_visible_devices() == tf.config.get_visible_devices('CPU')


def test_triton_imports_after_our_tensorflow():
  """Triton after TensorFlow segfaults (tensorflow#124205); tf() imports it first."""
  if importlib.util.find_spec('triton') is None:
    pytest.skip('Triton is not installed (it comes with CUDA builds of PyTorch)')
  code = 'from vit_jax.data import tf_setup; tf_setup.tf(); import triton; print("ok")'
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
  assert result.returncode == 0 and result.stdout.strip() == 'ok', result.returncode
