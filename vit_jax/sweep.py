r"""Runs a config's sweep (one training run per set of overrides) and tabulates the results.

  python -m vit_jax.sweep --config=configs/posemb_ablation.py:/tmp/mnist --workdir=DIR

The config file defines `get_sweep(arg)` next to `get_config(arg)`: a list of dicts of config
overrides, e.g. [{'model.posemb': 'none', 'seed': 0}, ...]. Each run is
`python -m vit_jax.main --config=FILE:arg --config.<key>=<value> ... --workdir=DIR/<name>`
in its own process, one after the other; a run whose `final_metrics.json` exists is not run
again (rerun the command to resume a sweep). The table groups runs by every override except
`seed` and reports the mean ± standard deviation (over seeds, ddof=1) of `--metric`; it is
printed and written to DIR/table.md, with every run's numbers in DIR/results.json.
"""

import json
import os
import subprocess
import sys
import time
from typing import Any, Optional, Sequence

from absl import app
from absl import flags
from etils import epath
import numpy as np

from vit_jax.run import workdir as workdir_lib
from vit_jax.train import config_files
from vit_jax.train import metrics

_CONFIG = flags.DEFINE_string(
  'config', None, 'Config file with get_sweep: FILE.py[:arg].', required=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'One subfolder per run goes here.', required=True)
_METRIC = flags.DEFINE_string('metric', 'test/accuracy', 'Key of final_metrics.json to report.')
_ONLY = flags.DEFINE_list(
  'only',
  None,
  'Run only the runs whose name contains one of these '
  '(comma-separated), e.g. posemb=none_,posemb=learn_seed.',
)


def load_sweep(config: str) -> list[dict[str, Any]]:
  """The overrides of every run of `config` ('FILE.py[:arg]', as --config= takes it)."""
  try:
    module, arg = config_files.load_module(config)
  except FileNotFoundError:
    raise ValueError(f'config file {config_files.split_spec(config)[0]} not found.') from None
  if not hasattr(module, 'get_sweep'):
    raise ValueError(
      f'{config_files.split_spec(config)[0]} defines no get_sweep(arg); add one '
      'returning a list of dicts of config overrides.'
    )
  return list(module.get_sweep(arg) if arg is not None else module.get_sweep())


def run_name(overrides: dict[str, Any]) -> str:
  """'model.posemb=none,seed=0' -> a folder name: 'posemb=none_seed=0'."""
  return '_'.join(f'{k.split(".")[-1]}={_format(v)}' for k, v in overrides.items())


def _format(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    return 'x'.join(str(v) for v in value)
  return str(value)


def _override_flag(key: str, value: Any) -> str:
  if isinstance(value, (tuple, list)):
    value = '(' + ','.join(str(v) for v in value) + (',)' if len(value) == 1 else ')')
  return f'--config.{key}={value}'


def run_one(config: str, overrides: dict[str, Any], workdir: str) -> dict[str, Any]:
  """Trains one run (unless its final_metrics.json exists) and returns its final metrics."""
  final = workdir_lib.read_final(workdir)
  if final is None:
    cmd = [
      sys.executable,
      '-m',
      'vit_jax.main',
      f'--config={config}',
      f'--workdir={workdir}',
      *(_override_flag(k, v) for k, v in overrides.items()),
    ]
    print('$', ' '.join(cmd), flush=True)
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
      raise RuntimeError(
        f'run {workdir} failed with exit code {result.returncode}; fix it and '
        'rerun the sweep (finished runs are kept).'
      )
    final = workdir_lib.read_final(workdir)
  return final


def summarize(
  runs: Sequence[tuple[dict[str, Any], dict[str, Any]]], metric: str
) -> list[dict[str, Any]]:
  """Groups (overrides, final metrics) by the overrides other than `seed`: one row per group
  with 'group' (dict), 'values' (list), 'mean' and 'std' (ddof=1; 0 for a single run)."""
  groups: dict[str, dict[str, Any]] = {}
  for overrides, final in runs:
    if metric not in final:
      raise KeyError(
        f'{metric!r} is not in the final metrics ({sorted(final)}); pass --metric=one of those.'
      )
    group = {k: v for k, v in overrides.items() if k != 'seed'}
    row = groups.setdefault(json.dumps(group, sort_keys=True), {'group': group, 'values': []})
    row['values'].append(float(final[metric]))
  rows = list(groups.values())
  for row in rows:
    values = np.asarray(row['values'])
    row['mean'] = float(values.mean())
    row['std'] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
  return rows


def markdown_table(rows: Sequence[dict[str, Any]], metric: str) -> str:
  keys = list(rows[0]['group']) if rows else []
  lines = [
    '| ' + ' | '.join(keys + [f'{metric} (mean ± std)', 'runs']) + ' |',
    '|' + ' --- |' * (len(keys) + 2),
  ]
  for row in rows:
    cells = [_format(row['group'][k]) for k in keys]
    cells += [f'{row["mean"]:.4f} ± {row["std"]:.4f}', str(len(row['values']))]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def progress_line(
  k: int, total: int, name: str, finished: bool, took: Sequence[float], to_train: int
) -> str:
  """'run k/N name: ...': finished already, or training, with the sweep's ETA once a run has
  trained (the mean time of this sweep's trained runs times the runs left to train)."""
  if finished:
    return f'run {k}/{total} {name}: finished already, kept'
  if not took:
    return f'run {k}/{total} {name}: training ({to_train} to train; ETA after this one)'
  mean = sum(took) / len(took)
  return (
    f'run {k}/{total} {name}: training ({to_train} to train; sweep ETA '
    f'{metrics.format_duration(mean * to_train)} at {metrics.format_duration(mean)} per run)'
  )


def main(argv: Sequence[str], only: Optional[Sequence[str]] = None) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    sweep = load_sweep(_CONFIG.value)
  except ValueError as e:
    print(f'Config error: {e}', file=sys.stderr)
    sys.exit(2)
  only = only or _ONLY.value
  chosen = [o for o in sweep if not only or any(part in run_name(o) for part in only)]
  workdirs = [os.fspath(epath.Path(_WORKDIR.value) / run_name(o)) for o in chosen]
  finished = [workdir_lib.read_final(w) is not None for w in workdirs]
  to_train = finished.count(False)
  runs, took = [], []
  for k, (overrides, workdir, done) in enumerate(zip(chosen, workdirs, finished), 1):
    print(progress_line(k, len(chosen), run_name(overrides), done, took, to_train), flush=True)
    start = time.time()
    try:
      final = run_one(_CONFIG.value, overrides, workdir)
    except RuntimeError as e:
      print(f'Error: {e}', file=sys.stderr)
      sys.exit(1)
    if not done:
      took.append(time.time() - start)
      to_train -= 1
    runs.append((overrides, final))
  rows = summarize(runs, _METRIC.value)
  table = markdown_table(rows, _METRIC.value)
  print(table)
  root = epath.Path(_WORKDIR.value)  # local or gs://, as the runs' workdirs.
  (root / 'table.md').write_text(table + '\n')
  results = {
    'metric': _METRIC.value,
    'rows': rows,
    'runs': [{'overrides': o, 'final': r} for o, r in runs],
  }
  (root / 'results.json').write_text(json.dumps(results, indent=1))


if __name__ == '__main__':
  app.run(main)
