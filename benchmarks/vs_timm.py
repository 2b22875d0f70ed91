r"""vit_jax vs timm: inference and train-step throughput, same machine, same run, alternating.

    pip install -e '.[bench]'      # timm + torch (optional extra)
    python benchmarks/vs_timm.py --models=ViT-Ti_16,ViT-S_16 --batch=32 \
        --modes=infer,train --dtypes=float32,bfloat16 [--rounds=7] [--steps=3]

Each framework runs in its own worker process (so that neither's thread pool spins while the
other runs); both build the model and warm up (compile), then the driver alternates rounds:
vit_jax runs `--steps` steps, then timm does, then the order flips. A round's rate is
batch * steps / seconds; the table gives the median over rounds and the ratio vit_jax / timm.

What is timed (random weights and images, 1000 classes):
  infer  one forward pass (vit_jax: jitted `apply`; timm: `eval()` under `inference_mode`).
  train  forward + softmax cross-entropy + backward + global-norm clip + AdamW update
         (vit_jax: the training loop's jitted, donated step from `vit_jax.train.step`; timm:
         `clip_grad_norm_` and `torch.optim.AdamW`).
  bfloat16: vit_jax computes matmuls in bfloat16 (params and activations float32, see
         `vit_jax.models.layers.matmul`); timm runs under `torch.autocast(dtype=bfloat16)`.
On the CPU, vit_jax's worker runs with VIT_JAX_RETAIN_HOST_MEMORY=1 (`--host_memory=retain`,
see `vit_jax.system.host_memory`; `--host_memory=system` leaves malloc alone), and `--cpu_devices=N`
splits the host into N XLA devices and the batch over them (data parallel, gradients
all-reduced); the default, 0, is one device per core, as `python -m vit_jax.main` does (see
`vit_jax.system.cpu_devices`): XLA:CPU runs that faster than one device with N threads.
On GPU timm also uses `torch.compile` (`--compile`, default on for CUDA) and its default
fused SDPA attention. MFU = model FLOPs/s (forward FLOPs of one image as XLA counts them on the
plain model, x3 for a train step: recomputation and the optimizer do not count) / peak, against the
dense bfloat16 matmul rate measured on the device itself (accelerators; 8192^3 `jnp.dot`, f32
accumulation, median of 20) or `--peak_tflops`; the table's device peak is printed beside it.
"""

import argparse
import json
import os
import statistics
import subprocess
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
INSTALL_HINT = (
  'timm/torch are not installed; install the benchmark extra: pip install -e '
  "'.[bench]'  (or run with --no_timm to measure vit_jax alone)."
)


# --------------------------------------------------------------------------- workers
def _jax_worker(spec):
  import jax

  from vit_jax.system import cpu_devices

  if spec['cpu_devices']:
    jax.config.update('jax_num_cpu_devices', spec['cpu_devices'])
  else:
    cpu_devices.split_host([spec['batch']])  # What vit_jax.main does on a CPU host.
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


# --------------------------------------------------------------------------- driver
class Worker:
  """A worker process spoken to over stdin/stdout."""

  def __init__(self, kind: str, spec: dict):
    self.kind = kind
    env = dict(os.environ)
    if kind == 'jax' and spec['host_memory'] == 'retain':
      env['VIT_JAX_RETAIN_HOST_MEMORY'] = '1'
    self.proc = subprocess.Popen(
      [sys.executable, __file__, f'--worker={kind}'],
      env=env,
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True,
    )
    self.proc.stdin.write(json.dumps(spec) + '\n')
    self.proc.stdin.flush()
    self.info = json.loads(self._expect('READY'))

  def _expect(self, word: str) -> str:
    for line in self.proc.stdout:
      if line.startswith(word + ' '):
        return line[len(word) + 1 :]
    raise RuntimeError(
      f'the {self.kind} worker exited (exit code {self.proc.wait()}); its error is printed above.'
    )

  def run(self, steps: int) -> float:
    self.proc.stdin.write(f'RUN {steps}\n')
    self.proc.stdin.flush()
    return float(self._expect('TIME'))

  def close(self) -> None:
    try:
      self.proc.stdin.write('QUIT\n')
      self.proc.stdin.close()
    except BrokenPipeError:
      pass
    self.proc.wait()


def _measure(spec: dict, args) -> dict:
  kinds = ['jax'] + ([] if args.no_timm else ['timm'])
  workers = {}
  try:
    for kind in kinds:  # one at a time: compilations do not overlap.
      workers[kind] = Worker(kind, spec)
    rates = {kind: [] for kind in kinds}
    for r in range(args.rounds):
      for kind in kinds if r % 2 == 0 else kinds[::-1]:
        time.sleep(args.pause)  # let the other framework's threads go idle.
        rates[kind].append(spec['batch'] * args.steps / workers[kind].run(args.steps))
    return {kind: (statistics.median(v), v, workers[kind].info) for kind, v in rates.items()}
  finally:
    for w in workers.values():
      w.close()


def _peak(info: dict, override_tflops):
  """Peak FLOP/s for MFU: --peak_tflops, else measured on the device, else none (CPU)."""
  if override_tflops:
    return override_tflops * 1e12
  return info.get('measured_peak_flops')


def _row(args, model, mode, dtype, batch, attention, remat, infos) -> None:
  """Measures one configuration and prints its table row."""
  spec = dict(
    model=model,
    mode=mode,
    dtype=dtype,
    batch=batch,
    image_size=args.image_size,
    attention=attention,
    host_memory=args.host_memory,
    cpu_devices=args.cpu_devices,
    scan=args.scan,
    remat_policy=remat,
    compile=None if args.compile is None else args.compile == 'on',
  )
  result = _measure(spec, args)
  jax_rate, jax_runs, jax_info = result['jax']
  peak = _peak(jax_info, args.peak_tflops)
  model_flops = (3 if mode == 'train' else 1) * jax_info['forward_flops_per_image']
  mfu = f'{model_flops * jax_rate / (peak * jax_info["devices"]):.1%}' if peak else '-'
  timm_rate, timm_runs, timm_info = result.get('timm', (None, [], {}))
  infos.update({'vit_jax': jax_info, 'timm': timm_info})
  fmt = lambda runs: ' '.join(f'{r:.1f}' for r in runs)
  label = model + ''.join(
    f' {k}={v}'
    for k, v in (('attention', attention), ('remat', remat), ('scan', args.scan))
    if v not in ('auto', 'none', False)
  )
  print(
    f'| {label} | {mode} | {dtype} | {batch} | {jax_rate:,.1f} | '
    f'{"-" if timm_rate is None else f"{timm_rate:,.1f}"} | '
    f'{"-" if timm_rate is None else f"{jax_rate / timm_rate:.2f}x"} | {mfu} | '
    f'{fmt(jax_runs)} | {fmt(timm_runs)} |',
    flush=True,
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--worker', choices=['jax', 'timm'], help=argparse.SUPPRESS)
  parser.add_argument('--models', default='ViT-Ti_16,ViT-S_16')
  parser.add_argument('--batch', default='32', help='Comma-separated batch sizes.')
  parser.add_argument('--modes', default='infer,train')
  parser.add_argument('--dtypes', default='float32,bfloat16')
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--rounds', type=int, default=7, help='Alternating rounds per framework.')
  parser.add_argument('--steps', type=int, default=3, help='Steps per round.')
  parser.add_argument('--pause', type=float, default=0.3, help='Seconds idle between rounds.')
  parser.add_argument(
    '--attention',
    default='auto',
    help='vit_jax attention_impl(s), comma-separated: auto, per_head, xla, cudnn.',
  )
  parser.add_argument('--scan', action='store_true', help='vit_jax: scan over layers.')
  parser.add_argument(
    '--remat_policy',
    default='none',
    help='vit_jax remat policies, comma-separated: none, nothing_saveable, dots_saveable, ...',
  )
  parser.add_argument(
    '--compile',
    default=None,
    choices=['on', 'off'],
    help='torch.compile for timm (default: on for CUDA, off on CPU).',
  )
  parser.add_argument(
    '--host_memory',
    default='retain',
    choices=['retain', 'system'],
    help='vit_jax on the CPU: VIT_JAX_RETAIN_HOST_MEMORY=1 or plain malloc.',
  )
  parser.add_argument(
    '--cpu_devices',
    type=int,
    default=0,
    help='vit_jax on the CPU: XLA devices to split the host into (data '
    'parallel); 0: one per core, as vit_jax.main does (vit_jax.system.cpu_devices).',
  )
  parser.add_argument('--no_timm', action='store_true', help='Measure vit_jax only.')
  parser.add_argument(
    '--peak_tflops',
    type=float,
    default=None,
    help='Peak TFLOP/s of one device for the MFU column (GPUs/TPUs known).',
  )
  args = parser.parse_args()
  if args.worker:
    worker_main(args.worker)
    return
  if not args.no_timm:
    try:
      import timm  # noqa: F401
      import torch  # noqa: F401
    except ImportError:
      sys.exit(INSTALL_HINT)
  unknown = [m for m in args.models.split(',') if m not in TIMM_NAMES]
  if unknown and not args.no_timm:
    sys.exit(f'No timm counterpart for {unknown}; choose from {sorted(TIMM_NAMES)}.')

  print(
    '| model | mode | dtype | batch | vit_jax img/s | timm img/s | vit_jax / timm | '
    'MFU | vit_jax rounds | timm rounds |'
  )
  print('| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |')
  infos = {}
  variants = [(a, r) for a in args.attention.split(',') for r in args.remat_policy.split(',')]
  for model in args.models.split(','):
    for mode in args.modes.split(','):
      for dtype in args.dtypes.split(','):
        for batch in (int(b) for b in args.batch.split(',')):
          for attention, remat in variants:
            _row(args, model, mode, dtype, batch, attention, remat, infos)
  if infos.get('vit_jax', {}).get('platform', 'cpu') != 'cpu':
    from vit_jax.train import throughput

    measured, table = (
      _peak(infos['vit_jax'], args.peak_tflops),
      throughput.peak_flops_per_device(infos['vit_jax']['device']),
    )
    print(
      f'\nMFU peak: {measured / 1e12:.0f} TFLOP/s (measured bf16 matmul or --peak_tflops); '
      f'datasheet: {"unknown" if table is None else f"{table / 1e12:.0f} TFLOP/s"}.'
    )
  print(
    f'\nMedians of {args.rounds} alternating rounds of {args.steps} steps; '
    f'{os.cpu_count()} CPU cores. Workers: {json.dumps(infos)}'
  )


if __name__ == '__main__':
  main()
