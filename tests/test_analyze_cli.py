"""`python -m vit_jax.analyze`: every analysis from a checkpoint to a PNG and a JSON.

A tiny ViT saved as a released-format `.npz` and a folder of images stand in for a trained
model and its dataset; the numbers themselves are tested in tests/test_analysis_*.py.
"""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np

from helpers import command_env
from helpers import ROOT
from vit_jax import models
from vit_jax.data import synthetic
from vit_jax.weights import released


def _analyze(*args):
  return subprocess.run(
    [sys.executable, '-m', 'vit_jax.analyze', *args],
    cwd=ROOT,
    env=command_env(),
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )


def test_every_analysis_writes_a_figure_and_its_numbers(tmp_path):
  # 'testing' at 64px: 16x16 patches, a 4x4 grid, one block of 2 heads, class token.
  model = models.get_model('testing', num_classes=3)
  variables = model.init(jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32))
  rng = np.random.default_rng(0)  # nothing zero (the head), so the loss depends on every param.
  params = jax.tree.map(
    lambda x: np.asarray(x) + rng.normal(0, 0.05, np.shape(x)), nn.meta.unbox(variables['params'])
  )
  npz = str(tmp_path / 'tiny.npz')
  released.save(npz, params)
  folder = str(tmp_path / 'images')
  for split in ('train', 'test'):
    synthetic.write_image_folder(
      folder, split, synthetic.smooth_images(12, 64, 64, seed=1), np.arange(12) % 3, ['a', 'b', 'c']
    )
  out = str(tmp_path / 'out')
  result = _analyze(
    f'--checkpoint={npz}',
    '--model=testing',
    f'--dataset={folder}',
    f'--out={out}',
    '--num_images=8',
    '--hessian_batches=2',
    '--hessian_batch=4',
    '--landscape_steps=3',
    '--landscape_batches=1',
  )
  assert result.returncode == 0, result.stderr[-3000:]
  files = set(os.listdir(out))
  for name in (
    'filters',
    'posemb',
    'attention_distance',
    'rollout',
    'fourier',
    'noise',
    'hessian',
    'landscape',
  ):
    assert f'{name}.json' in files and f'{name}.png' in files, (name, files)
    assert os.path.getsize(os.path.join(out, f'{name}.png')) > 1000
  assert {'fourier_curves.png', 'variance.png'} <= files
  numbers = {
    n: json.load(open(os.path.join(out, f'{n}.json')))
    for n in ('attention_distance', 'fourier', 'hessian', 'landscape', 'posemb')
  }
  assert np.shape(numbers['attention_distance']['distance']) == (1, 2)  # 1 layer x 2 heads.
  assert numbers['attention_distance']['stride'] == 16
  # Residual stream: the embedding, then after attention and after the MLP.
  assert numbers['fourier']['kinds'] == ['embedding', 'attention', 'mlp']
  assert np.shape(numbers['fourier']['delta_log_amplitude']) == (3, 2)  # h/2 = 2 frequencies.
  assert np.shape(numbers['hessian']['eigenvalues']) == (2, 5)
  assert np.shape(numbers['landscape']['losses']) == (3, 3)
  assert np.shape(numbers['posemb']['similarity']) == (4, 4, 4, 4)
  assert 'Hessian spectra' in result.stderr  # the progress bar of the long analyses.


def test_analyses_that_do_not_apply_are_skipped_and_bad_input_is_one_line(tmp_path):
  model = models.get_model('testing', num_classes=3, posemb='relative')
  variables = model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
  npz = str(tmp_path / 'relative.npz')
  released.save(npz, nn.meta.unbox(variables['params']))
  out = str(tmp_path / 'out')
  result = _analyze(
    f'--checkpoint={npz}',
    '--model=testing',
    '--image_size=32',
    '--what=posemb,filters',
    f'--out={out}',
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'posemb: skipped' in result.stdout
  assert sorted(os.listdir(out)) == ['filters.json', 'filters.png']
  # Images needed but no dataset; an unknown analysis; a .npz without --model.
  for args, message in [
    (['--what=rollout'], 'needs images: pass --dataset'),
    (['--what=attention'], '--what=attention unknown'),
  ]:
    result = _analyze(
      f'--checkpoint={npz}', '--model=testing', '--image_size=32', f'--out={out}', *args
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  result = _analyze(f'--checkpoint={npz}', f'--out={out}')
  assert result.returncode == 2 and 'pass the model it holds with --model' in result.stderr
