"""Transfer through the command line: fine-tune on real MNIST digits at 28px with
`pretrained_path` = the workdir of a run pre-trained on sklearn_digits at 16px (the default
job's 500-step run, conftest.default_run, trained once per test run).

`test_train_finetune.py` covers `.npz` files and the in-process API on one dataset. Whether
fine-tuning beats training from scratch is measured by `benchmarks/transfer.py` (it needs a
fully pre-trained model, 1,500 steps: too slow for a test); here the fine-tuning is short, so
the fine-tuned parameters are still close to where they started, which shows what was loaded.
"""

import json
import os
import subprocess

import numpy as np

from helpers import command_env
from helpers import main_command
from helpers import ROOT
from vit_jax.data import synthetic
from vit_jax.run import orbax_io
from vit_jax.weights import resample
from vit_jax.weights import tree

STEPS = 60


def _main(workdir, *overrides):
  result = subprocess.run(
    main_command(workdir, None, *(f'--config.{o}' for o in overrides)),
    cwd=ROOT,
    env=command_env(),  # the CLI's own device choice (one per core).
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(workdir, 'final_metrics.json')) as f:
    return json.load(f)


def _corr(a, b):
  return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_pretrain_on_digits_then_finetune_on_mnist_at_higher_resolution(
  tmp_path, shared_dir, default_run
):
  mnist = shared_dir / 'data' / 'mnist'
  images, labels = synthetic.read_mnist_idx(
    str(mnist / 't10k-images-idx3-ubyte.gz'), str(mnist / 't10k-labels-idx1-ubyte.gz')
  )
  folder = str(tmp_path / 'mnist')
  names = [str(d) for d in range(10)]
  synthetic.write_image_folder(folder, 'train', images[:300], labels[:300], names)
  synthetic.write_image_folder(folder, 'test', images[-500:], labels[-500:], names)

  pre, ft = str(default_run[0]), str(tmp_path / 'ft')
  # Seed 1 (pre-training used 0): without the pre-trained params, its initialisation would
  # share nothing with the pre-trained model (correlation ~0 for every kernel, measured).
  final = _main(
    ft,
    f'dataset={folder}',
    'pp.crop=28',
    'batch=32',
    f'total_steps={STEPS}',
    'warmup_steps=6',
    f'eval_every={STEPS}',
    f'checkpoint_every={STEPS}',
    'seed=1',
    f'pretrained_path={pre}',
  )

  flat_pre = tree.flatten(orbax_io.load_params(pre))
  flat_ft = tree.flatten(orbax_io.load_params(ft))
  # Position embeddings: 4x4 patches of 16px -> 7x7 of 28px, resampled from the pre-trained.
  posemb = 'Transformer/posembed_input/pos_embedding'
  assert flat_pre[posemb].shape == (1, 16, 64) and flat_ft[posemb].shape == (1, 49, 64)
  resampled = resample.resample_posemb(flat_pre[posemb], 0, (4, 4), (7, 7))
  assert _corr(flat_ft[posemb], resampled) > 0.9  # measured 0.98.
  # Every other weight matrix but the head's was loaded (measured >= 0.99 after 60 steps).
  kernels = [k for k in flat_pre if k.endswith('kernel') and not k.startswith('head/')]
  assert len(kernels) == 1 + 4 * 6  # patch embedding; per block query, key, value, out, 2 MLP.
  correlations = {key: _corr(flat_ft[key], flat_pre[key]) for key in kernels}
  print(
    f'position embeddings {_corr(flat_ft[posemb], resampled):.3f}, kernels '
    f'min {min(correlations.values()):.3f}, test accuracy {final["test/accuracy"]:.3f}'
  )
  assert min(correlations.values()) > 0.9, correlations
  # A new 10-class head trained on the folder's labels: above chance (0.1) on its test split.
  assert flat_ft['head/kernel'].shape == (64, 10)
  assert final['test/examples'] == 500 and final['test/accuracy'] > 0.15
