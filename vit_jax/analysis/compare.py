r"""Puts the analyses of several models side by side, as the papers' figures do.

  python -m vit_jax.analysis.compare --runs=OUT_VIT,OUT_RESNET --out=DIR

Each of --runs is an --out folder of `python -m vit_jax.analyze`. Writes DIR/hessian.png
(HDVW Fig. 1/4: the pooled eigenvalue histograms) and DIR/noise.png (Fig. 2b: accuracy drop
per noise frequency) for the models that have them, and prints a table of the summary numbers.
"""

import collections
import json
import os
import sys
from typing import Any

from absl import app
from absl import flags
import numpy as np

from vit_jax.analysis import figures
from vit_jax.analysis import loss_figures

_RUNS = flags.DEFINE_list('runs', None, 'Output folders of vit_jax.analyze.')
_OUT = flags.DEFINE_string('out', None, 'Folder for the comparison figures.')


def load(folders) -> dict[str, dict[str, Any]]:
  """{model label: {analysis: its JSON}} for every analysis JSON in each folder.

  A label is the analysis' own (the --label or model name of vit_jax.analyze); runs that share
  one (every small config of one model name does) are labelled by their folder names instead.

  Raises:
    ValueError: (one line) a folder without analyses, or two runs that neither their labels
      nor their folder names tell apart.
  """
  runs = []
  for folder in folders:
    numbers = {}
    for name in sorted(os.listdir(folder)):
      if name.endswith('.json'):
        with open(os.path.join(folder, name)) as f:
          numbers[name[:-5]] = json.load(f)
    if not numbers:
      raise ValueError(
        f'{folder} holds no analysis JSON; pass --out folders of python -m vit_jax.analyze.'
      )
    runs.append((folder, next(iter(numbers.values()))['model'], numbers))
  counts = collections.Counter(label for _, label, _ in runs)
  models = {}
  for folder, label, numbers in runs:
    if counts[label] > 1:
      label = os.path.basename(os.path.normpath(folder))
    if label in models:
      raise ValueError(
        f'two of --runs are both called {label!r} (by label and by folder name); rerun '
        'python -m vit_jax.analyze with --label=NAME for each, or give them distinct folders.'
      )
    models[label] = numbers
  return models


def table(models: dict[str, dict[str, Any]]) -> str:
  """Markdown: per model the Hessian summary and the noise sensitivity at low / high f."""
  lines = [
    '| model | top-5 Hessian eigenvalues: mean of λ > 0 | max λ | share λ < 0 | '
    'accuracy drop, noise f <= π/2 | f > π/2 |',
    '| --- |' + ' ---: |' * 5,
  ]
  for label, numbers in models.items():
    cells = [label]
    hessian = numbers.get('hessian', {}).get('summary')
    cells += (
      [
        f'{hessian["mean_positive"]:.2f}',
        f'{hessian["max"]:.2f}',
        f'{hessian["negative_fraction"]:.0%}',
      ]
      if hessian
      else ['-'] * 3
    )
    noise = numbers.get('noise')
    if noise:
      f, drop = np.asarray(noise['frequencies']), np.asarray(noise['accuracy_drop'])
      cells += [f'{drop[f <= np.pi / 2].mean():.1%}', f'{drop[f > np.pi / 2].mean():.1%}']
    else:
      cells += ['-'] * 2
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv):
  del argv
  if not _RUNS.value or not _OUT.value:
    print('Error: pass --runs=DIR1,DIR2 (vit_jax.analyze outputs) and --out=DIR.', file=sys.stderr)
    sys.exit(2)
  try:
    models = load(_RUNS.value)
  except (OSError, ValueError) as e:
    print(f'Error: {e}', file=sys.stderr)
    sys.exit(2)
  os.makedirs(_OUT.value, exist_ok=True)
  spectra = {
    label: np.ravel(n['hessian']['eigenvalues']) for label, n in models.items() if 'hessian' in n
  }
  if spectra:
    loss_figures.plot_hessian_spectra(spectra).savefig(
      os.path.join(_OUT.value, 'hessian.png'), dpi=110, bbox_inches='tight'
    )
  drops = {label: n['noise']['accuracy_drop'] for label, n in models.items() if 'noise' in n}
  if drops:
    freqs = next(n['noise']['frequencies'] for n in models.values() if 'noise' in n)
    figures.plot_noise(freqs, drops).savefig(
      os.path.join(_OUT.value, 'noise.png'), dpi=110, bbox_inches='tight'
    )
  print(table(models))


if __name__ == '__main__':
  app.run(main)
