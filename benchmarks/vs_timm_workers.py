"""The worker processes of benchmarks/vs_timm.py: one framework each (vit_jax or timm), spoken
to over stdin/stdout. Run by the driver as `python vs_timm_workers.py jax|timm`."""

import json
import statistics
import sys
import time

TIMM_NAMES = {
  'ViT-Ti_16': 'vit_tiny_patch16_224',
  'ViT-S_16': 'vit_small_patch16_224',
  'ViT-S_32': 'vit_small_patch32_224',
  'ViT-B_16': 'vit_base_patch16_224',
  'ViT-B_32': 'vit_base_patch32_224',
  'ViT-B_8': 'vit_base_patch8_224',
  'ViT-L_16': 'vit_large_patch16_224',
  'ViT-L_32': 'vit_large_patch32_224',
  'ViT-H_14': 'vit_huge_patch14_224',
}


def _jax_worker(spec):
  import jax

  from vit_jax.system import cpu_devices

  if spec['cpu_devices']:
    jax.config.update('jax_num_cpu_devices', spec['cpu_devices'])
  # What vit_jax.main does on a CPU host: one device per core (unless --cpu_devices said how
  # many) and the XLA:CPU flags for the dtype and CPU.
  cpu_devices.prepare([spec['dtype']], [spec['batch']])
  import flax.linen as nn
  import jax.numpy as jnp
  import numpy as np

  from vit_jax import models
  from vit_jax.system import sharding
  from vit_jax.train import config as config_lib
  from vit_jax.train import optim
  from vit_jax.train import state as state_lib
  from vit_jax.train import step as step_lib
  from vit_jax.train import throughput

  batch, size = spec['batch'], spec['image_size']
  overrides = {} if spec['attention'] == 'auto' else {'attention_impl': spec['attention']}
  if spec['scan']:
    overrides['scan'] = True
  if spec['remat_policy'] != 'none':
    overrides['remat_policy'] = spec['remat_policy']
  model = models.get_model(
    spec['model'], num_classes=1000, dtype=jnp.dtype(spec['dtype']), **overrides
  )
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32))
  labels = jnp.asarray(rng.integers(0, 1000, batch).astype(np.int32))
  config = config_lib.base_config()
  config.optim.name, config.base_lr, config.optim.weight_decay = 'adamw', 1e-3, 1e-4
  schedule = optim.make_schedule(1e-3, 10_000, 100, 'cosine')
  tx = optim.make_optimizer(config, schedule)
  state = jax.jit(lambda r: nn.meta.unbox(state_lib.init_fn(model, tx, (1, size, size, 3))(r)))(
    jax.random.key(0)
  )
  # Batch split over the devices (one unless --cpu_devices), everything else replicated.
  mesh = sharding.make_mesh({'data': -1})
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  images, labels = jax.device_put(images, split), jax.device_put(labels, split)
  state = jax.device_put(state, replicated)
  if spec['mode'] == 'infer':
    fn = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False), out_shardings=split)
    args = (state.params, images)
    carry = False
  else:
    fn = jax.jit(
      step_lib.make_train_step(model, tx, schedule, num_classes=1000),
      out_shardings=(replicated, replicated),
      donate_argnums=0,
    )
    args = (state, {'image': images, 'label': labels})
    carry = True
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_seconds = time.perf_counter() - start
  flops = throughput.step_flops_per_device(compiled)
  # Model FLOPs for MFU: one image's forward pass, counted by XLA on the plain model (no
  # scan, whose body XLA counts once; no remat; einsum attention, as a cuDNN call counts 0).
  plain = models.get_model(
    spec['model'], num_classes=1000, dtype=jnp.dtype(spec['dtype']), attention_impl='xla'
  )
  one = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  plain_params = jax.eval_shape(
    lambda: nn.meta.unbox(
      plain.init(jax.random.key(0), jnp.zeros(one.shape), train=False)['params']
    )
  )
  forward_flops = throughput.xla_flops(
    jax.jit(lambda p, x: plain.apply({'params': p}, x)).lower(plain_params, one)
  )

  def run(steps):
    nonlocal args
    out = None
    for _ in range(steps):
      out = compiled(*args)
      if carry:
        args = (out[0], args[1])
    jax.block_until_ready(out)

  run(4)  # warm-up: the first steps also grow the host heap (see vit_jax.system.host_memory).
  device = jax.devices()[0]
  measured_peak = _matmul_peak() if device.platform != 'cpu' else None
  from vit_jax.system import host_memory

  return run, {
    'compile_seconds': compile_seconds,
    'flops': flops,
    'devices': len(jax.devices()),
    'forward_flops_per_image': forward_flops,
    'measured_peak_flops': measured_peak,
    'device': device.device_kind,
    'platform': device.platform,
    'retain_host_memory': host_memory.retain_freed_memory(),
  }


def _matmul_peak(n: int = 8192, repeats: int = 20) -> float:
  """Dense bfloat16 matmul FLOP/s of one device (f32 accumulation), median of `repeats`."""
  import jax
  import jax.numpy as jnp

  a = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
  b = jax.random.normal(jax.random.key(2), (n, n), jnp.bfloat16)
  dot = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
  dot(a, b).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    dot(a, b).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * n**3 / statistics.median(times)


def _timm_worker(spec):
  import timm
  import torch

  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  batch, size = spec['batch'], spec['image_size']
  torch.manual_seed(0)
  model = timm.create_model(TIMM_NAMES[spec['model']], num_classes=1000, img_size=size)
  model = model.to(device)
  images = torch.rand(batch, 3, size, size, device=device) * 2 - 1
  labels = torch.randint(0, 1000, (batch,), device=device)
  use_bf16 = spec['dtype'] == 'bfloat16'
  autocast = lambda: torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=use_bf16)
  compile_ = spec['compile'] if spec['compile'] is not None else device == 'cuda'
  if spec['mode'] == 'infer':
    model.eval()
    forward = torch.compile(model) if compile_ else model

    def step():
      with torch.inference_mode(), autocast():
        forward(images)
  else:
    model.train()
    forward = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)

    def step():
      opt.zero_grad(set_to_none=True)
      with autocast():
        loss = torch.nn.functional.cross_entropy(forward(images).float(), labels)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
      opt.step()

  def run(steps):
    for _ in range(steps):
      step()
    if device == 'cuda':
      torch.cuda.synchronize()

  start = time.perf_counter()
  run(4)
  name = torch.cuda.get_device_name() if device == 'cuda' else 'cpu'
  return run, {
    'compile_seconds': time.perf_counter() - start,
    'device': name,
    'threads': torch.get_num_threads(),
    'torch': torch.__version__,
    'timm': timm.__version__,
  }


def worker_main(kind: str) -> None:
  """Builds and warms up, says READY, then answers `RUN n` with the seconds n steps took."""
  spec = json.loads(sys.stdin.readline())
  run, info = (_jax_worker if kind == 'jax' else _timm_worker)(spec)
  print('READY ' + json.dumps(info), flush=True)
  for line in sys.stdin:
    if line.startswith('RUN'):
      steps = int(line.split()[1])
      start = time.perf_counter()
      run(steps)
      print(f'TIME {time.perf_counter() - start}', flush=True)
    else:
      break


if __name__ == '__main__':
  worker_main(sys.argv[1])
