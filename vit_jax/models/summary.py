"""Prints a model's parameter count, per top-level module, without allocating its weights.

python -m vit_jax.models.summary ViT-B_16 [--num_classes=1000] [--image_size=224]
python -m vit_jax.models.summary all
python -m vit_jax.models.summary --released ['i21k+i1k:*']   # the released checkpoints
"""

import argparse
import collections
import fnmatch

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import registry


def param_counts(name: str, num_classes: int = 1000, image_size: int = 224) -> dict[str, int]:
  """Parameters per top-level module of model `name` (jax.eval_shape: no memory used)."""
  model = registry.get_model(name, num_classes=num_classes)
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), images)['params']
  counts = collections.Counter()
  for path, leaf in jax.tree_util.tree_leaves_with_path(shapes):
    counts[str(path[0].key)] += int(np.prod(leaf.shape))
  return dict(counts)


def released(pattern: str = '*') -> list[tuple[str, str, str]]:
  """(name, registered model, URL) of each released checkpoint whose name matches `pattern`
  (shell-style, as timm's list_models): the names that `--config.pretrained_path`, `predict`,
  `export` and `analyze` take."""
  from vit_jax.weights import catalogue  # no JAX needed for the names.

  return [
    (name, catalogue.model_name(name) or '?', catalogue.resolve(name))
    for name in catalogue.names()
    if fnmatch.fnmatchcase(name, pattern)
  ]


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    'model', nargs='?', help=f"a model name or 'all': {', '.join(registry.model_names())}"
  )
  parser.add_argument('--num_classes', type=int, default=1000)
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument(
    '--released',
    nargs='?',
    const='*',
    metavar='PATTERN',
    help="list the released checkpoints (names matching PATTERN, e.g. 'i21k:*B_16*')",
  )
  args = parser.parse_args(argv)
  if args.released is not None:
    found = released(args.released)
    if not found:
      parser.error(f'no released checkpoint matches {args.released!r}; --released lists all.')
    for name, model, url in found:
      print(f'{name:<28s} {model:<16s} {url}')
    return
  if not args.model:
    parser.error("pass a model name, 'all' or --released.")
  names = registry.model_names() if args.model == 'all' else [args.model]
  for name in names:
    try:
      counts = param_counts(name, args.num_classes, args.image_size)
    except ValueError as e:
      parser.error(str(e))
    if len(names) == 1:
      for module, n in sorted(counts.items()):
        print(f'  {module:<24s} {n:>14,d}')
    print(
      f'{name:<24s} {sum(counts.values()):>14,d} parameters '
      f'({args.image_size}x{args.image_size}, {args.num_classes} classes)'
    )


if __name__ == '__main__':
  main()
