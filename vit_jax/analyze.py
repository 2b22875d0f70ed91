r"""The papers' analyses of a trained model, one command: a PNG and a JSON per analysis.

  python -m vit_jax.analyze --checkpoint=WORKDIR --out=DIR
  python -m vit_jax.analyze --checkpoint=ViT-B_16.npz --model=ViT-B_16 --dataset=DIR_OR_TFDS \
      --what=attention_distance,rollout,posemb,filters --out=DIR

--what (default: all) picks from:
  filters             A1  principal components of the patch-embedding filters (ViT Fig. 7 left)
  posemb              A2  position-embedding cosine similarity (ViT Fig. 7 centre)
  attention_distance  A3  mean attention distance per layer and head (ViT Fig. 7 right)
  rollout             A4  attention rollout maps over images (ViT Fig. 6, App. D.8)
  fourier             B1  Δ log amplitude of the residual stream per sub-block, and its
                          spatial variance (HDVW Fig. 2a, Fig. 8)
  noise               B2  accuracy drop under band-limited noise per frequency (HDVW Fig. 2b)
  hessian             B3  top-5 Hessian eigenvalues per training mini-batch (HDVW Fig. 1, 4)
  landscape           B4  2-D loss landscape, filter-normalised directions (HDVW Fig. 1)
A3, A4, B1 and B2 read a random sample of --num_images from --split (resized whole, no
augmentation); B3 and B4 read augmented training batches, as the paper.
The definitions are in vit_jax/analysis/. A workdir gives the model, dataset and preprocessing
(config.json); a `.npz` needs --model, and --dataset for all but filters / posemb. Analyses
that do not apply to the model (e.g. attention on an MLP-Mixer) are skipped with a note.
From Python: `analyze.run(analyze.Options(checkpoint=..., out=..., what=('filters',)))`.
"""

import dataclasses
import functools
import io
import json
import sys
import time
from typing import Optional, Sequence

from absl import app
from absl import flags
from absl import logging
from etils import epath
import jax

from vit_jax.analysis import run_data
from vit_jax.inference import predictor as predictor_lib
from vit_jax.run import workdir
from vit_jax.system import cpu_devices

ANALYSES = (
  'filters',
  'posemb',
  'attention_distance',
  'rollout',
  'fourier',
  'noise',
  'hessian',
  'landscape',
)


@dataclasses.dataclass(frozen=True)
class Options:
  """What to analyse and how; the command line's flags of the same names."""

  checkpoint: str  # anything vit_jax.inference.predictor.load takes.
  out: str  # folder for the PNG and JSON files (local or gs://).
  what: Sequence[str] = ANALYSES
  model: Optional[str] = None
  dataset: Optional[str] = None
  data_dir: Optional[str] = None
  split: Optional[str] = None
  train_split: Optional[str] = None
  image_size: Optional[int] = None
  num_images: int = 128
  noise_eps: float = 0.1
  hessian_batches: int = 8
  hessian_batch: int = 16
  weight_decay: Optional[float] = None
  landscape_steps: int = 21
  landscape_batches: int = 2
  seed: int = 0
  label: Optional[str] = None


def _define_flags() -> None:
  """The flags of `Options`; defined only when run as a command (the names would clash with
  other entry points' flags in a process that imports this module)."""
  flags.DEFINE_string(
    'checkpoint', None, "A run's workdir, a released name or .npz, or any checkpoint predict takes."
  )
  flags.DEFINE_string('model', None, 'Model name (needed for a file).')
  flags.DEFINE_string('dataset', None, "TFDS name or image folder (default: the run's dataset).")
  flags.DEFINE_string('data_dir', None, "TFDS data_dir (default: the run's).")
  flags.DEFINE_string('split', None, 'Images to analyse (default: the test split).')
  flags.DEFINE_string(
    'train_split', None, 'Hessian / landscape batches (default: the training split).'
  )
  flags.DEFINE_integer('image_size', None, "Default: the run's / the file's.")
  flags.DEFINE_list('what', list(ANALYSES), f'Any of {",".join(ANALYSES)}.')
  flags.DEFINE_string('out', None, 'Folder for the PNG and JSON files (local or gs://).')
  flags.DEFINE_integer('num_images', 128, 'Images for A3, A4, B1 (paper: 128) and B2.')
  flags.DEFINE_float('noise_eps', 0.1, 'B2: amplitude of the sign noise (images in [-1, 1]).')
  flags.DEFINE_integer('hessian_batches', 8, 'B3: mini-batches (paper: 10% of the training set).')
  flags.DEFINE_integer('hessian_batch', 16, 'B3: mini-batch size (paper: 16).')
  flags.DEFINE_float(
    'weight_decay',
    None,
    "B3: L2 added to the loss (default: the run's optim.weight_decay, 0 for a file).",
  )
  flags.DEFINE_integer('landscape_steps', 21, 'B4: grid points per axis.')
  flags.DEFINE_integer(
    'landscape_batches', 2, 'B4: training batches of --hessian_batch*4 images averaged per point.'
  )
  flags.DEFINE_integer('seed', 0, 'Noise, directions and which images.')
  flags.DEFINE_string(
    'label', None, "Model name on the figures (default: --model or the run's model_name)."
  )


class AnalyzeError(ValueError):
  """Bad input; one line saying what to pass instead."""


def run(options: Options) -> dict[str, str]:
  """Runs the analyses in `options.what`, writes their files to `options.out` (local or
  gs://); returns name -> status ('<files> (<seconds> s)' or 'skipped: <why>').

  Raises:
    AnalyzeError: (one line) bad input, before anything is computed.
  """
  o = options
  what, out = list(o.what), o.out
  from vit_jax.analysis import capture
  from vit_jax.analysis import report

  unknown = sorted(set(what) - set(ANALYSES))
  if unknown:
    raise AnalyzeError(f'--what={",".join(unknown)} unknown; choose from {",".join(ANALYSES)}.')
  try:
    pred = predictor_lib.load(o.checkpoint, model_name=o.model, image_size=o.image_size)
  except predictor_lib.PredictError as e:
    raise AnalyzeError(str(e)) from None
  try:  # a run's config.json gives the dataset, splits and preprocessing (gs:// too).
    config = workdir.read_config(pred.workdir) if pred.workdir else None
  except workdir.RunFileError as e:
    raise AnalyzeError(str(e)) from None
  model, params = pred.model, pred.params
  label = o.label or pred.about['model']
  # The run's images, preprocessed as it trained (the one helper colabs/analysis.ipynb uses).
  data = run_data.RunData(
    config, pred.image_size, dataset=o.dataset, data_dir=o.data_dir, seed=o.seed
  )
  eval_batch = functools.cache(lambda: data.eval_batch(o.num_images, o.split))
  out = epath.Path(out)  # local or gs://, as the run's files.
  out.mkdir(parents=True, exist_ok=True)
  captured = None
  status = {}
  for name in what:
    start = time.time()
    try:
      if name == 'filters':
        result = report.filters(model, params)
      elif name == 'posemb':
        result = report.posemb(model, params, pred.image_size)
      elif name in ('attention_distance', 'rollout', 'fourier'):
        images, _ = eval_batch()
        if captured is None:
          captured = capture.run(model, params, images)
        if name == 'attention_distance':
          result = report.attention_distance(captured, label)
        elif name == 'rollout':
          result = report.rollout(captured, images)
        else:
          result = report.fourier(captured, label)
      elif name == 'noise':
        images, labels = eval_batch()
        apply = jax.jit(lambda x: model.apply({'params': params}, x, train=False))

        def forward(x):
          return apply(cpu_devices.shard_batch(x))  # over the devices (CPU cores).

        result = report.noise(forward, images, labels, eps=o.noise_eps, seed=o.seed, label=label)
      elif name == 'hessian':
        wd = o.weight_decay
        if wd is None:
          wd = float((config or {}).get('optim', {}).get('weight_decay', 0.0) or 0.0)
        batches = data.train_batches(o.hessian_batch, o.hessian_batches, o.train_split)
        result = report.hessian(model, params, batches, weight_decay=wd, label=label, seed=o.seed)
      else:
        batches = data.train_batches(o.hessian_batch * 4, o.landscape_batches, o.train_split)
        result = report.landscape(
          model, params, batches, steps=o.landscape_steps, seed=o.seed, label=label
        )
    except run_data.NoImagesError as e:
      raise AnalyzeError(str(e)) from None
    except report.NotApplicable as e:
      status[name] = f'skipped: {e}'
      print(f'{name}: skipped ({e})', flush=True)
      continue
    result = result.captioned(f'{label}, {pred.about["checkpoint"]}')
    numbers = dict(result.numbers, model=label, checkpoint=pred.about['checkpoint'])
    (out / f'{name}.json').write_text(json.dumps(numbers))
    files = []
    for fig_name, figure in result.figures.items():
      png = io.BytesIO()
      figure.savefig(png, format='png', dpi=110, bbox_inches='tight')
      (out / f'{fig_name}.png').write_bytes(png.getvalue())
      files.append(f'{fig_name}.png')
    status[name] = f'{", ".join(files)} + {name}.json ({time.time() - start:.1f} s)'
    print(f'{name}: {status[name]}', flush=True)
  return status


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  values = flags.FLAGS
  if not values.checkpoint or not values.out:
    print('Error: pass --checkpoint=WORKDIR|FILE.npz and --out=DIR.', file=sys.stderr)
    sys.exit(2)
  logging.set_verbosity(logging.WARNING)
  options = Options(**{f.name: values[f.name].value for f in dataclasses.fields(Options)})
  try:
    run(options)
  except AnalyzeError as e:
    print(f'Error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
