"""README's commands as a new user runs them: the quick start is what CI runs, and every other
command is run by a test (as written, or with its placeholders filled) or says why not
(INVENTORY)."""

import contextlib
import io
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def bash_blocks(text: str) -> list[str]:
  """The ```bash blocks of a markdown text, as written."""
  return re.findall(r'```bash\n(.*?)```', text, re.S)


def quick_start_blocks():
  text = (ROOT / 'README.md').read_text()
  section = text.split('## Quick start', 1)[1].split('\n## ', 1)[0]
  return [b.strip().splitlines() for b in bash_blocks(section)]


def test_readme_has_two_quick_start_commands():
  blocks = quick_start_blocks()
  assert len(blocks) == 2
  setup, tests = blocks
  assert setup[0] == tests[0] == 'python3 -m venv .venv && . .venv/bin/activate'
  assert setup[1].startswith('pip install -e .') and tests[1] == "pip install -e '.[test]'"


def test_ci_runs_the_readme_test_command_verbatim():
  ci_lines = [l.strip() for l in (ROOT / '.ci' / 'run').read_text().splitlines()]
  tests = quick_start_blocks()[1]
  start = ci_lines.index(tests[0])
  assert ci_lines[start : start + len(tests)] == tests
  assert 'set -euo pipefail' in ci_lines


def test_readme_mnist_folder_command_runs_as_written(shared_dir, tmp_path):
  # It named ../shared/data/mnist, which a clone does not have. As written it downloads MNIST
  # once into $VIT_JAX_CACHE: here a cache that already holds the files (no network in tests).
  (command,) = {
    line.strip()
    for line in (ROOT / 'README.md').read_text().splitlines()
    if line.startswith('python -m vit_jax.data.mnist_folder')
  }
  assert command == 'python -m vit_jax.data.mnist_folder --out=/tmp/mnist'
  cache = tmp_path / 'cache' / 'cvdf-datasets' / 'mnist'
  cache.mkdir(parents=True)
  for name in ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'):
    shutil.copy(shared_dir / 'data' / 'mnist' / name, cache / name)
  env = dict(os.environ, VIT_JAX_CACHE=str(tmp_path / 'cache'))
  argv = [sys.executable, *shlex.split(command)[1:]]  # `python`: this environment's.
  result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert (result.returncode, result.stdout) == (
    0,
    'Wrote 8000 train and 2000 test images to /tmp/mnist\n',
  ), result.stderr[-2000:]
  assert len(list(pathlib.Path('/tmp/mnist/test').rglob('*.png'))) == 2000


def readme_commands() -> list[str]:
  """Every command in README's bash blocks as a user types it: continuation lines joined,
  comments (and `# -> output` lines) dropped."""
  commands = []
  for block in bash_blocks((ROOT / 'README.md').read_text()):
    for line in block.replace('\\\n', ' ').splitlines():
      line = '' if line.lstrip().startswith('#') else line.split(' #')[0]
      if line.strip():
        commands.append(' '.join(line.split()))
  return commands


def readme_command(start: str) -> str:
  """The one README command that starts with `start`."""
  (command,) = [c for c in readme_commands() if c.startswith(start)]
  return command


def filled(command: str, **values: str) -> list[str]:
  """argv of a README command after `python -m` / `python`, its placeholders (keys of
  `values`) replaced and `[optional flags]` kept without their brackets."""
  for placeholder, value in values.items():
    command = command.replace(placeholder, value)
  return shlex.split(command.replace('[', '').replace(']', ''))[1:]


_CI = 'run by CI: .ci/run (test_ci_runs_the_readme_test_command_verbatim)'
# How each README command is checked. 'as written': run exactly so; 'filled': run with its
# placeholders (WORKDIR, IMAGE_OR_DIR, ...) replaced by a tiny run or file; 'not run': why.
INVENTORY = {
  'python3 -m venv .venv && . .venv/bin/activate': _CI,
  'pip install -e .': "not run: CI installs '.[test]', a superset (test_readme_has_two_...)",
  'python -m vit_jax.main --config=configs/default.py --workdir=/tmp/vit_default': (
    'as written, shortened to 500 steps: conftest.default_run '
    '(test_the_default_run_is_the_readmes_command)'
  ),
  "pip install -e '.[test]'": _CI,
  'ruff check . && ruff format --check .': _CI,
  'python -m pytest -n 2 --durations=15 tests': _CI,
  'python -m vit_jax.main --config=configs/vit.py:ViT-B_16,cifar10 --workdir=/tmp/b16_c10 '
  '--config.pretrained_path=i21k:ViT-B_16 --config.data_dir=~/tensorflow_datasets': (
    'as written on a machine without cifar10: test_readme_fine_tuning_command_...'
  ),
  'python -m vit_jax.main --config=configs/default.py --workdir=DIR --config.mesh.data=2 '
  '--config.mesh.fsdp=4 --config.sharding_rules=fsdp': (
    'filled, on one device: test_bad_input_cli.test_readme_sharding_example_...; on 8: '
    'test_train_sharding'
  ),
  'python -m vit_jax.launch tpu --name=my-v4-32 --zone=us-central2-b [--setup '
  '--repo_url=GIT_URL] -- --config=configs/vit.py:ViT-B_16,imagenet2012 '
  '--workdir=gs://BUCKET/vit_b16': 'as written with --dry_run: test_readme_launch_commands_...',
  'python -m vit_jax.launch slurm --nodes=4 --gpus_per_node=8 --time=24:00:00 -- '
  '--config=configs/vit.py:ViT-B_16,imagenet2012 --workdir=/shared/runs/vit_b16': (
    'as written with --dry_run: test_readme_launch_commands_...'
  ),
  'python -m vit_jax.predict --checkpoint=WORKDIR IMAGE_OR_DIR... [--top_k=5] [--batch=32] '
  '[--json]': 'filled: test_readme_predict_and_analyze_commands_on_the_default_run',
  'python -m vit_jax.predict --checkpoint=ViT-B_16.npz --model=ViT-B_16 [--labels=FILE] '
  'photos/': 'filled with the `testing` model: test_predict.test_npz_with_model_and_labels',
  'python -m vit_jax.analyze --checkpoint=WORKDIR --out=/tmp/analysis': (
    'filled, two analyses at small sizes: test_readme_predict_and_analyze_commands_on_the_...'
  ),
  'python -m vit_jax.analyze --checkpoint=ViT-B_16.npz --model=ViT-B_16 '
  '--dataset=DIR_OR_TFDS --what=attention_distance,rollout,posemb,filters --out=/tmp/analysis': (
    'filled with the `testing` model: test_analyze_cli'
  ),
  'python -m vit_jax.analysis.compare --runs=/tmp/analysis,/tmp/analysis_resnet --out=/tmp/cmp': (
    'filled: test_analysis_compare'
  ),
  'python -m vit_jax.data.mnist_folder --out=/tmp/mnist': (
    'as written (download cache pre-filled): test_readme_mnist_folder_command_runs_as_written'
  ),
  'python -m vit_jax.sweep --config=configs/posemb_ablation.py:/tmp/mnist '
  '--workdir=/tmp/ablation': (
    'not run: 21 runs of 2,400 steps (~3 h on 2 cores); its runs and table: test_sweep'
  ),
  "pip install -e '.[bench]'": "not run: '.[test]' holds the same packages (timm, torch)",
  'python benchmarks/vs_timm.py --models=ViT-Ti_16,ViT-S_16 --batch=32 --modes=infer,train '
  '--dtypes=float32,bfloat16 --rounds=5 --steps=2 [--cpu_devices=1]': (
    'not run (minutes; a benchmark); its tiny form: test_benchmarks'
  ),
  'python benchmarks/vs_timm.py --models=ViT-B_16 --dtypes=bfloat16 --modes=train,infer '
  '--batch=128,256,512 --attention=cudnn,xla --remat_policy=none,dots_saveable [--scan]': (
    'not run: needs a GPU'
  ),
  'python -u benchmarks/accelerator_check.py --budget_s=480': (
    'not run: needs a GPU; its --dry_run: test_dry_run_passes_and_prints_every_part'
  ),
  'python -m vit_jax.export --checkpoint=/tmp/b16_c10 --to=hf --out=/tmp/b16_hf': (
    'filled with tiny runs and files: test_export_cli, test_convert_hf'
  ),
  'python -m vit_jax.export --checkpoint=/tmp/b16_c10 --to=timm --out=/tmp/b16_timm': (
    'filled with a tiny run: test_export_cli.test_workdir_exports_released_npz_and_timm'
  ),
  'python -m vit_jax.export --checkpoint=i21k+i1k:ViT-B_16 --to=timm --out=/tmp/b16.safetensors': (
    'not run: downloads 330 MB; released names from the cache: test_predict_sources, '
    'test_convert_catalogue'
  ),
  'python -m vit_jax.export --checkpoint=file.npz:img --to=npz --out=/tmp/released.npz': (
    'filled: test_convert_big_vision'
  ),
}


def test_every_readme_command_is_run_by_a_test_or_says_why_not():
  assert sorted(set(readme_commands())) == sorted(INVENTORY)
  tests = ' '.join(p.read_text() for p in (ROOT / 'tests').glob('test_*.py'))
  for how in INVENTORY.values():
    for name in re.findall(r'\b(test_\w+)', how):  # each named test (or its start) exists.
      assert f'def {name.rstrip("_")}' in tests or f'{name}.py' in ' '.join(
        p.name for p in (ROOT / 'tests').glob('*.py')
      ), how


def test_the_default_run_is_the_readmes_command(tmp_path):
  from helpers import main_command

  argv = filled(readme_command('python -m vit_jax.main --config=configs/default.py --workdir=/'))
  assert main_command(tmp_path, None)[1:] == [*argv[:-1], f'--workdir={tmp_path}']


def test_readme_fine_tuning_command_on_a_machine_without_cifar10_says_what_to_do(tmp_path):
  # As written: `~` after `=` reaches us unexpanded (bash leaves it), TFDS took it for a
  # folder named `~`. Offline and unprepared, it stops in one line naming the command to run.
  command = readme_command('python -m vit_jax.main --config=configs/vit.py:ViT-B_16,cifar10')
  env = dict(os.environ, HOME=str(tmp_path), VIT_JAX_CACHE=str(tmp_path / 'cache'))
  existed = os.path.exists('/tmp/b16_c10')
  result = subprocess.run(
    [sys.executable, *filled(command)], cwd=ROOT, env=env, capture_output=True, text=True
  )
  data_dir = tmp_path / 'tensorflow_datasets'
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
  assert re.fullmatch(
    rf"Config error: TFDS dataset 'cifar10' is not prepared in data_dir={data_dir} \(looked "
    rf'for {data_dir}/cifar10/[\d.]+\); prepare it with `python -m vit_jax.data.prepare '
    rf'cifar10 --data_dir={data_dir}`, pass download=True, or use an image folder .*',
    lines[0],
  ), lines[0]
  assert existed or not os.path.exists('/tmp/b16_c10')  # nothing written.
  assert not (ROOT / '~').exists()


def test_readme_launch_commands_print_what_they_would_run():
  from vit_jax import launch

  for target in ('tpu', 'slurm'):
    command = readme_command(f'python -m vit_jax.launch {target} ')
    argv = shlex.split(re.sub(r' \[.*?\]', '', command))[3:]  # optional setup left out.
    argv.insert(argv.index('--'), '--dry_run')
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      assert launch.main(argv) == 0
    main_args = command.split(' -- ')[1]
    if target == 'tpu':
      assert out.getvalue().startswith('gcloud compute tpus tpu-vm ssh my-v4-32 ')
      assert f'python3 -m vit_jax.main {main_args} --jax_distributed' in out.getvalue()
    else:
      srun = f'srun python -m vit_jax.main {main_args} --jax_distributed'
      assert srun in out.getvalue().splitlines()
      assert out.getvalue().splitlines()[-1] == 'sbatch vit_jax.sbatch'


def test_readme_predict_and_analyze_commands_on_the_default_run(default_run, tmp_path):
  from PIL import Image
  from sklearn.datasets import load_digits

  from helpers import command_env
  from vit_jax import predict

  workdir = str(default_run[0])
  digits = load_digits()
  (tmp_path / 'images').mkdir()
  for i in range(3):
    pixels = (digits.images[i] * 255 / 16).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / 'images' / f'{i}.png')
  command = readme_command('python -m vit_jax.predict --checkpoint=WORKDIR')
  argv = filled(command, WORKDIR=workdir, **{'IMAGE_OR_DIR...': str(tmp_path / 'images')})
  out, err = io.StringIO(), io.StringIO()
  assert predict.run(argv[1:], out=out, err=err) == 0, err.getvalue()
  report = json.loads(out.getvalue())
  assert [len(p['top_k']) for p in report['predictions']] == [5, 5, 5]
  assert report['checkpoint'].startswith(workdir) and report['num_classes'] == 10

  command = readme_command('python -m vit_jax.analyze --checkpoint=WORKDIR')
  out = tmp_path / 'analysis'
  argv = filled(command, WORKDIR=workdir, **{'/tmp/analysis': str(out)})
  # Two analyses, small: one of the run's test images, one of its training batches (every
  # analysis from a file: test_analyze_cli; from a run in Python: the analysis notebook).
  sizes = ['--what=rollout,landscape', '--num_images=16', '--landscape_steps=3']
  result = subprocess.run(
    [sys.executable, *argv, *sizes], cwd=ROOT, env=command_env(), capture_output=True, text=True
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert [l.split(' (')[0] for l in result.stdout.splitlines()] == [
    'rollout: rollout.png + rollout.json',
    'landscape: landscape.png + landscape.json',
  ]
  # The loss at the trained params, on batches preprocessed as the run trained (0.13 measured,
  # the run's last train loss 0.11): chance (2.30) when the analyses augmented otherwise.
  assert json.loads((out / 'landscape.json').read_text())['centre_loss'] < 0.5
