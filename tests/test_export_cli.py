"""`python -m vit_jax.export`: a training workdir or a file out to npz/timm/hf; bad input is one
line and exit code 2."""

import json
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

import convert_helpers as h
from helpers import ROOT
from vit_jax import export
from vit_jax import models
from vit_jax.models import layouts
from vit_jax.run import orbax_io
from vit_jax.run import workdir as workdir_lib
from vit_jax.train import config as config_lib
from vit_jax.train import state as state_lib
from vit_jax.weights import released
from vit_jax.weights import spec as spec_lib
from vit_jax.weights import tree


def scanned_workdir(tmp_path):
  """A vit_jax workdir as training leaves it: a scan=True model's Orbax state + config.json."""
  config = config_lib.base_config()
  config.model_name = 'ViT-Ti_16'
  for field, value in dict(
    hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, patch_size=(8, 8), scan=True
  ).items():
    config.model[field] = value
  config.pp.crop = 32
  flat = h.random_params(h.vit(), (32, 32))
  params = layouts.to_scan(tree.unflatten(flat))
  state = state_lib.TrainState(
    step=np.int32(7),
    params=params,
    opt_state=optax.sgd(0.1).init(params),
    rng=np.zeros(2, np.uint32),
  )
  workdir = tmp_path / 'run'
  io = orbax_io.CheckpointIO(str(workdir))
  io.save(jax.device_put(state), {})
  io.close()
  (workdir / 'config.json').write_text(config.to_json_best_effort())
  return str(workdir), flat


def test_workdir_exports_released_npz_and_timm(tmp_path):
  workdir, flat = scanned_workdir(tmp_path)
  how = export.export(workdir, 'npz', str(tmp_path / 'out.npz'))
  assert how == f"vit_jax.weights.released.load('{tmp_path / 'out.npz'}')"
  with np.load(tmp_path / 'out.npz') as npz:  # released layout: blocks unstacked.
    assert sorted(npz.files) == sorted(flat)
    np.testing.assert_array_equal(
      npz['Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel'],
      flat['Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel'],
    )
  # The workdir's config gives the model (checked) and the image size.
  export.export(workdir, 'timm', str(tmp_path / 'timm'))
  assert '"img_size": 32' in (tmp_path / 'timm' / 'config.json').read_text()


def test_exports_carry_the_runs_class_names(tmp_path):
  # HF's id2label was LABEL_0..N-1 and timm's pretrained_cfg had none, labels.json or not.
  import timm

  workdir, flat = scanned_workdir(tmp_path)
  names = [f'class {chr(97 + i)}' for i in range(spec_lib.num_classes(flat))]
  workdir_lib.write_labels(
    workdir,
    dataset='folder',
    class_names=names,
    num_classes=len(names),
    crop=32,
    resize_mode='resize',
    resize_small=None,
  )
  export.export(workdir, 'hf', str(tmp_path / 'hf'))
  config = json.loads((tmp_path / 'hf' / 'config.json').read_text())
  assert config['id2label'] == {str(i): name for i, name in enumerate(names)}
  assert config['label2id'] == {name: i for i, name in enumerate(names)}
  export.export(workdir, 'timm', str(tmp_path / 'timm'))
  model = timm.create_model(f'local-dir:{tmp_path / "timm"}', pretrained=True)
  assert model.pretrained_cfg['label_names'] == names


def test_model_flag_checks_the_params(tmp_path):
  flat = h.random_params(h.vit(), (32, 32))
  released.save(tmp_path / 'tiny.npz', tree.unflatten(flat))
  with pytest.raises(
    ValueError,
    match=r'^--model=ViT-S_16 at 224x224 does not fit the '
    r'checkpoint .*: Pre-trained params do not fit the model \(shape mismatch: '
    r'Transformer/encoder_norm/bias \(32,\) vs model \(384,\)',
  ):
    export.export(
      str(tmp_path / 'tiny.npz'),
      'npz',
      str(tmp_path / 'x.npz'),
      model='ViT-S_16',
      image_size=(224, 224),
    )
  with pytest.raises(ValueError, match=r'unknown --model=ViT-Q_16; pick one of'):
    export.export(str(tmp_path / 'tiny.npz'), 'npz', str(tmp_path / 'x.npz'), model='ViT-Q_16')
  with pytest.raises(
    ValueError,
    match=r'^image size 32x40 does not fit the position embedding: '
    r'16 patches of 8x8 pixels\.$',
  ):
    export.export(str(tmp_path / 'tiny.npz'), 'timm', str(tmp_path / 't'), image_size=(32, 40))


def test_unpooled_models_are_refused_for_timm_and_hf(tmp_path):
  # Their params look like a GAP model's; only the registered model tells them apart.
  flat = h.random_params(models.get_model('testing-unpooled', num_classes=None), (32, 32))
  released.save(tmp_path / 'u.npz', tree.unflatten(flat))
  with pytest.raises(
    ValueError,
    match=r"^classifier 'unpooled' \(all tokens out\) has no timm "
    r'equivalent; export --to=npz instead\.$',
  ):
    export.export(str(tmp_path / 'u.npz'), 'timm', str(tmp_path / 't'), model='testing-unpooled')


def run(*args):
  return subprocess.run(
    [sys.executable, '-m', 'vit_jax.export', *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )


def test_command_line(tmp_path):
  flat = h.random_params(h.vit(classifier='gap'), (32, 32))
  released.save(tmp_path / 'gap.npz', tree.unflatten(flat))
  done = run(f'--checkpoint={tmp_path}/gap.npz', '--to=timm', f'--out={tmp_path}/t')
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip() == (
    f'Wrote {tmp_path}/t; load it with: '
    f"timm.create_model('local-dir:{tmp_path}/t', pretrained=True)"
  )
  bad = run(f'--checkpoint={tmp_path}/gap.npz', '--to=hf', f'--out={tmp_path}/h')
  assert bad.returncode == 2
  errors = [line for line in bad.stderr.splitlines() if line.startswith('Error: ')]
  assert errors == [bad.stderr.strip().splitlines()[-1]] and len(errors) == 1
  assert "classifier 'gap'" in errors[0] and 'export --to=timm' in errors[0]
  # A run's workdir (Orbax): the one line, no INFO lines (JAX's backend probing, Orbax's
  # restore: 9 of them, before).
  workdir, _ = scanned_workdir(tmp_path)
  done = run(f'--checkpoint={workdir}', '--to=npz', f'--out={tmp_path}/w.npz')
  assert (done.returncode, done.stderr) == (0, ''), done.stderr[-2000:]
  assert done.stdout.startswith(f'Wrote {tmp_path}/w.npz; load it with: ')
  missing = run('--to=hf')
  assert missing.returncode == 2 and missing.stderr.strip() == (
    'Error: --checkpoint is required: python -m vit_jax.export --checkpoint=WORKDIR|file.npz '
    '--to=hf|timm|npz --out=PATH.'
  )
