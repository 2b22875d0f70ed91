"""The benchmark scripts run (tiny settings; speed itself is measured by running them)."""

import pathlib
import subprocess
import sys

from helpers import command_env

ROOT = pathlib.Path(__file__).resolve().parents[1]


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
  rows = [line for line in out.splitlines() if line.startswith('| testing')]
  assert [r.split(' | ')[:4] for r in rows] == [
    ['| testing attention=per_head', 'train', 'bfloat16', '2'],
    ['| testing attention=xla', 'train', 'bfloat16', '2'],
  ]
  assert all(float(r.split(' | ')[4].replace(',', '')) > 0 for r in rows)
