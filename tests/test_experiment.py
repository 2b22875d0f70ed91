"""The main job from Python (vit_jax.experiment): config files, training, metrics, evaluation."""

import json
import os

import numpy as np
import pytest

from helpers import load_config as load_like_tests
from helpers import ROOT
from vit_jax import experiment
from vit_jax.train import setup_run

DEFAULT = str(ROOT / 'configs' / 'default.py')


def test_load_config_is_the_command_lines():
  config = experiment.load_config(DEFAULT)
  assert config.to_dict() == load_like_tests('default').to_dict()
  config.total_steps = 7  # fields are set as attributes ...
  with pytest.raises(AttributeError):
    config.total_stepz = 7  # ... and a misspelt one is an error: the config is locked.
  vit = experiment.load_config(str(ROOT / 'configs' / 'vit.py') + ':ViT-Ti_16,cifar100')
  assert (vit.model_name, vit.dataset, vit.pp.crop) == ('ViT-Ti_16', 'cifar100', 384)


def test_load_config_errors_are_one_line(tmp_path):
  with pytest.raises(setup_run.ConfigError) as e:
    experiment.load_config(str(tmp_path / 'missing.py'))
  assert 'missing.py' in str(e.value) and 'configs/default.py' in str(e.value)
  assert '\n' not in str(e.value)
  with pytest.raises(setup_run.ConfigError, match='dataset must be one of'):
    experiment.load_config(str(ROOT / 'configs' / 'vit.py') + ':ViT-Ti_16,mnist')
  misspelt = tmp_path / 'misspelt.py'
  misspelt.write_text(
    'from vit_jax.train import config as config_lib\n\n\ndef get_config():\n'
    '  c = config_lib.base_config()\n  c.totl_steps = 5\n  return c\n'
  )
  with pytest.raises(setup_run.ConfigError) as e:
    experiment.load_config(str(misspelt))
  assert "'totl_steps'" in str(e.value) and "did you mean 'total_steps'" in str(e.value)
  assert '\n' not in str(e.value)


def test_train_read_metrics_and_evaluate(tmp_path, digits_data_dir, monkeypatch):
  config = experiment.load_config(DEFAULT)
  config.data_dir = digits_data_dir
  config.total_steps, config.warmup_steps = 30, 5
  config.model.num_layers, config.pp.crop, config.batch = 1, 8, 32  # fast; 360 test images
  config.progress_every, config.eval_every, config.checkpoint_every = 10, 15, 15
  workdir = str(tmp_path / 'run')

  monkeypatch.chdir(tmp_path)  # a relative workdir (Orbax saves only to absolute paths).
  final = experiment.train(config, 'run')
  assert final['step'] == 30 and final['test/examples'] == 360
  final_json = (tmp_path / 'run' / 'final_metrics.json').read_text()
  assert json.loads(final_json) == final
  assert sorted(os.listdir(tmp_path / 'run' / 'checkpoints')) == ['15', '30']
  # Trained again, the finished run is left as it is: the same results, nothing rewritten
  # (it evaluated again and wrote a final_metrics.json without its train/* values, before).
  files = {p: p.read_bytes() for p in (tmp_path / 'run').glob('*.json*')}
  assert experiment.train(config, workdir) == final
  assert {p: p.read_bytes() for p in (tmp_path / 'run').glob('*.json*')} == files

  curves = experiment.read_metrics(workdir)
  steps, losses = curves['train/loss']
  assert steps.tolist() == [10, 20, 30] and steps.dtype == np.int64
  jsonl = [json.loads(l) for l in (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()]
  assert losses.tolist() == [l['train/loss'] for l in jsonl if 'train/loss' in l]
  assert curves['test/accuracy'][0].tolist() == [15, 30]
  assert curves['test/accuracy'][1][-1] == final['test/accuracy']
  assert 'train/compile_seconds' in curves and 'step' not in curves

  # Evaluating the newest checkpoint again gives the run's final evaluation.
  evaluated = experiment.evaluate(config, workdir, step=30)
  assert evaluated == {k: v for k, v in final.items() if k.startswith('test/')} | {'step': 30}
  # Evaluating writes nothing to the run's metrics.
  assert experiment.read_metrics(workdir)['test/accuracy'][0].tolist() == [15, 30]


def test_evaluate_without_a_checkpoint(tmp_path, digits_data_dir):
  config = experiment.load_config(DEFAULT)
  config.data_dir = digits_data_dir
  with pytest.raises(setup_run.ConfigError, match='No Orbax checkpoint found.*Train first'):
    experiment.evaluate(config, str(tmp_path))


def test_read_metrics_skips_a_line_cut_short(tmp_path):
  (tmp_path / 'metrics.jsonl').write_text(
    '{"step": 2, "train/loss": 1.5}\n{"step": 1, "train/loss": 2.0, "test/accuracy": 0.25}\n'
    '{"step": 3, "train/lo'
  )
  curves = experiment.read_metrics(str(tmp_path))
  assert curves['train/loss'][0].tolist() == [1, 2] and curves['train/loss'][1].tolist() == [2, 1.5]
  assert curves['test/accuracy'][0].tolist() == [1]
  with pytest.raises(FileNotFoundError, match='metrics.jsonl does not exist'):
    experiment.read_metrics(str(tmp_path / 'nothing'))
