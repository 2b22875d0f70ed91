"""Every notebook in colabs/ runs top to bottom headless, and is stored as users open it.

Each notebook runs in a fresh Jupyter kernel (this Python, `python3` kernel) with the
environment a user has: this checkout importable, no simulated devices from conftest.py, and a
private TFDS data_dir, download cache and temp dir, so that notebooks running side by side
(pytest -n 2) share nothing. A cell error fails the test with the cell's traceback.
"""

import os
import pathlib
import re
import sys
import time

from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / 'colabs').glob('*.ipynb'))
IDS = [p.stem for p in NOTEBOOKS]
# The GitHub repository the badges open and the install cells clone.
GITHUB_REPO = 'vit-jax/vit_jax'
_DEVICE_COUNT_FLAG = re.compile(r'--xla_force_host_platform_device_count=\S+')
# What each notebook's `parameters` cell is set to here (papermill's convention: a cell after
# it): the fewest steps and samples that run every cell, on a 2-core CPU in seconds rather than
# minutes. What the notebooks assert (evaluate() == the trainer's final eval, exports equal
# to our logits, reloaded params bit-identical) does not depend on them.
SMALL = {
  'quickstart': dict(STEPS=20),
  'analysis': dict(
    STEPS=20, SIZES=dict(images=16, hessian_batches=1, hessian_iterations=3, landscape_steps=3)
  ),
  'finetune': dict(PRETRAIN_STEPS=20, FINETUNE_STEPS=10),
  'sharding': dict(STEPS=3),
}


# The figures each notebook shows, as PNG outputs (its text promises each one). Headless, the
# analysis notebook showed none of its 9 before: bare Figure objects print as text.
IMAGES = {'analysis': 9, 'quickstart': 2, 'finetune': 1, 'sharding': 0}


def _kernel_env(tmp_path: pathlib.Path) -> dict[str, str]:
  env = dict(os.environ)
  # conftest.py simulates 8 devices for the tests; a notebook decides that for itself.
  env['XLA_FLAGS'] = _DEVICE_COUNT_FLAG.sub('', env.get('XLA_FLAGS', '')).strip()
  env['PYTHONPATH'] = os.pathsep.join(
    [str(ROOT)] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]
  )
  for name, sub in (('TFDS_DATA_DIR', 'tfds'), ('VIT_JAX_CACHE', 'cache'), ('TMPDIR', 'tmp')):
    (tmp_path / sub).mkdir()
    env[name] = str(tmp_path / sub)
  env.pop('MPLBACKEND', None)  # the kernel's inline backend renders figures, as in Colab.
  return env


def test_there_are_notebooks():
  assert set(IMAGES) == set(IDS)


def test_the_analysis_notebook_reads_the_runs_images_as_analyze_does():
  # Its own train_iterator calls used the defaults (5% crops, flips), not the run's recipe:
  # a chance-level loss (2.30) at the parameters of an 88% model.
  code = '\n'.join(
    c.source
    for c in nbformat.read(ROOT / 'colabs' / 'analysis.ipynb', 4).cells
    if c.cell_type == 'code'
  )
  assert 'train_iterator' not in code and 'eval_iterator' not in code
  assert 'run_data.RunData.from_workdir(WORKDIR' in code
  assert "RUN_DATA.eval_batch(SIZES['images'])" in code
  assert "RUN_DATA.train_batches(16, SIZES['hessian_batches'])" in code


def _with_small_parameters(notebook, name):
  """The notebook with SMALL[name] set in a cell after its `parameters` cell."""
  tagged = [i for i, c in enumerate(notebook.cells) if 'parameters' in c.metadata.get('tags', [])]
  assert len(tagged) == 1, f'{name}: one code cell tagged `parameters`, found {len(tagged)}'
  cell = notebook.cells[tagged[0]]
  assigned = set(re.findall(r'^([A-Z_]+) = ', cell.source, re.MULTILINE))
  assert set(SMALL[name]) <= assigned, f'{name}: the parameters cell sets {sorted(assigned)}'
  source = '\n'.join(f'{k} = {v!r}' for k, v in SMALL[name].items())
  notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(source))
  return notebook


@pytest.mark.parametrize('path', NOTEBOOKS, ids=IDS)
def test_notebook_runs(path, tmp_path):
  notebook = _with_small_parameters(nbformat.read(path, as_version=4), path.stem)
  # A last cell of our own: the kernel is this Python, and vit_jax is this checkout's.
  notebook.cells.append(
    nbformat.v4.new_code_cell(
      'import sys\nimport vit_jax\nprint(sys.executable)\nprint(vit_jax.__file__)'
    )
  )
  workdir = tmp_path / 'cwd'
  workdir.mkdir()
  client = NotebookClient(
    notebook,
    timeout=600,
    kernel_name='python3',
    allow_errors=False,
    resources={'metadata': {'path': str(workdir)}},
  )
  start = time.perf_counter()
  try:
    client.execute(env=_kernel_env(tmp_path))
  except CellExecutionError as e:
    pytest.fail(f'{path.name}: a cell failed:\n{e}', pytrace=False)
  seconds = time.perf_counter() - start
  print(f'{path.name}: {seconds:.0f}s')
  images = [
    i
    for i, cell in enumerate(notebook.cells)
    if cell.cell_type == 'code'
    for output in cell.outputs
    if len(output.get('data', {}).get('image/png', '')) > 1000  # base64 of a real PNG.
  ]
  assert len(images) == IMAGES[path.stem], f'{path.name}: PNGs in cells {images}'
  # All of its stdout: the kernel may send the two lines as two messages, and a warning from
  # an earlier cell's thread may land between them on stderr.
  printed = ''.join(o['text'] for o in notebook.cells[-1].outputs if o.get('name') == 'stdout')
  assert len(printed.split()) == 2, notebook.cells[-1].outputs
  executable, package = printed.split()
  assert os.path.realpath(executable) == os.path.realpath(sys.executable)
  assert package == str(ROOT / 'vit_jax' / '__init__.py')


@pytest.mark.parametrize('path', NOTEBOOKS, ids=IDS)
def test_notebook_is_stored_without_outputs(path):
  # Outputs in git are noise in diffs and go stale; Colab shows them once run.
  notebook = nbformat.read(path, as_version=4)
  nbformat.validate(notebook)
  for i, cell in enumerate(notebook.cells):
    if cell.cell_type == 'code':
      assert cell.outputs == [], f'{path.name} cell {i} has outputs; clear them before committing'
      assert cell.execution_count is None, f'{path.name} cell {i} has an execution count'
    assert 'execution' not in cell.metadata, f'{path.name} cell {i} has execution timings'
  assert 'widgets' not in notebook.metadata
  assert notebook.metadata['kernelspec']['name'] == 'python3'


@pytest.mark.parametrize('path', NOTEBOOKS, ids=IDS)
def test_notebook_opens_in_colab_and_installs_itself(path):
  notebook = nbformat.read(path, as_version=4)
  first, install = notebook.cells[0], notebook.cells[1]
  assert first.cell_type == 'markdown' and first.source.startswith('# ')
  badge = f'(https://colab.research.google.com/github/{GITHUB_REPO}/blob/main/colabs/{path.name})'
  assert badge in first.source, f'{path.name}: the first cell needs the badge link {badge}'
  assert install.cell_type == 'code'
  assert f"'https://github.com/{GITHUB_REPO}'" in install.source
  assert 'except ImportError:' in install.source  # installs only where vit_jax is missing.


@pytest.mark.parametrize('path', NOTEBOOKS, ids=IDS)
def test_notebook_code_is_within_100_columns(path):
  notebook = nbformat.read(path, as_version=4)
  for i, cell in enumerate(notebook.cells):
    if cell.cell_type == 'code':
      for line in cell.source.splitlines():
        assert len(line) <= 100, f'{path.name} cell {i}: {line!r}'
