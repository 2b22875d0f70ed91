"""README's quick-start commands and CI agree, so CI tests what a new user runs."""

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def quick_start_blocks():
  text = (ROOT / 'README.md').read_text()
  section = text.split('## Quick start', 1)[1].split('\n## ', 1)[0]
  return [b.strip().splitlines() for b in re.findall(r'```bash\n(.*?)```', section, re.S)]


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
