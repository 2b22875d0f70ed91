"""Input pipeline: TFDS datasets, image folders and the built-in offline `sklearn_digits`.

The only part of vit_jax that uses TensorFlow; it is imported on first use (never by
`import vit_jax.data`), with GPUs/TPUs hidden from it. See `iterators` and `eval_iterators`
for the interface:

    info = data.get_dataset_info('sklearn_digits')
    it = data.train_iterator('sklearn_digits', 'train', global_batch=128, crop=32)
    ev = data.eval_iterator('sklearn_digits', 'test', global_batch=128, crop=32)
"""

from vit_jax.data.errors import DataError
from vit_jax.data.errors import UnreadableImageError
from vit_jax.data.eval_iterators import eval_iterator
from vit_jax.data.eval_iterators import EvalIterator
from vit_jax.data.iterators import train_iterator
from vit_jax.data.iterators import TrainIterator
from vit_jax.data.sources import DatasetInfo
from vit_jax.data.sources import get_dataset_info

BUILTIN_DATASET = 'sklearn_digits'

__all__ = [
  'BUILTIN_DATASET',
  'DataError',
  'DatasetInfo',
  'EvalIterator',
  'TrainIterator',
  'UnreadableImageError',
  'eval_iterator',
  'get_dataset_info',
  'train_iterator',
]
