"""`python -m vit_jax.analysis.compare`: two models' analyses in one figure and one table."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT
from vit_jax.analysis import compare


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
  # Two runs of one model name (each dropped the other before): named by their folders.
  _write(tmp_path / 'vit', 'ViT-Ti_16', [2.0, 1.0, -0.5, 0.5, 0.25], [0.10, 0.10, 0.0, 0.0])
  _write(tmp_path / 'vit_seed1', 'ViT-Ti_16', [4.0, 2.0, 1.0, 1.0, 1.0], [0.2, 0.0, 0.0, 0.0])
  _write(tmp_path / 'cnn', 'CNN', [40.0, 20.0, 10.0, 5.0, 5.0], [0.0, 0.0, 0.2, 0.4])
  out = tmp_path / 'out'
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'vit_jax.analysis.compare',
      f'--runs={tmp_path / "vit"},{tmp_path / "vit_seed1"},{tmp_path / "cnn"}',
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
  assert rows[2:] == [
    '| vit | 0.94 | 2.00 | 20% | 10.0% | 0.0% |',
    '| vit_seed1 | 1.80 | 4.00 | 0% | 10.0% | 0.0% |',
    '| CNN | 16.00 | 40.00 | 0% | 0.0% | 30.0% |',
  ]
  assert os.path.getsize(out / 'hessian.png') > 1000 and os.path.getsize(out / 'noise.png') > 1000


def test_runs_that_nothing_tells_apart_are_refused(tmp_path):
  _write(tmp_path / 'a' / 'out', 'ViT-Ti_16', [1.0], [0.0, 0.0])
  _write(tmp_path / 'b' / 'out', 'ViT-Ti_16', [2.0], [0.0, 0.0])
  with pytest.raises(ValueError) as e:
    compare.load([tmp_path / 'a' / 'out', tmp_path / 'b' / 'out'])
  assert str(e.value) == (
    "two of --runs are both called 'out' (by label and by folder name); rerun python -m "
    'vit_jax.analyze with --label=NAME for each, or give them distinct folders.'
  )
