r"""Top-k class predictions of a trained model on image files.

  python -m vit_jax.predict --checkpoint=WORKDIR IMAGE_OR_DIR...
  python -m vit_jax.predict --checkpoint=ViT-B_16.npz --model=ViT-B_16 [--labels=FILE] \
      cat.jpg photos/ [--top_k=5] [--batch=32] [--json]

`--checkpoint` is a training run's workdir (its latest checkpoint; or its `checkpoints/`
folder or one step folder), whose `config.json` gives the model and whose `labels.json` the
class names and the run's eval preprocessing; or a released-format `.npz`, with `--model`
naming the registered model. For an `.npz` the image size comes from the position embeddings
(or `--image_size`), the resize is the original's plain resize (or `--resize_mode`), and the
class names from `--labels=FILE` (one per line), else the ImageNet lists of the installed
packages for 1,000 / 21,843 classes (see vit_jax.inference.labels), else the class indices.

Arguments are image files and folders (searched recursively for .jpg/.jpeg/.png/.bmp/.gif).
Images are decoded and resized exactly as the run's evaluation did (vit_jax.data.preprocess),
then classified in jitted batches; probabilities are the softmax of the logits. A file that
cannot be read is listed with the reason, the others are still classified. Output: a table,
or with `--json` one JSON object. Exit codes: 0 predictions printed, 1 no image could be read,
2 bad input (one `Error:` line on stderr: missing checkpoint, no images, model mismatch, ...).
Loading and classifying are vit_jax.inference.predictor's; this module is the command line.
"""

import json
import os
import sys
from typing import Any, Sequence

from absl import flags
from etils import epath

from vit_jax.inference import predictor as predictor_lib
from vit_jax.system import quiet_logs

PredictError = predictor_lib.PredictError


def find_images(paths: Sequence[str]) -> list[str]:
  """The files named, and the image files under the folders named (recursively, sorted;
  hidden files and folders skipped). Raises PredictError for a missing path or no image."""
  from vit_jax.data import folders  # no TF import

  if not paths:
    raise PredictError('no images given; pass image files or folders after the flags.')
  found = []
  for given in paths:
    path = epath.Path(given)
    if not path.exists():
      raise PredictError(f'{given} does not exist; pass image files or folders.')
    if not path.is_dir():
      found.append(given)  # named explicitly: tried whatever its extension.
      continue
    images = []
    for root, dirs, files in path.walk():
      dirs[:] = [d for d in dirs if not d.startswith('.')]
      images += [
        os.fspath(root / f)
        for f in files
        if f.lower().endswith(folders.IMAGE_EXTENSIONS) and not f.startswith('.')
      ]
    found += sorted(images)
  if not found:
    raise PredictError(
      f'no image files ({", ".join(folders.IMAGE_EXTENSIONS)}) in {", ".join(paths)}.'
    )
  return found


def format_table(results: list[dict[str, Any]], about: dict[str, Any]) -> str:
  """The results as an aligned text table, one row per (image, rank), under a header line."""
  step = f' (step {about["step"]})' if about['step'] is not None else ''
  lines = [
    f'{about["checkpoint"]}{step}: {about["model"]}, {about["image_size"]}px '
    f'{about["resize_mode"]}, {about["num_classes"]} classes, names from '
    f'{about["labels"]}'
  ]
  width = max(len('image'), *(len(r['image']) for r in results))
  lines.append(f'{"image":<{width}}  rank  probability  class')
  for r in results:
    if 'error' in r:
      lines.append(f'{r["image"]:<{width}}     -            -  unreadable: {r["error"]}')
      continue
    for rank, top in enumerate(r['top_k'], 1):
      image = r['image'] if rank == 1 else ''
      lines.append(f'{image:<{width}}  {rank:>4}  {top["probability"]:>11.4f}  {top["name"]}')
  return '\n'.join(lines)


def _define_flags() -> flags.FlagValues:
  """A private flag set: predict runs in processes that define --model etc. for themselves."""
  fv = flags.FlagValues()
  flags.DEFINE_string(
    'checkpoint', None, "A run's workdir, or a released-format .npz.", flag_values=fv
  )
  flags.DEFINE_string('model', None, 'Registered model name; required for a .npz.', flag_values=fv)
  flags.DEFINE_string(
    'labels',
    None,
    'Text file of class names, one per line in label '
    "order (default: the run's labels.json, or ImageNet's lists).",
    flag_values=fv,
  )
  flags.DEFINE_integer('top_k', 5, 'Classes shown per image.', flag_values=fv)
  flags.DEFINE_integer('batch', 32, 'Images per forward pass.', flag_values=fv)
  flags.DEFINE_integer(
    'image_size',
    None,
    "Input resolution (default: the run's crop, or "
    "what the .npz's position embeddings were made for).",
    flag_values=fv,
  )
  flags.DEFINE_string(
    'resize_mode',
    None,
    '"resize" or "resize_crop" (default: the run\'s; "resize" for a .npz).',
    flag_values=fv,
  )
  flags.DEFINE_bool('json', False, 'Print one JSON object instead of the table.', flag_values=fv)
  return fv


def run(argv: Sequence[str], out=None, err=None) -> int:
  """The command line: parses `argv` (argv[0] is the program), prints, returns the exit code."""
  out, err = out or sys.stdout, err or sys.stderr
  fv = _define_flags()
  if any(a in ('-h', '--help', '--helpfull') for a in argv[1:]):
    print(__doc__ + '\nFlags:\n' + fv.get_help(prefix='  ', include_special_flags=False), file=out)
    return 0
  try:
    try:
      paths = fv(list(argv))[1:]
    except flags.Error as e:
      raise PredictError(f'{quiet_logs.first_line(e)}; see --help.') from None
    for name, low in (('top_k', 1), ('batch', 1), ('image_size', 1)):
      if fv[name].value is not None and fv[name].value < low:
        raise PredictError(f'--{name}={fv[name].value}; pass an integer >= {low}.')
    images = find_images(paths)
    predictor = predictor_lib.load(
      fv.checkpoint,
      model_name=fv.model,
      labels_file=fv.labels,
      image_size=fv.image_size,
      resize_mode=fv.resize_mode,
    )
  except PredictError as e:
    print(f'Error: {e}', file=err)
    return 2
  results = predictor.predict(images, top_k=fv.top_k, batch=fv.batch)
  about = {
    **predictor.about,
    'image_size': predictor.image_size,
    'resize_mode': predictor.resize_mode,
    'num_classes': predictor.num_classes,
  }
  if fv.json:
    print(json.dumps({**about, 'predictions': results}, indent=2), file=out)
  else:
    print(format_table(results, about), file=out)
  unreadable = sum('error' in r for r in results)
  if unreadable:
    print(f'{unreadable} of {len(results)} images could not be read (listed above).', file=err)
  return 1 if unreadable == len(results) else 0


def main() -> None:
  sys.exit(run(sys.argv))


if __name__ == '__main__':
  main()
