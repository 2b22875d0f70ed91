r"""Inference throughput of a model: images/s and images/s/device after warm-up.

  python -m vit_jax.inference_time --model=ViT-B_16 --batch=64 --image_size=224 \
      [--dtype=bfloat16] [--steps=20] [--warmup=3]

The batch is split over all devices (data parallel, params replicated; on a CPU host one
device per core, see `vit_jax.system.cpu_devices`); each timed step is one
jitted forward pass, timed to completion; the median step time is reported.
"""

import difflib
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import models
from vit_jax.system import cpu_devices
from vit_jax.system import sharding

_MODEL = flags.DEFINE_string('model', 'ViT-B_16', 'Registered model name.')
_BATCH = flags.DEFINE_integer('batch', 64, 'Global batch size (divisible by the device count).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 224, 'Input resolution.')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 1000, 'Head size.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype.')
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed steps.')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed steps first (compilation, caches).')


def measure(
  model_name: str,
  batch: int,
  image_size: int,
  *,
  num_classes: int = 1000,
  dtype=jnp.float32,
  steps: int = 20,
  warmup: int = 3,
) -> dict[str, float]:
  """Median seconds per forward step, images/s and images/s/device."""
  devices = jax.device_count()
  if batch % devices:
    raise ValueError(
      f'batch={batch} is not divisible by the {devices} devices; use a multiple of {devices}.'
    )
  model = models.get_model(model_name, num_classes=num_classes, dtype=dtype)
  mesh = sharding.make_mesh({'data': -1})
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  batch_sharding = sharding.batch_sharding(mesh, (('batch', 'data'),))
  images = jax.device_put(
    np.random.default_rng(0).uniform(-1, 1, (batch, image_size, image_size, 3)).astype(np.float32),
    batch_sharding,
  )
  params = jax.jit(
    lambda r: model.init(r, images[:1], train=False)['params'], out_shardings=replicated
  )(jax.random.key(0))
  forward = jax.jit(
    lambda p, x: model.apply({'params': p}, x, train=False),
    in_shardings=(replicated, batch_sharding),
  )
  for _ in range(warmup):
    forward(params, images).block_until_ready()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    forward(params, images).block_until_ready()
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  return {
    'seconds_per_step': median,
    'images_per_sec': batch / median,
    'images_per_sec_per_device': batch / median / devices,
    'devices': devices,
  }


def _flag_error(argv) -> str | None:
  """One line for a flag value that cannot be measured (checked before anything compiles)."""
  if len(argv) > 1:
    return f'unexpected arguments {argv[1:]}; pass flags only (--model=..., --batch=...).'
  names = models.model_names()
  if _MODEL.value not in names:
    close = difflib.get_close_matches(_MODEL.value, names, n=3)
    hint = f'did you mean {", ".join(close)}? ' if close else ''
    return (
      f'unknown --model={_MODEL.value}; {hint}list the models with `python -c "from '
      'vit_jax import models; print(models.model_names())"`.'
    )
  for flag, value, low in (
    ('batch', _BATCH.value, 1),
    ('image_size', _IMAGE_SIZE.value, 1),
    ('num_classes', _NUM_CLASSES.value, 1),
    ('steps', _STEPS.value, 1),
    ('warmup', _WARMUP.value, 0),
  ):
    if value < low:
      return f'--{flag}={value}; pass an integer >= {low}.'
  return None


def main(argv):
  message = _flag_error(argv)
  if message:
    print(f'Error: {message}', file=sys.stderr)
    sys.exit(2)
  cpu_devices.split_host([_BATCH.value])  # On a CPU host: one device per core.
  try:
    result = measure(
      _MODEL.value,
      _BATCH.value,
      _IMAGE_SIZE.value,
      num_classes=_NUM_CLASSES.value,
      dtype=jnp.bfloat16 if _DTYPE.value == 'bfloat16' else jnp.float32,
      steps=_STEPS.value,
      warmup=_WARMUP.value,
    )
  except ValueError as e:  # batch vs device count, model overrides: before any compile.
    print(f'Error: {e}', file=sys.stderr)
    sys.exit(2)
  print(
    f'| model | batch | size | dtype | devices | ms/step | img/s | img/s/device |\n'
    f'| {_MODEL.value} | {_BATCH.value} | {_IMAGE_SIZE.value} | {_DTYPE.value} | '
    f'{result["devices"]} | {1000 * result["seconds_per_step"]:.2f} | '
    f'{result["images_per_sec"]:,.1f} | {result["images_per_sec_per_device"]:,.1f} |'
  )


if __name__ == '__main__':
  app.run(main)
