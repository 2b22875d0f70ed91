"""The main job end to end: the default config learns (the README command, conftest.default_run);
metrics; bad configs (in-process)."""

import json
import os
import re

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from helpers import load_config
from vit_jax import models
from vit_jax.system import runtime
from vit_jax.train import loop
from vit_jax.train import setup_run
from vit_jax.weights import released
from vit_jax.weights import tree


def read_jsonl(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def test_default_config_learns(default_run):
  # The README's default job, shortened from 1,500 to 500 steps (same recipe otherwise),
  # trained once for this and the fine-tuning tests (conftest.default_run).
  workdir, final = default_run
  print(
    f'default config, 500 steps (the README command, a device per core): test accuracy '
    f'{final["test/accuracy"]:.4f} in {final["seconds"]:.0f}s'
  )
  assert final['test/examples'] == 360  # every test image counted once (batch 128).
  assert final['test/accuracy'] >= 0.9  # chance is 0.1; the full 1,500 steps reach >= 0.95.
  assert final['step'] == 500

  lines = read_jsonl(workdir)
  train = [l for l in lines if 'train/loss' in l]
  evals = [l for l in lines if 'test/accuracy' in l]
  assert [l['step'] for l in train] == list(range(100, 501, 100))
  assert [l['step'] for l in evals] == [250, 500]
  assert train[-1]['train/loss'] < 0.5 * train[0]['train/loss']
  assert 0 <= evals[-1]['test/accuracy'] <= 1
  assert {
    'train/learning_rate',
    'train/accuracy',
    'train/images_per_sec',
    'train/images_per_sec_per_device',
    'test/accuracy_top5',
    'test/loss',
  } <= (set(train[-1]) | set(evals[-1]))
  # TensorBoard reads the same numbers.
  events = event_accumulator.EventAccumulator(str(workdir / 'tensorboard'))
  events.Reload()
  tb = events.Scalars('test/accuracy')
  assert [e.step for e in tb] == [250, 500]
  assert tb[-1].value == pytest.approx(evals[-1]['test/accuracy'])
  assert sorted(os.listdir(workdir / 'checkpoints'))[:2] == ['250', '500']
  assert json.loads((workdir / 'config.json').read_text())['total_steps'] == 500

  # The command's last line: results, where the files are, what to try next; with the
  # absolute paths of the relative --workdir it was given (conftest.default_run).
  root = re.escape(str(workdir.resolve()))
  assert re.fullmatch(
    rf'Finished step 500 in \d+:\d\d:\d\d: test/accuracy {final["test/accuracy"]:.4f}\. '
    rf'Checkpoints: {root}/checkpoints; metrics: {root}/metrics\.jsonl; TensorBoard: '
    rf'tensorboard --logdir={root}/tensorboard\. Try: python -m vit_jax\.predict '
    rf'--checkpoint={root} IMAGES\.\.\.',
    final['printed'].splitlines()[-1],
  ), final['printed'][-2000:]


def build_error(tmp_path, digits_data_dir, name='default', arg=None, **overrides):
  config = load_config(name, arg, data_dir=digits_data_dir, **overrides)
  with pytest.raises(setup_run.ConfigError) as e:
    setup_run.build(config, str(tmp_path / 'run'))
  message = str(e.value)
  assert '\n' not in message
  return message


def test_batch_not_divisible_by_data_parallel_size(tmp_path, digits_data_dir):
  message = build_error(tmp_path, digits_data_dir, batch=100)
  assert 'config.batch=100 is not divisible by the data-parallel size 8' in message
  message = build_error(tmp_path, digits_data_dir, batch=128, accum_steps=32)
  assert 'accum_steps=32 micro-batches that are each divisible' in message


def test_mesh_product_must_equal_device_count(tmp_path, digits_data_dir):
  message = build_error(tmp_path, digits_data_dir, mesh__data=2, mesh__fsdp=2, mesh__model=1)
  assert 'sizes multiply to 4 but there are 8 devices' in message


def test_unknown_model_and_dataset(tmp_path, digits_data_dir):
  message = build_error(tmp_path, digits_data_dir, model_name='ViT-Q_16')
  assert "Unknown model 'ViT-Q_16'; valid names:" in message
  message = build_error(tmp_path, digits_data_dir, dataset='no_such_dataset_xyz')
  assert 'no_such_dataset_xyz' in message


def test_unwritable_workdir(tmp_path, digits_data_dir):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  config = load_config('default', data_dir=digits_data_dir)
  with pytest.raises(setup_run.ConfigError, match='is not writable'):
    setup_run.build(config, str(blocker / 'workdir'))


def test_pretrained_file_that_does_not_fit(tmp_path, digits_data_dir):
  other = models.get_model('testing', num_classes=10)
  import jax

  params = jax.eval_shape(other.init, jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
  released.save(
    tmp_path / 'other.npz',
    jax.tree.map(lambda x: np.ones(x.shape, x.dtype), tree.flatten(params['params'])),
  )
  message = build_error(tmp_path, digits_data_dir, pretrained_path=str(tmp_path / 'other.npz'))
  print(message)
  assert 'Pre-trained params do not fit the model (shape mismatch: ' in message
  assert 'Transformer/encoder_norm/bias (10,) vs model (64,)' in message
  assert 'not in the model: cls (1, 1, 10)' in message


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, digits_data_dir):
  config = load_config(
    'default',
    data_dir=digits_data_dir,
    total_steps=40,
    warmup_steps=0,
    base_lr=1e5,
    grad_norm_clip=0.0,
    decay_type='constant',
    progress_every=1,
    checkpoint_every=2,
    eval_every=1000,
  )
  config.optim.name = 'sgd'
  with pytest.raises(loop.NonFiniteLossError) as e:
    loop.train_and_evaluate(setup_run.build(config, str(tmp_path)))
  message = str(e.value)
  bad_step = int(message.split(' at step ')[1].split(';')[0])
  saved = sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints') if s.isdigit())
  print(message)
  assert saved and max(saved) < bad_step
  assert f'The last checkpoint is step {max(saved)} (training loss ' in message
  assert '--config.restore_step=N' in message


def test_a_step_larger_than_the_free_memory_is_refused_before_it_runs(
  tmp_path, digits_data_dir, monkeypatch
):
  # ViT-H/14 at batch 512 on a CPU grew to 12 GiB with no output: here, a 1-block default job
  # with 1 KiB free per device (its step's temporaries alone are larger).
  monkeypatch.setattr(runtime, 'free_bytes', lambda device: 1 << 10)
  config = load_config(
    'default',
    data_dir=digits_data_dir,
    total_steps=4,
    warmup_steps=1,
    batch=16,
    model__num_layers=1,
    test_split='',
  )
  with pytest.raises(runtime.OutOfMemoryError) as e:
    loop.train_and_evaluate(setup_run.build(config, str(tmp_path)))
  assert re.fullmatch(
    r'The train step of ViT-Ti_16 at batch 16 needs ([\d.]+) GiB per device \(XLA: '
    r'[\d.]+ GiB temporaries, [\d.]+ GiB outputs\) but a device has 0\.0 GiB free; lower '
    r'config\.batch, raise config\.accum_steps, or set config\.model\.remat_policy '
    r"\(e\.g\. 'nothing_saveable', with config\.model\.scan=True\)\.",
    str(e.value),
  ), str(e.value)
  assert not [s for s in os.listdir(tmp_path / 'checkpoints') if s.isdigit()]  # no step ran.
  assert (
    not (tmp_path / 'metrics.jsonl').exists()
    or 'train/loss' not in (tmp_path / 'metrics.jsonl').read_text()
  )
  monkeypatch.undo()  # with the memory there is, the same step fits.
  runtime.check_step_memory(
    jax.jit(lambda x: x * 2).lower(np.ones(4)).compile(), 'a step', 'never shown'
  )
