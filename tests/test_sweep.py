"""`python -m vit_jax.sweep`: a config's runs, and the table of mean ± std over seeds."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import load_config
from helpers import ROOT
from vit_jax import sweep


def test_posemb_ablation_sweep_is_every_posemb_times_three_seeds():
  runs = sweep.load_sweep(os.path.join(ROOT, 'configs', 'posemb_ablation.py') + ':/tmp/mnist')
  assert len(runs) == 21
  assert {r['model.posemb'] for r in runs} == {
    'none',
    'learn',
    'learn_2d',
    'relative',
    'sincos2d',
    'relative_2d',
    'relative_bias',
  }
  assert sorted({r['seed'] for r in runs}) == [0, 1, 2]
  assert sweep.run_name(runs[0]) == 'posemb=none_seed=0'


def test_posemb_ablation_schedule_is_its_arg():
  path = os.path.join(ROOT, 'configs', 'posemb_ablation.py')
  default = load_config('posemb_ablation', '/data/mnist')
  short = load_config('posemb_ablation', '/data/mnist,600')
  assert default.dataset == short.dataset == '/data/mnist'
  assert (default.total_steps, default.warmup_steps, default.eval_every) == (2400, 240, 2400)
  assert (short.total_steps, short.warmup_steps, short.eval_every) == (600, 60, 600)
  with pytest.raises(ValueError, match='number of training steps'):
    sweep.load_sweep(path + ':/data/mnist,long')


def test_summarize_groups_by_everything_but_the_seed():
  runs = [
    ({'model.posemb': 'none', 'seed': s}, {'test/accuracy': a})
    for s, a in enumerate([0.60, 0.62, 0.64])
  ]
  runs += [({'model.posemb': 'learn', 'seed': 0}, {'test/accuracy': 0.9})]
  rows = sweep.summarize(runs, 'test/accuracy')
  assert [r['group'] for r in rows] == [{'model.posemb': 'none'}, {'model.posemb': 'learn'}]
  # float64 (eps64 = 2.2e-16): a mean of 3 (<= 3 roundings), and the same np.std of the
  # same 3 values (deviations of 0.02 from 0.62 lose ~5 bits: ~30 eps64 at worst).
  assert rows[0]['mean'] == pytest.approx(0.62, rel=1e-15)
  assert rows[0]['std'] == pytest.approx(np.std([0.60, 0.62, 0.64], ddof=1), rel=1e-14)
  assert rows[1]['std'] == 0.0
  table = sweep.markdown_table(rows, 'test/accuracy')
  assert table.splitlines()[2] == '| none | 0.6200 ± 0.0200 | 3 |'
  with pytest.raises(KeyError, match="'test/top1' is not in the final metrics"):
    sweep.summarize(runs, 'test/top1')


def test_finished_runs_are_not_run_again_and_the_table_is_saved(tmp_path):
  config = tmp_path / 'tiny_sweep.py'
  config.write_text(
    'def get_sweep(arg=None):\n'
    '  return [{"model.posemb": p, "seed": s} for p in ("none", "learn") '
    'for s in (0, 1)]\n'
  )
  for i, name in enumerate(
    ['posemb=none_seed=0', 'posemb=none_seed=1', 'posemb=learn_seed=0', 'posemb=learn_seed=1']
  ):
    os.makedirs(tmp_path / 'runs' / name)
    (tmp_path / 'runs' / name / 'final_metrics.json').write_text(
      json.dumps({'test/accuracy': 0.5 + 0.1 * i})
    )
  result = subprocess.run(
    [sys.executable, '-m', 'vit_jax.sweep', f'--config={config}', f'--workdir={tmp_path / "runs"}'],
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode == 0, result.stderr
  assert '$' not in result.stdout  # nothing was trained.
  assert result.stdout.splitlines()[:4] == [  # where the sweep is (nothing said so, before).
    'run 1/4 posemb=none_seed=0: finished already, kept',
    'run 2/4 posemb=none_seed=1: finished already, kept',
    'run 3/4 posemb=learn_seed=0: finished already, kept',
    'run 4/4 posemb=learn_seed=1: finished already, kept',
  ]
  assert '| learn | 0.7500 ± 0.0707 | 2 |' in result.stdout  # 0.7 and 0.8.
  saved = json.loads((tmp_path / 'runs' / 'results.json').read_text())
  # Means of 2 float64 values, written to JSON exactly (shortest repr): <= 2 roundings.
  assert [r['mean'] for r in saved['rows']] == pytest.approx([0.55, 0.75], rel=1e-15)
  assert (tmp_path / 'runs' / 'table.md').read_text().startswith('| model.posemb |')

  # --only: the runs whose name contains one of the comma-separated parts.
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'vit_jax.sweep',
      f'--config={config}',
      f'--workdir={tmp_path / "runs"}',
      '--only=none_seed=1,learn_seed=0',
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode == 0, result.stderr
  assert '| none | 0.6000 ± 0.0000 | 1 |' in result.stdout
  assert '| learn | 0.7000 ± 0.0000 | 1 |' in result.stdout


def test_progress_lines_give_the_sweeps_eta_from_its_trained_runs():
  assert sweep.progress_line(1, 8, 'seed=0', False, [], 8) == (
    'run 1/8 seed=0: training (8 to train; ETA after this one)'
  )
  # Two runs took 100 s and 140 s: 120 s per run, 6 left to train -> 12 minutes.
  assert sweep.progress_line(3, 8, 'seed=2', False, [100.0, 140.0], 6) == (
    'run 3/8 seed=2: training (6 to train; sweep ETA 0:12:00 at 0:02:00 per run)'
  )
  assert sweep.progress_line(4, 8, 'seed=3', True, [100.0], 5) == (
    'run 4/8 seed=3: finished already, kept'
  )
