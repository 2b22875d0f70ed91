r"""Single matmul GFLOP/s of a ViT's shapes: XLA:CPU's routes against PyTorch, same machine.

    python benchmarks/bf16_matmul.py [--shapes=6304x384x1536,6304x1536x384,384x6304x1536]
        [--repeats=20]

A shape MxKxN is [M, K] x [K, N]; the defaults are ViT-S/16 at batch 32 (6304 = 32 x 197
tokens): the MLP's first matmul, its second, and a weight gradient. Routes, each XLA one in a
fresh process (XLA reads its flags once):
  xla         jnp.dot, XLA:CPU's defaults (YNNPACK fusions for dots in jax 0.10)
  xla-onednn  --xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot
  xla-eigen   --xla_cpu_experimental_ynn_fusion_type= (YNNPACK off: XLA's own Eigen kernels)
  torch       torch.mm (bfloat16: oneDNN, AMX where the CPU has it)
bfloat16 rows multiply bfloat16 operands with float32 results (XLA: preferred_element_type, as
vit_jax.models.layers.matmul does); float32 rows are the reference. One device, all cores'
threads; GFLOP/s = 2 M K N / the median of `--repeats` timed calls. The first line names the
CPU (vit_jax.system.cpu_devices.describe_cpu).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROUTES = {
  'xla': '',
  'xla-onednn': '--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot',
  'xla-eigen': '--xla_cpu_experimental_ynn_fusion_type=',
  'torch': None,
}


def _median_seconds(call, repeats: int) -> float:
  call()  # warm-up (compilation, first-touch of the output).
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _worker(route: str, shapes, dtypes, repeats: int) -> dict:
  import numpy as np

  rng = np.random.default_rng(0)
  out = {}
  for m, k, n in shapes:
    a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    for dtype in dtypes:
      if route == 'torch':
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        x, y = (torch.from_numpy(v).to(getattr(torch, dtype)) for v in (a, b))
        seconds = _median_seconds(lambda: torch.mm(x, y), repeats)
      else:
        import jax
        import jax.numpy as jnp

        x, y = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
        dot = jax.jit(lambda u, v: jnp.dot(u, v, preferred_element_type=jnp.float32))
        seconds = _median_seconds(lambda: dot(x, y).block_until_ready(), repeats)
      out[f'{m}x{k}x{n} {dtype}'] = 2 * m * k * n / seconds / 1e9
  return out


def _gflops(value: float) -> str:
  return f'{value:.0f}' if value >= 100 else f'{value:.3g}'


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--shapes', default='6304x384x1536,6304x1536x384,384x6304x1536')
  parser.add_argument('--dtypes', default='bfloat16,float32')
  parser.add_argument('--routes', default=','.join(ROUTES))
  parser.add_argument('--repeats', type=int, default=20)
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  args = parser.parse_args()
  shapes = [tuple(int(v) for v in s.split('x')) for s in args.shapes.split(',')]
  dtypes = args.dtypes.split(',')
  if args.worker:
    print(json.dumps(_worker(args.worker, shapes, dtypes, args.repeats)))
    return

  sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
  from vit_jax.system import cpu_devices

  print(f'CPU: {cpu_devices.describe_cpu()}')
  routes = args.routes.split(',')
  results = {}
  for route in routes:
    env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
    env.update(JAX_PLATFORMS='cpu', XLA_FLAGS=ROUTES[route] or '')
    done = subprocess.run(
      [sys.executable, __file__, f'--worker={route}', f'--shapes={args.shapes}',
       f'--dtypes={args.dtypes}', f'--repeats={args.repeats}'],
      env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode:
      results[route] = f'failed (exit {done.returncode}): {done.stderr.strip()[-200:]}'
    else:
      results[route] = json.loads(done.stdout.strip().splitlines()[-1])
  print('| shape [MxK]x[KxN] | dtype | ' + ' | '.join(f'{r} GFLOP/s' for r in routes) + ' |')
  print('| --- | --- |' + ' ---: |' * len(routes))
  for m, k, n in shapes:
    for dtype in dtypes:
      key = f'{m}x{k}x{n} {dtype}'
      cells = [
        _gflops(results[r][key]) if isinstance(results[r], dict) else results[r] for r in routes
      ]
      print(f'| [{m}x{k}]x[{k}x{n}] | {dtype} | ' + ' | '.join(cells) + ' |')
  print(f'load {os.getloadavg()[0]:.2f}')


if __name__ == '__main__':
  main()
