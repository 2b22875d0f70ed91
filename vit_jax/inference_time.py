r"""Inference throughput of a model: images/s and images/s/device after warm-up.

  python -m vit_jax.inference_time --model=ViT-B_16 [--batch=64] [--image_size=224] \
      [--dtype=bfloat16] [--steps=20] [--warmup=3]

The batch is split over all devices (data parallel, params replicated; on a CPU host one
device per core, see `vit_jax.system.cpu_devices`); each timed step is one
jitted forward pass, timed to completion; the median step time is reported as a table row.
Sizes default to the device: batch 64, 20 steps after 3 on a GPU or TPU; batch 8, 5 steps
after 1 on a CPU (ViT-B_16 at batch 64 for 23 steps took 8 minutes on 2 cores). Progress
(compile time, each step) goes to stderr as it happens.
"""

import difflib
import statistics
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import models
from vit_jax.system import cpu_devices
from vit_jax.system import sharding

_MODEL = flags.DEFINE_string('model', 'ViT-B_16', 'Registered model name.')
_BATCH = flags.DEFINE_integer(
  'batch', None, 'Global batch size, divisible by the device count (default: 64; 8 on a CPU).'
)
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 224, 'Input resolution.')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 1000, 'Head size.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype.')
_STEPS = flags.DEFINE_integer('steps', None, 'Timed steps (default: 20; 5 on a CPU).')
_WARMUP = flags.DEFINE_integer(
  'warmup', None, 'Untimed steps first: compilation, caches (default: 3; 1 on a CPU).'
)
# (batch, steps, warmup) by default: an accelerator's, a CPU's.
DEFAULTS = {'accelerator': (64, 20, 3), 'cpu': (8, 5, 1)}


def measure(
  model_name: str,
  batch: int,
  image_size: int,
  *,
  num_classes: int = 1000,
  dtype=jnp.float32,
  steps: int = 20,
  warmup: int = 3,
  log=None,
) -> dict[str, float]:
  """Median seconds per forward step, images/s and images/s/device; `log(line)` hears of the
  compilation and of every step as it ends."""
  log = log or (lambda line: None)
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
  log(f'{model_name}, batch {batch} over {devices} device(s): compiling...')
  start = time.perf_counter()
  forward = forward.lower(params, images).compile()
  log(f'compiled in {time.perf_counter() - start:.1f} s')
  for i in range(warmup):
    start = time.perf_counter()
    forward(params, images).block_until_ready()
    log(f'warm-up step {i + 1}/{warmup}: {time.perf_counter() - start:.3f} s')
  times = []
  for i in range(steps):
    start = time.perf_counter()
    forward(params, images).block_until_ready()
    times.append(time.perf_counter() - start)
    log(f'step {i + 1}/{steps}: {times[-1]:.3f} s')
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
    if value is not None and value < low:
      return f'--{flag}={value}; pass an integer >= {low}.'
  return None


def main(argv):
  logging.set_verbosity(logging.WARNING)  # JAX's backend probing is not the user's business.
  message = _flag_error(argv)
  if message:
    print(f'Error: {message}', file=sys.stderr)
    sys.exit(2)
  # On a CPU host: one device per core (before JAX starts; nothing on a GPU or TPU).
  cpu_devices.prepare([_DTYPE.value], [_BATCH.value or DEFAULTS['cpu'][0]])
  kind = 'cpu' if jax.default_backend() == 'cpu' else 'accelerator'
  batch, steps, warmup = (
    given if given is not None else default
    for given, default in zip((_BATCH.value, _STEPS.value, _WARMUP.value), DEFAULTS[kind])
  )
  try:
    result = measure(
      _MODEL.value,
      batch,
      _IMAGE_SIZE.value,
      num_classes=_NUM_CLASSES.value,
      dtype=jnp.bfloat16 if _DTYPE.value == 'bfloat16' else jnp.float32,
      steps=steps,
      warmup=warmup,
      log=lambda line: print(line, file=sys.stderr, flush=True),
    )
  except ValueError as e:  # batch vs device count, model overrides: before any compile.
    print(f'Error: {e}', file=sys.stderr)
    sys.exit(2)
  print(
    '| model | batch | size | dtype | devices | steps | ms/step (median) | img/s | img/s/device |\n'
    '| --- |' + ' ---: |' * 8 + '\n'
    f'| {_MODEL.value} | {batch} | {_IMAGE_SIZE.value} | {_DTYPE.value} | '
    f'{result["devices"]} | {steps} | {1000 * result["seconds_per_step"]:.2f} | '
    f'{result["images_per_sec"]:,.1f} | {result["images_per_sec_per_device"]:,.1f} |'
  )


if __name__ == '__main__':
  app.run(main)
