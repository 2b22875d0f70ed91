"""Imports TensorFlow and TFDS on first use, with accelerators hidden and logs quiet.

tf.data runs on the host CPU only. TensorFlow would otherwise reserve GPU (and TPU) memory
that JAX needs, so every TensorFlow import in vit_jax goes through `tf()` here.
"""

import functools
import logging
import os


@functools.cache
def tf():
  """Returns the `tensorflow` module, imported with GPUs/TPUs hidden from it."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Must precede the import.
  import tensorflow as tf_module  # pylint: disable=g-import-not-at-top
  for kind in ('GPU', 'TPU'):
    try:
      tf_module.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError) as e:
      # ValueError: no device of that kind (tensorflow-cpu). RuntimeError: TF already
      # initialised its devices elsewhere; it may then hold accelerator memory.
      if isinstance(e, RuntimeError):
        logging.warning('Could not hide %s devices from TensorFlow (%s); import vit_jax.data '
                        'before anything initialises TensorFlow.', kind, e)
  tf_module.get_logger().setLevel('ERROR')
  tf_module.autograph.set_verbosity(0)
  return tf_module


@functools.cache
def tfds():
  """Returns the `tensorflow_datasets` module (after `tf()`), without progress bars."""
  tf()
  import tensorflow_datasets as tfds_module  # pylint: disable=g-import-not-at-top
  tfds_module.disable_progress_bar()
  return tfds_module
