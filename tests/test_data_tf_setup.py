"""TensorFlow setup: CPU memory pooled on every CPU (batches do not page-fault), oneDNN off."""

import importlib.util
import os
import subprocess
import sys

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


_AFTER_OUR_TENSORFLOW = """
import importlib.util, sys
from vit_jax.data import tf_setup
tf = tf_setup.tf()
print('keras loaded:', 'keras' in sys.modules)
from tensorflow.keras import layers
import keras
print('tf.keras:', layers.Dense.__module__.split('.')[0], keras.__name__)
if importlib.util.find_spec('triton') is not None:
  import triton
  print('triton: imported')
"""


def test_a_process_after_our_tensorflow_import():
  """Keras is not loaded with TensorFlow (~2 s of every start) but `tf.keras` and `import
  keras` work after it; Triton, which segfaults loading after TensorFlow (tensorflow#124205),
  imports (tf() imports it first). One fresh process: both depend on what was imported before."""
  result = subprocess.run(
    [sys.executable, '-c', _AFTER_OUR_TENSORFLOW], capture_output=True, text=True, check=False
  )
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.strip().splitlines()
  assert lines[:2] == ['keras loaded: False', 'tf.keras: keras keras']
  triton = importlib.util.find_spec('triton') is not None
  assert lines[2:] == (['triton: imported'] if triton else []), lines
