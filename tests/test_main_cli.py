"""The command line: locked configs, one-line config errors before anything compiles, every
config field read somewhere, and the inference-time mode."""

import os
import re
import subprocess
import sys

import pytest

from helpers import ROOT
from vit_jax import inference_time
from vit_jax import models
from vit_jax.run import workdir as workdir_lib
from vit_jax.train import config as config_lib


def run_main(*args, timeout=300):
  return subprocess.run(
    [sys.executable, '-m', 'vit_jax.main', *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=timeout,
    check=False,
  )


def test_unknown_config_field_is_an_error(tmp_path):
  result = run_main('--config=configs/default.py', f'--workdir={tmp_path}', '--config.batchsize=64')
  assert result.returncode != 0
  assert 'batchsize' in result.stderr
  assert not (tmp_path / 'metrics.jsonl').exists()


def test_config_error_is_one_line_with_exit_code_2(tmp_path, digits_data_dir):
  result = run_main(
    '--config=configs/default.py',
    f'--workdir={tmp_path}',
    f'--config.data_dir={digits_data_dir}',
    '--config.batch=100',
  )
  assert result.returncode == 2
  errors = [l for l in result.stderr.splitlines() if l.startswith('Config error:')]
  assert len(errors) == 1 and 'config.batch=100 is not divisible' in errors[0]


@pytest.mark.parametrize(
  'workdir',
  [
    ['--workdir='],  # trained 500 steps, then failed its first save (Orbax: not absolute).
    [],  # absl's "flag 'config.total_steps' is defined twice": another flag named.
  ],
)
def test_missing_or_empty_workdir_is_one_line_before_anything_runs(tmp_path, workdir):
  result = subprocess.run(
    [sys.executable, '-m', 'vit_jax.main', f'--config={ROOT}/configs/default.py', *workdir]
    + ['--config.total_steps=20', '--config.warmup_steps=2'],
    cwd=tmp_path,  # where an empty workdir would write.
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert (result.returncode, result.stdout, result.stderr) == (
    2,
    '',
    'Error: --workdir is missing or empty; pass the folder for checkpoints and metrics, '
    'e.g. --workdir=/tmp/vit_run.\n',
  )
  assert not list(tmp_path.iterdir())


def test_a_finished_run_is_left_as_it_is(tmp_path):
  final = tmp_path / 'final_metrics.json'
  final.write_text('{"step": 1500, "test/accuracy": 0.97}')
  metrics = tmp_path / 'metrics.jsonl'
  metrics.write_text('{"step": 1500, "test/accuracy": 0.97}\n')
  result = run_main('--config=configs/default.py', f'--workdir={tmp_path}')
  assert (result.returncode, result.stderr) == (0, ''), result.stderr
  assert result.stdout == (
    f'Nothing to do: the run in {tmp_path} finished at step 1500 and is left as it is; pass a '
    'new --workdir to train again, or a larger --config.total_steps to train on.\n'
  )
  assert sorted(p.name for p in tmp_path.iterdir()) == ['final_metrics.json', 'metrics.jsonl']
  assert final.read_text() == '{"step": 1500, "test/accuracy": 0.97}'


def test_a_second_job_on_a_workdir_in_use_is_refused(tmp_path, digits_data_dir):
  # Both jobs ran, before: metrics.jsonl twice over, a config.json that did not match the
  # checkpoints, and one died with a misleading error.
  with workdir_lib.locked(tmp_path):  # a first job, training there.
    result = run_main(
      '--config=configs/default.py', f'--workdir={tmp_path}', f'--config.data_dir={digits_data_dir}'
    )
  assert result.returncode == 2, result.stderr[-3000:]
  assert re.fullmatch(
    rf'Error: {re.escape(str(tmp_path))} is in use by another run \(pid {os.getpid()} on \S+\); '
    r'wait for it to end \(or stop it\), or pass another --workdir\.\n',
    result.stderr,
  ), result.stderr
  assert sorted(p.name for p in tmp_path.iterdir()) == ['.lock', 'checkpoints']
  assert not list((tmp_path / 'checkpoints').iterdir())


def test_the_lock_of_a_killed_run_is_free(tmp_path):
  holder = subprocess.Popen(
    [
      sys.executable,
      '-c',
      'from vit_jax.run import workdir\n'
      f'with workdir.locked({str(tmp_path)!r}):\n'
      "  print('held', flush=True)\n"
      '  input()',
    ],
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    text=True,
  )
  assert holder.stdout.readline() == 'held\n'
  with pytest.raises(workdir_lib.WorkdirInUseError, match=f'pid {holder.pid} on '):
    with workdir_lib.locked(tmp_path):
      pass
  holder.kill()  # SIGKILL: nothing of it runs any more; the kernel drops its lock.
  holder.wait()
  with workdir_lib.locked(tmp_path):
    with workdir_lib.locked(tmp_path):  # the process's own lock, again: no deadlock.
      pass


def _leaf_fields(config, prefix=''):
  for key, value in config.items():
    if hasattr(value, 'items') and key != 'mesh':
      yield from _leaf_fields(value, f'{prefix}{key}.')
    else:
      yield prefix + key


def test_every_config_field_is_read():
  sources = '\n'.join(
    p.read_text() for p in (ROOT / 'vit_jax').rglob('*.py') if p.name != 'config_lib.py'
  )
  unread = []
  for field in _leaf_fields(config_lib.base_config()):
    name = field.split('.')[-1]
    if field.startswith('model.'):
      continue  # passed as a whole by config_lib.model_overrides.
    if not re.search(rf'\.{name}\b|\[[\'"]{name}[\'"]\]|\bfield in \(.*{name}', sources):
      unread.append(field)
  assert not unread, f'config fields nothing reads: {unread}'


def test_all_configs_load_and_lock():
  from helpers import load_config

  for name, arg in [
    ('default', None),
    ('pretrain', None),
    ('vit', 'ViT-B_16,cifar10'),
    ('vit', 'R50+ViT-B_16,imagenet2012'),
    ('vit', 'ViT-L_16,oxford_iiit_pet'),
    ('vit', 'ViT-B_32,oxford_flowers102'),
    ('vit', 'Mixer-B_16,cifar100'),
  ]:
    config = load_config(name, arg)
    assert config.is_locked
    with pytest.raises(AttributeError):
      config.not_a_field = 1
  with pytest.raises(ValueError, match='dataset must be one of'):
    load_config('vit', 'ViT-B_16,mnist')
  # Every model's fine-tuning preset passes its own crop check (ViT-H_14's 384px did not).
  for name in models.model_names():
    crop = load_config('vit', f'{name},cifar10').pp.crop
    assert crop % models.get_model(name).stride == 0 and 370 < crop <= 384, (name, crop)
  assert load_config('vit', 'ViT-H_14,cifar10').pp.crop == 378
  pretrain = load_config('pretrain')
  assert (
    pretrain.model_name,
    pretrain.batch,
    pretrain.base_lr,
    pretrain.warmup_steps,
    tuple(pretrain.pp.randaugment),
    pretrain.mixup,
  ) == ('ViT-S_16', 1024, 1e-3, 10_000, (2, 10), 0.2)
  # big_vision's rep_size=True: a pre-logits layer as wide as the model (384 for ViT-S).
  assert pretrain.model.representation_size == 384
  assert load_config('pretrain', 'ViT-B_16').model.representation_size == 768


def test_inference_time_measures_a_model():
  result = inference_time.measure('testing', batch=8, image_size=32, steps=3, warmup=1)
  assert result['devices'] == 8
  assert result['images_per_sec'] == pytest.approx(8 / result['seconds_per_step'])
  assert result['images_per_sec_per_device'] == pytest.approx(result['images_per_sec'] / 8)
  with pytest.raises(ValueError, match='batch=6 is not divisible by the 8 devices'):
    inference_time.measure('testing', batch=6, image_size=32)
