"""Prints a model's parameter count, per top-level module, without allocating its weights.

python -m vit_jax.models.summary ViT-B_16 [--num_classes=1000] [--image_size=224]
python -m vit_jax.models.summary all
"""

import argparse
import collections

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


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('model', help=f"a model name or 'all': {', '.join(registry.model_names())}")
  parser.add_argument('--num_classes', type=int, default=1000)
  parser.add_argument('--image_size', type=int, default=224)
  args = parser.parse_args(argv)
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
