r"""What bfloat16 compute costs a trained model: logits error and top-1 agreement vs float32.

    python -m vit_jax.main --config=configs/default.py --workdir=/tmp/vit_default
    python benchmarks/dtype_accuracy.py --config=configs/default.py --workdir=/tmp/vit_default

Restores the params of the run's latest checkpoint (float32, as trained), builds the model
twice from the same config, with `dtype=float32` and with `dtype=bfloat16` (matmuls in
bfloat16 with float32 accumulation; LayerNorm, softmax and the residual stream stay float32,
see `vit_jax.models.layers`), runs both over every example of the test split and prints:
per-example relative logits error ||l_bf16 - l_f32|| / ||l_f32|| (median, 99th percentile,
max), the largest absolute logit difference, top-1 agreement, and each dtype's accuracy.
"""

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from vit_jax import models
from vit_jax.run import orbax_io
from vit_jax.system import sharding
from vit_jax.train import config as config_lib

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, "The run's config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, "The run's workdir (its Orbax checkpoints).")
_SPLIT = flags.DEFINE_string('split', None, 'Split to evaluate (default: config.test_split).')
flags.mark_flags_as_required(['config', 'workdir'])


def logits_per_dtype(config, params, split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """{dtype: logits [N, classes]} over every example of `split`, and the labels [N]."""
  from vit_jax import data  # imports TF lazily

  info = data.get_dataset_info(config.dataset, data_dir=config.data_dir)
  mesh = sharding.make_mesh({'data': -1})
  batches = data.eval_iterator(
    config.dataset,
    split,
    global_batch=config.batch_eval,
    crop=config.pp.crop,
    resize_mode=config.pp.resize_mode,
    data_dir=config.data_dir,
    sharding=sharding.batch_sharding(mesh, (('batch', 'data'),)),
  )
  forwards = {}
  for name, dtype in (('float32', jnp.float32), ('bfloat16', jnp.bfloat16)):
    model = models.get_model(
      config.model_name,
      num_classes=info.num_classes,
      dtype=dtype,
      **config_lib.model_overrides(config),
    )
    forwards[name] = jax.jit(lambda p, x, model=model: model.apply({'params': p}, x))
  outputs = {name: [] for name in forwards}
  labels = []
  for batch in batches:
    keep = np.asarray(batch['mask']) > 0
    labels.append(np.asarray(batch['label'])[keep])
    for name, forward in forwards.items():
      outputs[name].append(np.asarray(forward(params, batch['image']), np.float32)[keep])
  return {k: np.concatenate(v) for k, v in outputs.items()}, np.concatenate(labels)


def compare(reference: np.ndarray, other: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """Error of `other` logits relative to `reference`, per example, and top-1 statistics."""
  rel = np.linalg.norm(other - reference, axis=-1) / np.maximum(
    np.linalg.norm(reference, axis=-1), 1e-30
  )
  top_ref, top_other = reference.argmax(-1), other.argmax(-1)
  return {
    'examples': len(labels),
    'rel_error_median': float(np.median(rel)),
    'rel_error_p99': float(np.percentile(rel, 99)),
    'rel_error_max': float(rel.max()),
    'abs_error_max': float(np.abs(other - reference).max()),
    'top1_agreement': float(np.mean(top_ref == top_other)),
    'accuracy_reference': float(np.mean(top_ref == labels)),
    'accuracy_other': float(np.mean(top_other == labels)),
  }


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  params = jax.tree.map(jnp.asarray, orbax_io.load_params(_WORKDIR.value))
  logits, labels = logits_per_dtype(config, params, _SPLIT.value or config.test_split)
  r = compare(logits['float32'], logits['bfloat16'], labels)
  print(
    f'{config.model_name} ({config.dataset}, {r["examples"]} examples), bfloat16 vs '
    'float32 compute, same float32 params:'
  )
  print(
    '| relative logits error: median / p99 / max | max abs logit diff | top-1 agreement '
    '| accuracy f32 | accuracy bf16 |'
  )
  print('| --- | ---: | ---: | ---: | ---: |')
  print(
    f'| {r["rel_error_median"]:.2e} / {r["rel_error_p99"]:.2e} / {r["rel_error_max"]:.2e} '
    f'| {r["abs_error_max"]:.3f} | {r["top1_agreement"]:.2%} | '
    f'{r["accuracy_reference"]:.2%} | {r["accuracy_other"]:.2%} |'
  )


if __name__ == '__main__':
  app.run(main)
