r"""Exports a checkpoint for other codebases: released `.npz`, timm or Hugging Face.

  python -m vit_jax.export --checkpoint=WORKDIR|file.npz|... --to=hf|timm|npz --out=PATH \
      [--model=NAME] [--image_size=H,W]

`--checkpoint` takes a vit_jax training workdir (its newest Orbax checkpoint; the workdir's
config.json names the model and image size) or anything `config.pretrained_path` takes (a
released or big_vision `.npz`, a released name such as `i21k:ViT-B_16`, timm / Hugging Face
files). The architecture is read from the params' shapes (vit_jax.weights.spec); `--model`
checks the params against a registered model instead, `--image_size` gives a non-square size.

  --to=npz   released layout (vit_jax.weights.released.save), any model.
  --to=timm  a folder (model.safetensors + timm's config.json) for
             timm.create_model('local-dir:OUT', pretrained=True), or with OUT ending in
             .safetensors / .pth / .bin that one state_dict file (the printed
             timm.create_model(..., pretrained_cfg_overlay=dict(file=OUT), ...) call loads it).
  --to=hf    a folder for transformers.ViTForImageClassification.from_pretrained(OUT)
             (a ViTModel, whose pooler is pre_logits, for models with a pre_logits layer).

Prints how to load the result. Exit code 2, with one line saying what to do, on bad input.
"""

import dataclasses
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from vit_jax import models
from vit_jax.run import workdir
from vit_jax.weights import fit
from vit_jax.weights import released
from vit_jax.weights import sources
from vit_jax.weights import spec as spec_lib
from vit_jax.weights import tree
from vit_jax.weights.formats import hf
from vit_jax.weights.formats import timm_hub

TARGETS = ('hf', 'timm', 'npz')
FLAGS = flags.FLAGS


def _define_flags():
  """Defined only when run as a command: `--model` / `--image_size` would clash with other
  entry points' flags in a process that imports this module (tests)."""
  flags.DEFINE_string(
    'checkpoint', None, 'A vit_jax workdir, or any path or name config.pretrained_path takes.'
  )
  flags.DEFINE_string('to', None, f'Target format: one of {", ".join(TARGETS)}.')
  flags.DEFINE_string(
    'out', None, 'Output folder (hf, timm) or file (npz; timm with .safetensors/.pth/.bin).'
  )
  flags.DEFINE_string(
    'model',
    None,
    'Registered model name to check the params against '
    '(default: read the architecture from the params).',
  )
  flags.DEFINE_string(
    'image_size', None, 'H,W (or one number) the model takes; needed only for non-square sizes.'
  )


class ExportError(ValueError):
  """Bad input; the message says what to do."""


def _image_size(text):
  if text is None:
    return None
  try:
    sizes = [int(x) for x in text.split(',')]
  except ValueError:
    sizes = []
  if len(sizes) not in (1, 2) or min(sizes) <= 0:
    raise ExportError(f'--image_size={text}; pass HEIGHT,WIDTH or one size, e.g. 224 or 224,320.')
  return (sizes[0], sizes[-1])


def _check_against_model(flat, name, overrides, image_size):
  """Model `name`, checked to fit the params exactly (keys and shapes); else ExportError."""
  num_classes = spec_lib.num_classes(flat) or None
  model = models.get_model(name, num_classes=num_classes, **overrides)
  if image_size is None:
    image_size = spec_lib.infer(flat).image_size if 'embedding/kernel' in flat else (224, 224)
  shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, *image_size, 3), np.float32))[
    'params'
  ]
  zeros = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes)
  try:
    fit.load_pretrained(tree.unflatten(flat), zeros, keep_head=True)
  except ValueError as e:
    raise ExportError(
      f'--model={name} at {image_size[0]}x{image_size[1]} does not fit the '
      f'checkpoint (leave --model out to read the architecture from the params): '
      f'{e}'
    ) from None
  return model


def export(
  source: str,
  to: str,
  out: str,
  model: str | None = None,
  image_size: tuple[int, int] | None = None,
) -> str:
  """Converts `source` to format `to` at `out`; returns how to load it (one line).

  Raises:
    ExportError / ValueError / OSError: one line saying what is wrong and what to do.
  """
  if to not in TARGETS:
    raise ExportError(f'--to={to}; pick one of {", ".join(TARGETS)}.')
  if model is not None and model not in models.model_names():
    raise ExportError(f'unknown --model={model}; pick one of {", ".join(models.model_names())}.')
  num_heads = getattr(models.get_model(model), 'num_heads', None) if model else None
  read = sources.read(source, num_heads=num_heads)
  flat, overrides = read.params, {}
  image_size = image_size or read.image_size  # a HF / timm folder's config says it.
  config, class_names = None, None
  if read.workdir is not None:  # a run: its config and class names (labels.json).
    config = workdir.read_config(read.workdir)
    class_names = (workdir.read_labels(read.workdir) or {}).get('class_names')
  if config is not None:  # a vit_jax run: its config names the model and the image size.
    name, overrides = workdir.model_of(config)
    model = model or name
    crop = (config.get('pp') or {}).get('crop')
    image_size = image_size or ((crop, crop) if crop else None)
  module = _check_against_model(flat, model, overrides, image_size) if model else None
  # The GELU form is not in the params: the file says it (timm, HF) or the run's config.
  exact_gelu = bool(overrides.get('exact_gelu')) if read.exact_gelu is None else read.exact_gelu
  if to == 'npz':
    released.save(out, tree.unflatten(flat))
    if exact_gelu:
      logging.warning(
        '%s computes exact (erf) GELU, which a .npz does not record: build the model that '
        'loads it with exact_gelu=True.',
        source,
      )
    return f'vit_jax.weights.released.load({out!r})'
  classifier = getattr(module, 'classifier', None)
  if classifier in ('unpooled', 'token_unpooled'):  # params alone look like gap / token.
    raise ExportError(
      f'classifier {classifier!r} (all tokens out) has no {to} equivalent; export --to=npz instead.'
    )
  spec = dataclasses.replace(spec_lib.infer(flat, image_size), exact_gelu=exact_gelu)
  return (timm_hub if to == 'timm' else hf).export(flat, spec, out, class_names)


def main(argv):
  # JAX's and Orbax's INFO lines (backend probing, one per restore step) are not the user's
  # business; warnings (e.g. a damaged checkpoint passed over) still show.
  logging.set_verbosity(logging.WARNING)
  try:
    if len(argv) > 1:
      raise ExportError(
        f'unexpected arguments {argv[1:]}; pass flags only (--checkpoint=..., --to=..., --out=...).'
      )
    for name in ('checkpoint', 'to', 'out'):
      if not FLAGS[name].value:
        raise ExportError(
          f'--{name} is required: python -m vit_jax.export '
          f'--checkpoint=WORKDIR|file.npz --to={"|".join(TARGETS)} --out=PATH.'
        )
    how = export(FLAGS.checkpoint, FLAGS.to, FLAGS.out, FLAGS.model, _image_size(FLAGS.image_size))
  except (ValueError, OSError) as e:
    print(f'Error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'Wrote {FLAGS.out}; load it with: {how}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
