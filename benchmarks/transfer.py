r"""Does pre-training help? Pre-train on sklearn_digits, fine-tune on few MNIST digits at 28px.

    python benchmarks/transfer.py --workdir=/tmp/transfer --steps=300,1000 --seeds=0,1,2 \
        [--mnist_dir=DIR]

(README.md has the table it printed.)

Everything is real data and offline:
  source  `sklearn_digits` (built in): 1,437 train images, 8x8 upsampled to 16px; the default
          job (configs/default.py: ViT, 4 layers, width 64, 4x4 patches, GAP, 1,500 steps).
  target  MNIST (the 10,000-image test split of the IDX files in --mnist_dir, written here as
          a PNG image folder): `train` = --train_images drawn from the first 8,000, `test` =
          the last 2,000. At 28px the 4x4 patches give a 7x7 grid instead of 4x4.

Rows of the printed table, all evaluated on the same 2,000 MNIST test images:
  from scratch      `python -m vit_jax.main --config=configs/default.py` on the MNIST folder at
                    28px for each of --steps steps (AdamW, lr 1e-3, batch 128).
  fine-tuned        the same command and steps with --config.pretrained_path=<pre-training
                    workdir>: every parameter but the head is the pre-trained one, position
                    embeddings resampled 4x4 -> 7x7, new (zero) head; the recipe (AdamW,
                    lr, warm-up, augmentation) is the same as from scratch.
  linear probe      the pre-trained model frozen: its pooled features (after the final
                    LayerNorm, what the head sees) of every train / test image, then
                    scikit-learn's multinomial LogisticRegression on the train features
                    (C chosen by 5-fold cross-validation on the train images only).
                    At 16px (the pre-training resolution, images resized) and at 28px
                    (position embeddings resampled as for fine-tuning).
  random features   the same probe on a randomly initialised model (what the architecture
                    alone gives).
  raw pixels        the same logistic regression on the 28x28x3 pixels (no network).
Runs go through the main CLI in subprocesses; the pre-training run is reused when its workdir
already holds `final_metrics.json`. Seeds (--seeds) change init, data order and augmentation
of the scratch / fine-tuned runs; the table gives mean, min and max over seeds.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time
import warnings

from absl import app
from absl import flags
from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from sklearn import linear_model
from sklearn import pipeline as sk_pipeline
from sklearn import preprocessing

from vit_jax import data
from vit_jax import models
from vit_jax.data import mnist_folder
from vit_jax.run import orbax_io
from vit_jax.train import config as config_lib
from vit_jax.weights import fit

ROOT = pathlib.Path(__file__).resolve().parents[1]

_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the runs and the MNIST folder go.')
_MNIST = flags.DEFINE_string(
  'mnist_dir',
  None,
  'Folder with t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (default: downloaded '
  'once, see vit_jax.data.mnist_folder).',
)
_TRAIN = flags.DEFINE_integer('train_images', 300, 'MNIST training images (target set).')
_TEST = flags.DEFINE_integer('test_images', 2000, 'MNIST test images (the last ones).')
_CROP = flags.DEFINE_integer('crop', 28, 'Target resolution (a multiple of the patch size 4).')
_PRE_STEPS = flags.DEFINE_integer('pretrain_steps', 1500, 'Pre-training steps on sklearn_digits.')
_STEPS = flags.DEFINE_list('steps', ['300'], 'Steps of the scratch / fine-tuned runs (each).')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds of the scratch / fine-tuned runs.')
_OVERRIDES = flags.DEFINE_multi_string(
  'override',
  [],
  'Extra --config.<field>=value for the target runs (both kinds), e.g. --override=base_lr=0.003.',
)
flags.mark_flags_as_required(['workdir'])

CONFIG = 'configs/default.py'


def run_main(workdir: str, *overrides: str) -> dict:
  """`python -m vit_jax.main --config=configs/default.py` with overrides; final metrics."""
  final = os.path.join(workdir, 'final_metrics.json')
  if not os.path.exists(final):
    env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
    cmd = [
      sys.executable,
      '-m',
      'vit_jax.main',
      f'--config={CONFIG}',
      f'--workdir={workdir}',
      *(f'--config.{o}' for o in overrides),
    ]
    start = time.time()
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if result.returncode:
      with open(f'{workdir}.stderr', 'w') as f:
        f.write(result.stderr)
      raise RuntimeError(
        f'{" ".join(cmd)} failed with exit code {result.returncode}; its '
        f'stderr is in {workdir}.stderr'
      )
    logging.warning('%.0f s: %s', time.time() - start, ' '.join(cmd[3:]))
  with open(final) as f:
    return json.load(f)


def _default_config():
  spec = importlib.util.spec_from_file_location('default_config', ROOT / CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def featurizer(params, crop: int):
  """images float32 [B, crop, crop, 3] in [-1, 1] -> features [B, D] of a frozen network.

  Args:
    params: 'pixels' (the images themselves, flattened), None (the default config's model,
      randomly initialised) or pre-trained params (head ignored; position embeddings
      resampled to `crop` as for fine-tuning). Features are the pooled tokens after the final
      LayerNorm: what the head sees.
  """
  if isinstance(params, str) and params == 'pixels':
    return lambda images: np.asarray(images).reshape(len(images), -1)
  config = _default_config()
  model = models.get_model(config.model_name, num_classes=0, **config_lib.model_overrides(config))
  init = nn.meta.unbox(model.init(jax.random.key(0), jnp.zeros([1, crop, crop, 3]))['params'])
  if params is not None:
    init = fit.load_pretrained(params, init)
  forward = jax.jit(lambda x: model.apply({'params': init}, x))
  return lambda images: np.asarray(forward(jnp.asarray(images)))


def features(featurize, dataset: str, split: str, crop: int):
  """(features [N, D], labels [N]) of every image of `split`, eval preprocessing at `crop`."""
  feats, labels = [], []
  for batch in data.eval_iterator(
    dataset, split, global_batch=250, crop=crop, process_index=0, process_count=1
  ):
    keep = np.asarray(batch['mask']) > 0
    feats.append(featurize(batch['image'])[keep])
    labels.append(np.asarray(batch['label'])[keep])
  return np.concatenate(feats), np.concatenate(labels)


def linear_probe(params, root: str, crop: int) -> float:
  """MNIST test accuracy of a logistic regression on frozen features (see featurizer).

  scikit-learn's multinomial LogisticRegressionCV on standardised features, the L2 strength
  chosen by 5-fold cross-validation on the train images only.
  """
  featurize = featurizer(params, crop)
  x_train, y_train = features(featurize, root, 'train', crop)
  x_test, y_test = features(featurize, root, 'test', crop)
  probe = sk_pipeline.make_pipeline(
    preprocessing.StandardScaler(),
    linear_model.LogisticRegressionCV(
      Cs=[0.001, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0], cv=5, max_iter=5000
    ),
  )
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', FutureWarning)  # scikit-learn's coming defaults.
    probe.fit(x_train, y_train)
  return float(probe.score(x_test, y_test))


def _summary(values) -> str:
  values = np.asarray(values) * 100
  if len(values) == 1:
    return f'{values[0]:.1f}%'
  return f'{values.mean():.1f}% ({values.min():.1f}-{values.max():.1f})'


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  workdir = os.path.abspath(_WORKDIR.value)
  os.makedirs(workdir, exist_ok=True)
  try:  # (writing is skipped when the folder already holds these splits.)
    root = mnist_folder.write_mnist_folder(
      _MNIST.value or mnist_folder.fetch_mnist(),
      os.path.join(workdir, 'mnist'),
      _TRAIN.value,
      _TEST.value,
    )
  except OSError as e:  # missing files, or offline (downloads.FetchError): one line.
    sys.exit(str(e))
  pre_dir = os.path.join(workdir, f'pretrain_{_PRE_STEPS.value}')
  pre = run_main(
    pre_dir,
    f'total_steps={_PRE_STEPS.value}',
    f'eval_every={_PRE_STEPS.value}',
    f'checkpoint_every={_PRE_STEPS.value}',
  )

  crop = _CROP.value
  results = {}  # (steps, 'scratch' | 'finetuned') -> [final metrics per seed]
  for steps in map(int, _STEPS.value):
    target = [
      f'dataset={root}',
      f'pp.crop={crop}',
      f'total_steps={steps}',
      f'eval_every={steps}',
      f'checkpoint_every={steps}',
      *_OVERRIDES.value,
    ]
    tag = '_'.join(
      [
        f'n{_TRAIN.value}',
        f'c{crop}',
        f's{steps}',
        *(o.replace('=', '').replace('.', '') for o in _OVERRIDES.value),
      ]
    )
    for seed in _SEEDS.value:
      results.setdefault((steps, 'scratch'), []).append(
        run_main(os.path.join(workdir, f'scratch_{tag}_seed{seed}'), *target, f'seed={seed}')
      )
      results.setdefault((steps, 'finetuned'), []).append(
        run_main(
          os.path.join(workdir, f'finetune_{tag}_seed{seed}'),
          *target,
          f'seed={seed}',
          f'pretrained_path={pre_dir}',
        )
      )

  pre_params = orbax_io.load_params(pre_dir)
  probes = [
    ('linear probe, frozen pre-trained features, 16px', pre_params, 16),
    (f'linear probe, frozen pre-trained features, {crop}px', pre_params, crop),
    (f'linear probe, random-init features, {crop}px', None, crop),
    (f'logistic regression on the raw {crop}px pixels (no network)', 'pixels', crop),
  ]

  print(
    f'Pre-training: sklearn_digits, 16px, {_PRE_STEPS.value} steps, test accuracy '
    f'{pre["test/accuracy"]:.2%}. Target: MNIST, {_TRAIN.value} train images, '
    f'{_TEST.value} test images, {crop}px; seeds {",".join(_SEEDS.value)}.'
  )
  print()
  print('| on MNIST test | steps | test accuracy: mean (min-max) | per seed |')
  print('| --- | ---: | ---: | --- |')
  for (steps, kind), finals in results.items():
    name = 'from scratch' if kind == 'scratch' else 'fine-tuned from sklearn_digits'
    accs = [r['test/accuracy'] for r in finals]
    print(f'| {name} | {steps} | {_summary(accs)} | {" / ".join(f"{a:.1%}" for a in accs)} |')
  for name, params, size in probes:
    print(f'| {name} | - | {_summary([linear_probe(params, root, size)])} | - |')


if __name__ == '__main__':
  app.run(main)
