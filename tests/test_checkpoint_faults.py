"""Checkpoint and filesystem faults: damaged checkpoints, full disk, read-only folders, NaN
with a chosen restore step, a workdir of another model, metrics after a resume.

One tiny run (4 steps, checkpoints at 2 and 4) is trained once; each test damages a copy.
"""

import errno
import json
import os
import re
import shutil
import subprocess
import time

from etils import epath
import numpy as np
import pytest

from helpers import build_once
from helpers import command_env
from helpers import load_config
from helpers import main_command
from helpers import ROOT
from vit_jax.run import orbax_io
from vit_jax.train import loop
from vit_jax.train import setup_run
from vit_jax.weights import tree

TINY = dict(
  total_steps=4,
  checkpoint_every=2,
  eval_every=1000,
  batch=32,
  batch_eval=32,
  progress_every=1,
  warmup_steps=1,
  keep_checkpoints=5,
  test_split='',
)


def tiny_config(data_dir, **overrides):
  return load_config('default', data_dir=data_dir, **{**TINY, **overrides})


@pytest.fixture(scope='module')
def trained(tmp_path_factory, digits_data_dir):
  """(workdir with checkpoints 2 and 4, a Run of its config): trained once per test run, for
  the tests on either pytest-xdist worker; tests damage a copy (copy_of)."""
  build = lambda w: loop.train_and_evaluate(setup_run.build(tiny_config(digits_data_dir), str(w)))
  workdir = build_once(tmp_path_factory, 'faults_trained', build)
  # The same config's Run (its abstract state), built on an empty workdir: the shared one stays
  # untouched.
  run = setup_run.build(tiny_config(digits_data_dir), str(tmp_path_factory.mktemp('unused')))
  return str(workdir), run


def copy_of(trained, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained[0], workdir)
  return workdir


def truncate_arrays(step_dir):
  """Cuts every array data file of a step to nothing (a crash before the data reached the disk).

  All of them: which file holds which arrays varies from save to save, and the readers that
  restore params only (predict, export, analyze, fine-tuning) would not notice damage to a
  file that holds optimizer state only (the largest file, cut in half, was not always enough).
  """
  folder = os.path.join(step_dir, 'state', 'ocdbt.process_0', 'd')
  for name in os.listdir(folder):
    with open(os.path.join(folder, name), 'r+b') as f:
      f.truncate(0)


DAMAGES = {
  'unreadable-arrays': truncate_arrays,
  'missing-metadata': lambda d: (d / 'state' / '_METADATA').unlink(),
  'missing-state': lambda d: shutil.rmtree(d / 'state'),
}


def steps_of(workdir):
  return sorted(orbax_io.ocp.utils.checkpoint_steps(os.path.join(workdir, 'checkpoints')))


@pytest.mark.parametrize('reason', sorted(DAMAGES))
def test_damaged_newest_checkpoint_is_moved_aside(trained, tmp_path, reason):
  workdir = copy_of(trained, tmp_path)
  checkpoints = epath.Path(workdir) / 'checkpoints'
  DAMAGES[reason](checkpoints / '4')
  io = orbax_io.CheckpointIO(workdir)
  lines = []
  state, _, step = io.restore_intact(trained[1].abstract_state, lines.append)
  io.close()
  print(lines)
  assert step == 2 and int(state.step) == 2
  assert len(lines) == 1 and '\n' not in lines[0]
  assert lines[0].startswith(f'Warning: checkpoint step 4 is damaged ({reason.replace("-", " ")}')
  assert f'moved it to {checkpoints}/damaged/4-{reason}; trying the previous one.' in lines[0]
  assert (checkpoints / 'damaged' / f'4-{reason}').is_dir()  # kept, not deleted.
  assert steps_of(workdir) == [2]


def test_all_damaged_is_one_line_error(trained, tmp_path):
  workdir = copy_of(trained, tmp_path)
  checkpoints = epath.Path(workdir) / 'checkpoints'
  DAMAGES['missing-metadata'](checkpoints / '4')
  DAMAGES['unreadable-arrays'](checkpoints / '2')
  io = orbax_io.CheckpointIO(workdir)
  with pytest.raises(orbax_io.CheckpointError) as e:
    io.restore_intact(trained[1].abstract_state, lambda line: None)
  io.close()
  assert str(e.value) == (
    f'No intact checkpoint left in {checkpoints} (damaged ones are in '
    f'{checkpoints}/damaged); rerun with a new --workdir to start from '
    'scratch.'
  )
  assert sorted(os.listdir(checkpoints / 'damaged')) == [
    '2-unreadable-arrays',
    '4-missing-metadata',
  ]


def read_jsonl(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def assert_one_value_per_step(workdir):
  """Each metric (key) is recorded at most once per step, in increasing step order."""
  steps_by_key = {}
  for record in read_jsonl(workdir):
    for key in record:
      if key != 'step':
        steps_by_key.setdefault(key, []).append(record['step'])
  for key, steps in steps_by_key.items():
    assert steps == sorted(set(steps)), (key, steps)
  return steps_by_key


def test_fallback_resumes_and_completes_with_one_metric_line_per_step(
  trained, tmp_path, digits_data_dir
):
  workdir = copy_of(trained, tmp_path)
  truncate_arrays(epath.Path(workdir) / 'checkpoints' / '4')
  assert [r['step'] for r in read_jsonl(workdir) if 'train/loss' in r] == [1, 2, 3, 4]
  final = loop.train_and_evaluate(
    setup_run.build(tiny_config(digits_data_dir, total_steps=6), workdir)
  )
  assert final['step'] == 6
  assert steps_of(workdir) == [2, 4, 6]
  # Steps 3 and 4 were trained twice (before and after the fallback); each is recorded once.
  assert assert_one_value_per_step(workdir)['train/loss'] == [1, 2, 3, 4, 5, 6]


def test_damaged_side_files_resume_bit_identical(trained, tmp_path, digits_data_dir):
  # Killed between checkpoints 2 and 4 while writing a metrics line, with config.json cut short
  # and labels.json empty (a full disk or a kill mid-write): the rerun resumes at 2, ends on
  # the same parameters and rewrites the files whole.
  workdir = copy_of(trained, tmp_path)
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '4'))
  side = {n: os.path.join(workdir, n) for n in ('metrics.jsonl', 'config.json', 'labels.json')}
  text = open(side['metrics.jsonl']).read()
  open(side['metrics.jsonl'], 'w').write(text[: len(text) - 20])  # the last line cut mid-JSON.
  open(side['config.json'], 'w').write('{"model_name": "ViT-')
  open(side['labels.json'], 'w').write('')
  final = loop.train_and_evaluate(setup_run.build(tiny_config(digits_data_dir), workdir))
  assert final['step'] == 4 and steps_of(workdir) == [2, 4]
  resumed, original = orbax_io.load_params(workdir), orbax_io.load_params(trained[0])
  for key, value in tree.flatten(original).items():
    np.testing.assert_array_equal(tree.flatten(resumed)[key], value)
  assert assert_one_value_per_step(workdir)['train/loss'] == [1, 2, 3, 4]  # every line parses.
  for name in ('config.json', 'labels.json'):
    assert json.loads(open(side[name]).read()) == json.loads(open(f'{trained[0]}/{name}').read())


def test_full_disk_on_save(trained, tmp_path, digits_data_dir, monkeypatch):
  """Simulated: Orbax's write of the `data` item of step 4 (a Python file write) raises
  OSError(ENOSPC); the arrays, written by TensorStore in C++, cannot be patched in-process."""
  workdir = str(tmp_path / 'run')
  original = type(epath.Path('/')).write_text

  def write_text(self, *args, **kwargs):
    if (
      self.name == 'metadata'
      and self.parent.name.startswith('data')
      and re.search(r'/checkpoints/4[./]', str(self))
    ):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
    return original(self, *args, **kwargs)

  monkeypatch.setattr(type(epath.Path('/')), 'write_text', write_text)
  with pytest.raises(orbax_io.CheckpointError) as e:
    loop.train_and_evaluate(setup_run.build(tiny_config(digits_data_dir), workdir))
  assert str(e.value) == (
    f'No space left on device while saving step 4 to {workdir}/checkpoints;'
    ' step 2 is the last complete checkpoint; free space and rerun to '
    'resume.'
  )
  monkeypatch.undo()
  assert steps_of(workdir) == [2]
  # The disk has room again: the next start resumes from step 2 despite the partial folder.
  final = loop.train_and_evaluate(setup_run.build(tiny_config(digits_data_dir), workdir))
  assert final['step'] == 4 and steps_of(workdir) == [2, 4]


def as_non_root(*command):
  """Runs `command` without root's override of file permissions (real EACCES)."""
  if not shutil.which('setpriv'):
    pytest.skip('setpriv is needed to drop the root override of file permissions')
  return subprocess.run(
    ['setpriv', '--bounding-set=-dac_override,-dac_read_search,-fowner', *command],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )


def test_read_only_checkpoints_refused_at_startup(trained, tmp_path, digits_data_dir):
  workdir = copy_of(trained, tmp_path)
  os.chmod(os.path.join(workdir, 'checkpoints', '4'), 0o555)
  result = as_non_root(*main_command(workdir, digits_data_dir))
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr == (
    f'Config error: {workdir}/checkpoints/4 is not writable (Permission '
    'denied): checkpoints could not be saved; fix the permissions (e.g. '
    f'chown -R $USER {workdir}/checkpoints) or pass a new --workdir.\n'
  )


def test_save_failure_mid_run_exits_in_seconds(tmp_path, digits_data_dir):
  """checkpoints/ turns read-only while the run trains (e.g. a remount): one line, exit 4."""
  if not shutil.which('setpriv'):
    pytest.skip('setpriv is needed to drop the root override of file permissions')
  workdir = tmp_path / 'run'
  os.chmod(tmp_path, 0o777)
  proc = subprocess.Popen(
    [
      'setpriv',
      '--bounding-set=-dac_override,-dac_read_search,-fowner',
      *main_command(workdir, digits_data_dir),
      '--config.total_steps=2000',
      '--config.checkpoint_every=20',
      '--config.eval_every=100000',
      '--config.batch=32',
      '--config.batch_eval=32',
    ],
    cwd=ROOT,
    env=command_env(),  # the command line's own device count (one per core).
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  first = workdir / 'checkpoints' / '20'
  deadline = time.time() + 120
  while not first.is_dir() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  os.chmod(workdir / 'checkpoints', 0o555)
  begin = time.time()
  _, stderr = proc.communicate(timeout=120)
  assert time.time() - begin < 30
  assert proc.returncode == 4, stderr[-2000:]
  assert stderr.startswith(
    'Checkpoint error: Permission denied while saving step 40 to '
    f'{workdir}/checkpoints; step 20 is the last complete checkpoint; '
    'fix the folder and rerun to resume.\n'
  ), stderr[-2000:]
  assert 'Traceback' not in stderr, stderr[-2000:]


def test_restore_step_and_its_errors(trained, tmp_path, digits_data_dir):
  workdir = copy_of(trained, tmp_path)
  with pytest.raises(setup_run.ConfigError) as e:
    setup_run.build(tiny_config(digits_data_dir, restore_step=3), workdir)
  assert str(e.value) == (
    f'config.restore_step=3 is not a checkpoint in {workdir}/checkpoints; available steps: [2, 4].'
  )
  io = orbax_io.CheckpointIO(workdir)
  assert io.train_loss(2) == pytest.approx(
    [r for r in read_jsonl(workdir) if r['step'] == 2 and 'train/loss' in r][0]['train/loss']
  )
  io.close()
  final = loop.train_and_evaluate(
    setup_run.build(tiny_config(digits_data_dir, restore_step=2), workdir)
  )
  assert final['step'] == 4 and steps_of(workdir) == [2, 4]
  assert os.listdir(os.path.join(workdir, 'checkpoints', 'damaged')) == ['4-after-restore-2']
  assert_one_value_per_step(workdir)


def test_nan_without_checkpoint(tmp_path, digits_data_dir):
  config = tiny_config(
    digits_data_dir,
    total_steps=40,
    warmup_steps=0,
    base_lr=1e5,
    grad_norm_clip=0.0,
    decay_type='constant',
    checkpoint_every=1000,
  )
  config.optim.name = 'sgd'
  with pytest.raises(loop.NonFiniteLossError) as e:
    loop.train_and_evaluate(setup_run.build(config, str(tmp_path)))
  assert 'No checkpoint was saved yet (a rerun starts from scratch).' in str(e.value)
  assert 'step None' not in str(e.value)


def test_workdir_of_another_model(trained, tmp_path, digits_data_dir):
  workdir = copy_of(trained, tmp_path)
  with pytest.raises(setup_run.ConfigError) as e:
    setup_run.build(tiny_config(digits_data_dir, model__hidden_size=32), workdir)
  message = str(e.value)
  print(message)
  assert '\n' not in message
  assert message.startswith(
    f'the checkpoint step 4 in {workdir}/checkpoints does not match the config (params/Transformer/'
  )
  assert 'stored (64,) vs config (32,)' in message
  assert message.endswith(' and 195 more); pass a new --workdir for this model.')
  # The scan layout of the same model is a legal difference.
  setup_run.build(tiny_config(digits_data_dir, model__scan=True), workdir)


def _read_with(reader, workdir, config, tmp_path, capsys):
  """(the step `reader` read, the warnings it printed) for a workdir."""
  from vit_jax import analyze
  from vit_jax import experiment
  from vit_jax import export
  from vit_jax.inference import predictor as predictor_lib
  from vit_jax.train import session as session_lib
  from vit_jax.weights import released
  from vit_jax.weights import sources

  capsys.readouterr()
  if reader == 'session':
    lines = []
    step = session_lib.Session.start(config, workdir, log=lines.append).step
    return step, '\n'.join(lines)
  if reader == 'evaluate':
    step = experiment.evaluate(config, workdir)['step']
  elif reader == 'predict':
    step = predictor_lib.load(workdir).about['step']
  elif reader == 'fine-tuning':
    step = sources.read(workdir).step
  elif reader == 'analyze':
    out = tmp_path / 'analysis'
    analyze.run(analyze.Options(checkpoint=workdir, out=str(out), what=('filters',)))
    step = int(json.loads((out / 'filters.json').read_text())['checkpoint'].split('/')[-1])
  else:  # export: the file holds the params of the step it read.
    export.export(workdir, 'npz', str(tmp_path / 'out.npz'))
    exported = tree.flatten(released.load(tmp_path / 'out.npz'))
    step = next(
      s
      for s in (2, 4)
      if all(
        np.array_equal(exported[k], v)
        for k, v in tree.flatten(
          orbax_io.load_params(os.path.join(workdir, 'checkpoints', str(s)))
        ).items()
      )
    )
  return step, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
  'reader', ['session', 'evaluate', 'predict', 'export', 'analyze', 'fine-tuning']
)
def test_readers_fall_back_to_the_previous_checkpoint_and_move_nothing(
  trained, tmp_path, digits_data_dir, capsys, reader
):
  workdir = copy_of(trained, tmp_path)
  checkpoints = epath.Path(workdir) / 'checkpoints'
  truncate_arrays(checkpoints / '4')
  step, warning = _read_with(reader, workdir, tiny_config(digits_data_dir), tmp_path, capsys)
  assert step == 2
  assert len(warning.splitlines()) == 1, warning
  assert (
    warning.startswith('Warning: checkpoint step 4')
    and 'is damaged (unreadable arrays: ' in (warning)
    and warning.endswith('trying the previous one.')
  ), warning
  assert steps_of(workdir) == [2, 4] and not (checkpoints / 'damaged').exists()


def test_export_of_a_checkpoint_without_its_metadata_falls_back_too(
  trained, tmp_path, digits_data_dir, capsys
):
  # It was a 30-line traceback (its missing chunks: a raw OCDBT error), unlike the other readers.
  workdir = copy_of(trained, tmp_path)
  (epath.Path(workdir) / 'checkpoints' / '4' / 'state' / '_METADATA').unlink()
  step, warning = _read_with('export', workdir, tiny_config(digits_data_dir), tmp_path, capsys)
  assert step == 2 and warning.startswith('Warning: checkpoint step 4') and '\n' not in warning
  assert 'is damaged (missing metadata' in warning, warning


def test_only_real_step_folders_are_orbax_checkpoints(trained, tmp_path):
  workdir = copy_of(trained, tmp_path)
  for path in (workdir, f'{workdir}/checkpoints', f'{workdir}/checkpoints/2'):
    assert orbax_io.is_orbax_checkpoint(path), path
  lookalike = tmp_path / 'photos'
  (lookalike / '2019').mkdir(parents=True)  # numbered folders of something else.
  (lookalike / 'checkpoints' / '7').mkdir(parents=True)
  for path in (
    lookalike,
    lookalike / '2019',
    lookalike / 'checkpoints',
    tmp_path / 'x.npz',
    tmp_path / 'missing',
  ):
    assert not orbax_io.is_orbax_checkpoint(path), path
