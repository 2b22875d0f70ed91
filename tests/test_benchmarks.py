"""The benchmark scripts run (tiny settings; speed itself is measured by running them)."""

import pathlib
import re
import subprocess
import sys

from helpers import command_env

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_cpu_is_described_by_its_model_cores_and_isa():
  from vit_jax.system import cpu_devices

  cpuinfo = (
    'processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n'
    'flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n\n'
    'processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n'
  )
  cores = cpu_devices.cores()
  assert cpu_devices.describe_cpu(cpuinfo) == (
    f'Intel(R) Xeon(R) Platinum 8480+, {cores} cores; avx2 avx512f avx512_bf16 amx_tile '
    'amx_bf16 amx_int8'
  )
  zen4 = 'model name\t: AMD EPYC 9R14\nflags\t\t: avx2 avx512f avx512_bf16 avx512_vnni\n'
  assert cpu_devices.describe_cpu(zen4) == (
    f'AMD EPYC 9R14, {cores} cores; avx2 avx512f avx512_vnni avx512_bf16 (no AMX)'
  )


def test_vs_timm_prints_a_table_row_without_timm():
  # The script's own device choice (one per core), not the test suite's 8 fake devices.
  env = command_env()
  out = subprocess.run(
    [
      sys.executable,
      str(ROOT / 'benchmarks' / 'vs_timm.py'),
      '--no_timm',
      '--models=testing',
      '--image_size=32',
      '--batch=2',
      '--modes=train',
      '--dtypes=bfloat16',
      '--rounds=1',
      '--steps=1',
      '--pause=0',
      '--attention=per_head,xla',
    ],
    capture_output=True,
    text=True,
    check=True,
    timeout=300,
    env=env,
  ).stdout
  # The CPU the numbers come from, and the load beside each row.
  assert re.fullmatch(r'CPU: .+, \d+ cores; [\w ]*( \(no AMX\))?', out.splitlines()[0])
  rows = [line for line in out.splitlines() if line.startswith('| testing')]
  assert all(float(r.split(' | ')[-1].rstrip(' |')) >= 0 for r in rows)
  assert [r.split(' | ')[:4] for r in rows] == [
    ['| testing attention=per_head', 'train', 'bfloat16', '2'],
    ['| testing attention=xla', 'train', 'bfloat16', '2'],
  ]
  assert all(float(r.split(' | ')[4].replace(',', '')) > 0 for r in rows)
  # The flags chosen per dtype, and vit_jax's worker's peak memory (no timm: '-').
  assert re.fullmatch(r'XLA:CPU flags: (bfloat16: .+|yours, XLA_FLAGS=.*)', out.splitlines()[1])
  assert all(re.fullmatch(r'\d+\.\d / -', r.split(' | ')[-2]) for r in rows)


def test_bf16_matmul_prints_gflops_per_route():
  out = subprocess.run(
    [
      sys.executable,
      str(ROOT / 'benchmarks' / 'bf16_matmul.py'),
      '--shapes=256x128x256',
      '--routes=xla,xla-eigen,torch',
      '--repeats=2',
    ],
    capture_output=True,
    text=True,
    check=True,
    timeout=300,
    env=command_env(),
  ).stdout.splitlines()
  assert out[0].startswith('CPU: ')
  assert out[1] == '| shape [MxK]x[KxN] | dtype | xla GFLOP/s | xla-eigen GFLOP/s | torch GFLOP/s |'
  rows = [line.split(' | ') for line in out if line.startswith('| [256x128]')]
  assert [r[1] for r in rows] == ['bfloat16', 'float32']
  assert all(float(v.rstrip(' |')) > 0 for r in rows for v in r[2:])
