"""`python -m vit_jax.analysis.compare`: two models' analyses in one figure and one table."""

import json
import os
import subprocess
import sys

import numpy as np

from helpers import ROOT


def _write(folder, label, eigenvalues, drops):
  os.makedirs(folder)
  freqs = np.linspace(0, np.pi, len(drops)).tolist()
  values = np.asarray(eigenvalues, float)
  summary = dict(
    num=values.size,
    negative_fraction=float(np.mean(values < 0)),
    mean_positive=float(values[values > 0].mean()),
    max=float(values.max()),
    min=float(values.min()),
  )
  with open(os.path.join(folder, 'hessian.json'), 'w') as f:
    json.dump({'model': label, 'eigenvalues': [eigenvalues], 'summary': summary}, f)
  with open(os.path.join(folder, 'noise.json'), 'w') as f:
    json.dump({'model': label, 'frequencies': freqs, 'accuracy_drop': drops}, f)


def test_side_by_side_figures_and_table(tmp_path):
  _write(tmp_path / 'vit', 'ViT', [2.0, 1.0, -0.5, 0.5, 0.25], [0.10, 0.10, 0.0, 0.0])
  _write(tmp_path / 'cnn', 'CNN', [40.0, 20.0, 10.0, 5.0, 5.0], [0.0, 0.0, 0.2, 0.4])
  out = tmp_path / 'out'
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'vit_jax.analysis.compare',
      f'--runs={tmp_path / "vit"},{tmp_path / "cnn"}',
      f'--out={out}',
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode == 0, result.stderr
  rows = result.stdout.strip().splitlines()
  # Mean positive eigenvalue, max, share negative; noise drop at f <= pi/2 (2 of 4 points).
  assert rows[2] == '| ViT | 0.94 | 2.00 | 20% | 10.0% | 0.0% |'
  assert rows[3] == '| CNN | 16.00 | 40.00 | 0% | 0.0% | 30.0% |'
  assert os.path.getsize(out / 'hessian.png') > 1000 and os.path.getsize(out / 'noise.png') > 1000
