"""Fine-tuning from a released-format `.npz` (and from an earlier run's Orbax checkpoint) at a
different resolution: position embeddings resampled, new head, training improves.

Both start from the default job's 500-step run (conftest.default_run, trained once per test
run; test_train_loop checks that it learnt): the `.npz` through the command line, the Orbax run
through the in-process API."""

import json
import os

import numpy as np

from helpers import load_config
from helpers import train_command
from vit_jax.run import orbax_io
from vit_jax.train import loop
from vit_jax.train import setup_run
from vit_jax.weights import released


def train(workdir, data_dir, **overrides):
  config = load_config('default', data_dir=data_dir, **overrides)
  return loop.train_and_evaluate(setup_run.build(config, str(workdir)))


def train_losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    lines = [json.loads(line) for line in f]
  return [(l['step'], l['train/loss']) for l in lines if 'train/loss' in l]


def test_finetune_from_npz_at_new_resolution(tmp_path, digits_data_dir, default_run):
  # Pre-trained at 16px (4x4 grid); exported in the released format.
  params = orbax_io.load_params(str(default_run[0]))
  released.save(tmp_path / 'pre.npz', params)
  assert params['Transformer']['posembed_input']['pos_embedding'].shape == (1, 16, 64)

  # Fine-tune at 24px (6x6 grid): SGD as in the fine-tuning recipe.
  # As a user would: `python -m vit_jax.main` (the other test covers the in-process API).
  ft = tmp_path / 'ft'
  final, _ = train_command(
    ft,
    digits_data_dir,
    pretrained_path=str(tmp_path / 'pre.npz'),
    pp__crop=24,
    total_steps=60,
    warmup_steps=5,
    base_lr=0.03,
    progress_every=1,
    eval_every=1000,
    checkpoint_every=1000,
    optim__name='sgd',
  )
  tuned = orbax_io.load_params(str(ft))
  assert tuned['Transformer']['posembed_input']['pos_embedding'].shape == (1, 36, 64)
  losses = train_losses(ft)
  first, last = losses[0][1], np.mean([l for _, l in losses[-10:]])
  print(
    f'fine-tune at 24px: loss step 1 {first:.3f} -> last 10 steps {last:.3f}, '
    f'test accuracy {final["test/accuracy"]:.3f}'
  )
  assert losses[0][0] == 1 and last < 0.5 * first
  assert final['test/accuracy'] >= 0.8  # chance is 0.1 (measured: 0.93).


def test_finetune_from_orbax_run(tmp_path, digits_data_dir, default_run):
  final = train(
    tmp_path / 'ft',
    digits_data_dir,
    pretrained_path=str(default_run[0]),
    total_steps=20,
    warmup_steps=2,
    progress_every=1,
    eval_every=1000,
    checkpoint_every=1000,
  )
  losses = train_losses(tmp_path / 'ft')
  assert losses[-1][1] < losses[0][1]
  assert final['step'] == 20
