"""Bad command lines: one `Config error:`/`Error:` line, exit code 2, nothing created or
compiled (every case returns in the time it takes to import the package)."""

import re
import subprocess
import sys

import pytest

from helpers import command_env
from helpers import load_config
from helpers import ROOT
from test_main_cli import run_main
from vit_jax.train import config as config_lib
from vit_jax.train import config_check
from vit_jax.train import setup_run


def _one_error_line(result, prefix='Config error: '):
  """The stderr line starting with `prefix`, after checking it is the only output line."""
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert result.returncode == 2, result.stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith(prefix), result.stderr[-2000:]
  return lines[0]


@pytest.mark.parametrize(
  'override, message',
  [
    ('--config.bach=8', "config has no field 'bach'; did you mean 'batch'?"),
    ('--config.pp.crp=8', "config has no field 'pp.crp'; did you mean 'pp.crop'?"),
  ],
)
def test_misspelt_field_on_the_command_line(tmp_path, override, message):
  workdir = tmp_path / 'work'
  result = run_main('--config=configs/default.py', f'--workdir={workdir}', override)
  assert _one_error_line(result) == f'Config error: {message}'
  assert not workdir.exists()


def test_misspelt_field_messages_cover_nested_fields():
  paths = config_check.field_paths(config_lib.base_config())
  assert config_check.unknown_field('model.num_head', paths) == (
    "config has no field 'model.num_head'; did you mean 'model.num_heads'?"
  )
  assert config_check.unknown_field('zzz', paths) == (
    "config has no field 'zzz'; see vit_jax/train/config.py for the fields."
  )
  assert config_check.check_overrides(
    ['main', '--config=x.py', '--config.batch=8', '--config.optim.momentm=0'],
    lambda path: config_lib.base_config(),
  ) == ("config has no field 'optim.momentm'; did you mean 'optim.momentum'?")


def test_misspelt_field_in_a_config_file(tmp_path):
  path = tmp_path / 'typo.py'
  path.write_text(
    'from vit_jax.train import config as config_lib\n\n\ndef get_config():\n'
    '  c = config_lib.base_config()\n  c.pp.crp = 32\n  return c\n'
  )
  workdir = tmp_path / 'work'
  result = run_main(f'--config={path}', f'--workdir={workdir}')
  assert _one_error_line(result) == (
    "Config error: config has no field 'pp.crp'; did you mean 'pp.crop'? (the config file "
    'sets it; fix its name there)'
  )
  assert not workdir.exists()


def test_missing_config_file(tmp_path):
  workdir = tmp_path / 'work'
  result = run_main('--config=configs/nope.py', f'--workdir={workdir}')
  assert _one_error_line(result) == (
    'Config error: cannot load --config=configs/nope.py: [Errno 2] No such file or '
    "directory: 'configs/nope.py'; pass an existing config file, e.g. "
    '--config=configs/default.py (configs/<file>.py[:args]).'
  )
  assert not workdir.exists()


def test_negative_learning_rate_on_the_command_line(tmp_path):
  workdir = tmp_path / 'work'
  result = run_main('--config=configs/default.py', f'--workdir={workdir}', '--config.base_lr=-0.1')
  assert _one_error_line(result) == 'Config error: config.base_lr=-0.1 must be > 0.'
  assert not workdir.exists()


def test_fewer_steps_than_the_warm_up_on_the_command_line(tmp_path):
  # The default job warms up for 100 steps: a shorter run says which flag to add.
  workdir = tmp_path / 'work'
  result = run_main(
    '--config=configs/default.py', f'--workdir={workdir}', '--config.total_steps=100'
  )
  assert _one_error_line(result) == (
    'Config error: config.warmup_steps=100 must be < config.total_steps=100; '
    'e.g. --config.warmup_steps=10 (a tenth of the steps).'
  )
  assert not workdir.exists()


def test_readme_sharding_example_on_one_cpu_device_says_how_to_simulate_eight(tmp_path):
  # README's 2-way data x 4-way FSDP example, as written, on a CPU without simulated devices.
  readme = (ROOT / 'README.md').read_text()
  example = readme.split('devices as 2-way data x 4-way FSDP:\n\n```bash\n')[1].split('```')[0]
  args = example.replace('\\\n', ' ').split()[3:]  # after `python -m vit_jax.main`
  workdir = tmp_path / 'work'
  env = command_env()
  env['XLA_FLAGS'] += ' --xla_force_host_platform_device_count=1'
  result = subprocess.run(
    [sys.executable, '-m', 'vit_jax.main', *[a.replace('DIR', str(workdir)) for a in args]],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert _one_error_line(result) == (
    "Config error: config.mesh / config.sharding_rules: mesh {'data': 2, 'fsdp': 4, 'model': 1}: "
    'sizes multiply to 8 but there are 1 devices; make the product 1 (or use -1). On a CPU, '
    'XLA_FLAGS=--xla_force_host_platform_device_count=8 before the command simulates 8 devices.'
  )
  assert not workdir.exists()


@pytest.mark.parametrize(
  'field, value, message',
  [
    ('base_lr', 0.0, 'config.base_lr=0.0 must be > 0.'),
    ('warmup_steps', -1, 'config.warmup_steps=-1 must be >= 0 (0: no warm-up).'),
    ('label_smoothing', 1.0, 'config.label_smoothing=1.0 must be in [0, 1) (0: off).'),
    ('mixup', -0.2, 'config.mixup=-0.2 must be >= 0 (0: off).'),
    (
      'grad_norm_clip',
      -1.0,
      'config.grad_norm_clip=-1.0 must be > 0, or 0 / None for no clipping.',
    ),
    ('optim__momentum', 1.0, 'config.optim.momentum=1.0 must be in [0, 1) (0: plain SGD).'),
    ('optim__weight_decay', -1e-4, 'config.optim.weight_decay=-0.0001 must be >= 0 (0: off).'),
  ],
)
def test_invalid_optimisation_numbers(tmp_path, field, value, message):
  config = load_config('default', **{field: value})
  with pytest.raises(setup_run.ConfigError) as e:
    setup_run.build(config, str(tmp_path / 'work'))
  assert str(e.value) == message
  assert not (tmp_path / 'work').exists()


def test_switched_off_clipping_is_valid(tmp_path):
  for value in (0.0, None):
    config_check.validate(load_config('default', grad_norm_clip=value))


def run_inference_time(*args):
  return subprocess.run(
    [sys.executable, '-m', 'vit_jax.inference_time', *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )


def test_inference_time_unknown_model():
  line = _one_error_line(run_inference_time('--model=ViT-B16'), prefix='Error: ')
  assert line == (
    'Error: unknown --model=ViT-B16; did you mean ViT-B_16, ViT-S_16, ViT-L_16? '
    'list the models with `python -c "from vit_jax import models; '
    'print(models.model_names())"`.'
  )


def test_inference_time_zero_batch():
  assert (
    _one_error_line(run_inference_time('--model=testing', '--batch=0'), prefix='Error: ')
    == 'Error: --batch=0; pass an integer >= 1.'
  )


def test_inference_time_sizes_itself_to_the_cpu_and_shows_progress():
  # README's command measured ViT-B_16 at batch 64 for 23 steps on 2 cores: 8 minutes with
  # nothing printed. On a CPU: batch 8, 1 + 5 steps, each step on stderr as it ends.
  result = run_inference_time('--model=testing', '--image_size=32')
  assert result.returncode == 0, result.stderr[-2000:]
  progress = result.stderr.splitlines()
  assert re.fullmatch(r'testing, batch 8 over \d+ device\(s\): compiling\.\.\.', progress[0])
  assert re.fullmatch(r'compiled in [\d.]+ s', progress[1])
  assert [line.split(':')[0] for line in progress[2:]] == ['warm-up step 1/1'] + [
    f'step {i}/5' for i in range(1, 6)
  ]
  header, _, row = (
    [cell.strip() for cell in line.strip('|').split('|')] for line in result.stdout.splitlines()
  )
  assert header[:6] == ['model', 'batch', 'size', 'dtype', 'devices', 'steps']
  assert [row[k] for k in (0, 1, 2, 3, 5)] == ['testing', '8', '32', 'float32', '5']
