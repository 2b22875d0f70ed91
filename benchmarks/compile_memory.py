r"""Compile time and memory of the train step: blocks as a loop vs one scan, remat policies.

    python benchmarks/compile_memory.py [--model ViT-L_16] [--batch 8] [--image_size 224]
        [--configs loop:none,scan:none,loop:dots_saveable,scan:dots_saveable,...]

Compile only: the inputs are abstract (jax.ShapeDtypeStruct), nothing is allocated or run, so
even ViT-L fits a small machine. The step is the real one (vit_jax.train.step.make_train_step
with AdamW from vit_jax.train.optim, float32, jitted with the state donated as the loop does)
on one device. Each configuration `layout:remat_policy` compiles in a fresh subprocess, so
that caches and memory of one do not help or burden the next. Prints a markdown table:

  compile s    lowering (tracing) + XLA compilation of the train step, wall seconds
  temp GiB     compiled.memory_analysis().temp_size_in_bytes: activations and scratch
  total GiB    arguments + outputs + temp - aliased (donated) bytes: the step's peak
  GFLOPs       XLA's count per step (one layer of a scan), and what the training loop logs:
               for scan, every layer counted (throughput.uncounted_layer_flops); the extra
               seconds this takes (lowering 1- and 2-layer unrolled steps) are noted
"""

import argparse
import json
import subprocess
import sys
import time


def measure(model_name: str, batch: int, image_size: int, scan: bool, remat: str) -> dict:
  """Compiles one train step; returns its timings, memory and FLOPs."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from vit_jax import models
  from vit_jax.train import config as config_lib
  from vit_jax.train import optim
  from vit_jax.train import state as state_lib
  from vit_jax.train import step as step_lib
  from vit_jax.train import throughput

  c = config_lib.base_config()
  c.optim.name, c.optim.weight_decay, c.base_lr = 'adamw', 1e-4, 1e-3
  schedule = optim.make_schedule(c.base_lr, 10_000, 100, 'cosine')
  tx = optim.make_optimizer(c, schedule)

  def train_step(scanned, num_layers=None):
    overrides = {} if num_layers is None else {'num_layers': num_layers}
    model = models.get_model(
      model_name, num_classes=1000, scan=scanned, remat_policy=remat, **overrides
    )
    init = state_lib.init_fn(model, tx, (1, image_size, image_size, 3))
    state = jax.eval_shape(lambda r: nn.meta.unbox(init(r)), jax.random.key(0))
    step = step_lib.make_train_step(model, tx, schedule, num_classes=1000)
    return jax.jit(step, donate_argnums=0), state

  images = jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.float32)
  batch_ = {'image': images, 'label': jax.ShapeDtypeStruct((batch,), jnp.int32)}
  step, state = train_step(scan)
  begin = time.perf_counter()
  lowered = step.lower(state, batch_)
  lower_seconds = time.perf_counter() - begin
  compiled = lowered.compile()
  compile_seconds = time.perf_counter() - begin
  memory = compiled.memory_analysis()
  result = {
    'compile_seconds': compile_seconds,
    'lower_seconds': lower_seconds,
    'temp_bytes': memory.temp_size_in_bytes,
    'total_bytes': (
      memory.argument_size_in_bytes
      + memory.output_size_in_bytes
      + memory.temp_size_in_bytes
      - memory.alias_size_in_bytes
    ),
    'xla_flops': throughput.step_flops_per_device(compiled),
  }
  if scan:  # what the training loop adds for the layers XLA does not count.

    def lower_unrolled(num_layers):
      step, state = train_step(False, num_layers)
      return step.lower(state, batch_)

    begin = time.perf_counter()
    uncounted = throughput.uncounted_layer_flops(
      lower_unrolled, models.get_model(model_name).num_layers, num_devices=1
    )
    result['count_seconds'] = time.perf_counter() - begin
    result['flops'] = throughput.step_flops_per_device(compiled, uncounted=uncounted)
  else:
    result['flops'] = result['xla_flops']
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='ViT-L_16')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument(
    '--configs',
    default='loop:none,scan:none,loop:dots_saveable,'
    'scan:dots_saveable,loop:nothing_saveable,scan:nothing_saveable',
    help='comma-separated layout:remat_policy pairs',
  )
  parser.add_argument('--one', help=argparse.SUPPRESS)  # internal: measure one, print JSON.
  args = parser.parse_args()
  if args.one:
    layout, remat = args.one.split(':')
    print(json.dumps(measure(args.model, args.batch, args.image_size, layout == 'scan', remat)))
    return

  print(
    f'{args.model}, {args.image_size}px, batch {args.batch}, float32, train step with '
    'AdamW, 1 device\n'
  )
  print('| layout | remat | compile s | temp GiB | total GiB | GFLOPs (XLA) | GFLOPs (logged) |')
  print('| --- | --- | ---: | ---: | ---: | ---: | ---: |')
  gib = 2.0**30
  for config in args.configs.split(','):
    out = subprocess.run(
      [
        sys.executable,
        __file__,
        f'--model={args.model}',
        f'--batch={args.batch}',
        f'--image_size={args.image_size}',
        f'--one={config}',
      ],
      capture_output=True,
      text=True,
      check=True,
    ).stdout
    r = json.loads(out.strip().splitlines()[-1])
    layout, remat = config.split(':')
    note = f' (+{r["count_seconds"]:.1f} to count FLOPs)' if 'count_seconds' in r else ''

    print(
      f'| {layout} | {remat} | {r["compile_seconds"]:.1f}{note} | {r["temp_bytes"] / gib:.2f} '
      f'| {r["total_bytes"] / gib:.2f} | {r["xla_flops"] / 1e9:,.0f} | '
      f'{r["flops"] / 1e9:,.0f} |',
      flush=True,
    )


if __name__ == '__main__':
  main()
