"""Imports TensorFlow and TFDS on first use, with accelerators hidden and logs quiet.

tf.data runs on the host CPU only. TensorFlow would otherwise reserve GPU (and TPU) memory
that JAX needs, so every TensorFlow import in vit_jax goes through `tf()` here.

The CPU allocator is chosen here too, because it sets the train pipeline's speed. Each
batch is a fresh float32 buffer (77 MB at 128 x 224 x 224 x 3) that TensorFlow's default
CPU allocator (malloc) maps from the OS and unmaps when freed, so every batch faults its
pages in again: 147 page faults and ~0.4 ms of CPU per image on a 2-core VM, +30% on the
whole pipeline. TensorFlow pools CPU memory only when oneDNN is on, and oneDNN is on by
default only on CPUs with AVX512_VNNI, AVX512_BF16 or AMX (Intel Cascade Lake and newer, AMD
Zen4): the pipeline ran at 83-86% of raw decoding speed with oneDNN on and 62-66% with it
off (TF_ENABLE_ONEDNN_OPTS=0, as on older CPUs). TF_CPU_ALLOCATOR_USE_BFC pools on any CPU.
oneDNN is then turned off: it speeds up convolutions and matmuls, which the pipelines hardly
use (only RandAugment's 3x3 sharpness filter), and off it gives one code path and the same
numbers on every CPU, and no INFO lines at import. Both are defaults: the environment wins.

Triton (installed with CUDA builds of PyTorch; timm and torch.compile import it) segfaults the
process when it loads after TensorFlow >= 2.20, whose LLVM is then in the global symbol table
(tensorflow#124205); before it, it is fine. Where Triton is installed it is imported first
(~0.5 s), so that timm works beside our pipelines in one process, imported in either order.

Keras is not imported with TensorFlow. TensorFlow >= 2.16's `__init__` imports
`keras.src.optimizers` eagerly (only to register Keras optimizers for SavedModels) and skips it
on ImportError; tf.data never needs it, and it is ~2 s of every process's start (2-core Intel
Xeon: `tf(); tfds()` 6.7-7.6 s -> 4.3-5.5 s). Keras is refused during that one import and stays
importable: `tf.keras` and `import keras` load it when first used, as usual.
"""

import contextlib
import functools
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys


@functools.cache
def tf():
  """Returns the `tensorflow` module, imported with GPUs/TPUs hidden from it."""
  # All three must precede the import (the allocator is chosen when TF first runs an op).
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  os.environ.setdefault('TF_CPU_ALLOCATOR_USE_BFC', 'true')
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
  if 'triton' not in sys.modules and importlib.util.find_spec('triton') is not None:
    try:
      import triton  # noqa: F401
    except Exception:
      pass  # A broken Triton only matters to those who import it later, as without us.
  with _keras_deferred():
    import tensorflow as tf_module

  for kind in ('GPU', 'TPU'):
    try:
      tf_module.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError) as e:
      # ValueError: no device of that kind (tensorflow-cpu). RuntimeError: TF already
      # initialised its devices elsewhere; it may then hold accelerator memory.
      if isinstance(e, RuntimeError):
        logging.warning(
          'Could not hide %s devices from TensorFlow (%s); import vit_jax.data '
          'before anything initialises TensorFlow.',
          kind,
          e,
        )
  tf_module.get_logger().setLevel('ERROR')
  tf_module.autograph.set_verbosity(0)
  return tf_module


class _RefuseToLoad(importlib.abc.Loader):
  def create_module(self, spec):
    return None

  def exec_module(self, module):
    raise ImportError(f'{module.__name__} is imported on first use, not with TensorFlow')


class _KerasFinder(importlib.abc.MetaPathFinder):
  """Finds `keras` where it is (TensorFlow reads its folder) with a loader that refuses."""

  def find_spec(self, name, path=None, target=None):
    if name != 'keras':
      return None
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is not None:
      spec.loader = _RefuseToLoad()
    return spec


@contextlib.contextmanager
def _keras_deferred():
  """Keras unloadable inside the block, unless it is imported already (see the docstring)."""
  if 'keras' in sys.modules or 'tensorflow' in sys.modules:
    yield
    return
  finder = _KerasFinder()
  sys.meta_path.insert(0, finder)
  try:
    yield
  finally:
    sys.meta_path.remove(finder)  # the refused import left nothing in sys.modules.


@functools.cache
def tfds():
  """Returns the `tensorflow_datasets` module (after `tf()`), without progress bars."""
  tf()
  import tensorflow_datasets as tfds_module

  tfds_module.disable_progress_bar()
  return tfds_module
