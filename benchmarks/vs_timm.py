r"""vit_jax vs timm: inference and train-step throughput, same machine, same run, alternating.

    pip install -e '.[bench]'      # timm + torch (optional extra)
    python benchmarks/vs_timm.py --models=ViT-Ti_16,ViT-S_16 --batch=32 \
        --modes=infer,train --dtypes=float32,bfloat16 [--rounds=7] [--steps=3]

Each framework runs in its own worker process (benchmarks/vs_timm_workers.py, so that neither's
thread pool spins while the other runs); both build the model and warm up (compile), then the driver alternates rounds:
vit_jax runs `--steps` steps, then timm does, then the order flips. A round's rate is
batch * steps / seconds; the table gives the median over rounds and the ratio vit_jax / timm.
The first line names the CPU (model, cores, the ISA extensions that decide the kernels:
AVX-512, AVX512-BF16, AMX); `load` is the 1-minute load average when the row ended, the
benchmark's own ~1 included (one framework runs at a time): well above that, another job
shared the machine and the row is worth rerunning. `peak RSS` is each worker's peak resident
memory (VmHWM) when its row ended: compile, warm-up and every round.

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

from vs_timm_workers import TIMM_NAMES

INSTALL_HINT = (
  'timm/torch are not installed; install the benchmark extra: pip install -e '
  "'.[bench]'  (or run with --no_timm to measure vit_jax alone)."
)


# --------------------------------------------------------------------------- driver
class Worker:
  """A worker process spoken to over stdin/stdout."""

  def __init__(self, kind: str, spec: dict):
    self.kind = kind
    env = dict(os.environ)
    if kind == 'jax' and spec['host_memory'] == 'retain':
      env['VIT_JAX_RETAIN_HOST_MEMORY'] = '1'
    self.proc = subprocess.Popen(
      [sys.executable, os.path.join(os.path.dirname(__file__), 'vs_timm_workers.py'), kind],
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

  def peak_gb(self) -> float | None:
    """The worker's peak resident memory so far (VmHWM), GB; None off Linux."""
    try:
      with open(f'/proc/{self.proc.pid}/status', encoding='utf-8') as f:
        line = next(l for l in f if l.startswith('VmHWM:'))
    except (OSError, StopIteration):
      return None
    return int(line.split()[1]) * 1024 / 1e9

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
    for kind in kinds:
      workers[kind].info['peak_gb'] = workers[kind].peak_gb()
    return {kind: (statistics.median(v), v, workers[kind].info) for kind, v in rates.items()}
  finally:
    for w in workers.values():
      w.close()


def _peak(info: dict, override_tflops):
  """Peak FLOP/s for MFU: --peak_tflops, else measured on the device, else none (CPU)."""
  if override_tflops:
    return override_tflops * 1e12
  return info.get('measured_peak_flops')


def _gb(info: dict) -> str:
  return '-' if info.get('peak_gb') is None else f'{info["peak_gb"]:.1f}'


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
    f'{fmt(jax_runs)} | {fmt(timm_runs)} | {_gb(jax_info)} / {_gb(timm_info)} | '
    f'{os.getloadavg()[0]:.2f} |',
    flush=True,
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
  if not args.no_timm:
    try:
      import timm  # noqa: F401
      import torch  # noqa: F401
    except ImportError:
      sys.exit(INSTALL_HINT)
  unknown = [m for m in args.models.split(',') if m not in TIMM_NAMES]
  if unknown and not args.no_timm:
    sys.exit(f'No timm counterpart for {unknown}; choose from {sorted(TIMM_NAMES)}.')

  # The CPU decides the kernels (AVX-512, AVX512-BF16, AMX) and the machines are shared: both
  # go beside the numbers. cpu_devices imports JAX but starts no backend in this process.
  from vit_jax.system import cpu_devices
  from vit_jax.system import xla_cpu_flags

  print(f'CPU: {cpu_devices.describe_cpu()}')
  if xla_cpu_flags.user_decides():
    print(f'XLA:CPU flags: yours, XLA_FLAGS={os.environ["XLA_FLAGS"]}')
  else:
    chosen = {d: ' '.join(xla_cpu_flags.choose([d])) for d in args.dtypes.split(',')}
    print('XLA:CPU flags: ' + '; '.join(f'{d}: {f or "defaults"}' for d, f in chosen.items()))
  print(
    '| model | mode | dtype | batch | vit_jax img/s | timm img/s | vit_jax / timm | '
    'MFU | vit_jax rounds | timm rounds | peak RSS GB (vit_jax / timm) | load |'
  )
  print('| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: |')
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
