"""Split strings for image folders (TFDS syntax) and even per-process parts of a split.

TFDS datasets use TFDS's own helpers; image folders use these, with the same syntax and
rounding as TFDS: 'train', 'train[:98%]', 'train[98%:]', 'train[100:-50]', 'train+test'.
"""

import re

from vit_jax.data import errors

_PIECE_RE = re.compile(r'^\s*(?P<name>[^\[\]+]+?)\s*(?:\[(?P<sel>[^\]]*)\])?\s*$')
_BOUND_RE = re.compile(r'^\s*(?P<val>-?\d+(?:\.\d*)?)?\s*(?P<pct>%)?\s*$')
_SYNTAX = 'use e.g. "train", "train[:90%]", "train[90%:]", "train[100:]" or "train+test"'


def resolve(spec: str, sizes: dict[str, int]) -> list[tuple[str, int, int]]:
  """Turns a split string into absolute ranges of named splits.

  Args:
    spec: e.g. 'train[:98%]+test'.
    sizes: number of examples of each named split.

  Returns:
    [(split_name, start, stop), ...], one per '+'-separated piece, in order.
  """
  ranges = []
  for piece in str(spec).split('+'):
    match = _PIECE_RE.match(piece)
    if not match:
      raise errors.DataError(f'Cannot parse split {spec!r}; {_SYNTAX}.')
    name = match['name']
    if name not in sizes:
      raise errors.DataError(
        f'Split {name!r} does not exist; available splits: {", ".join(sorted(sizes))}.'
      )
    n = sizes[name]
    start, stop = 0, n
    if match['sel'] is not None:
      bounds = match['sel'].split(':')
      if len(bounds) != 2:
        raise errors.DataError(f'Cannot parse split {spec!r}; {_SYNTAX}.')
      start = _absolute(bounds[0], n, default=0, spec=spec)
      stop = _absolute(bounds[1], n, default=n, spec=spec)
    if not 0 <= start <= stop <= n:
      raise errors.DataError(
        f'Split {spec!r} selects [{start}:{stop}] of {name!r}, which has '
        f'{n} examples; choose bounds within [0:{n}].'
      )
    ranges.append((name, start, stop))
  return ranges


def _absolute(bound: str, n: int, *, default: int, spec: str) -> int:
  match = _BOUND_RE.match(bound)
  if not match:
    raise errors.DataError(f'Cannot parse split {spec!r}; {_SYNTAX}.')
  if match['val'] is None:
    if match['pct']:
      raise errors.DataError(f'Cannot parse split {spec!r}; {_SYNTAX}.')
    return default
  if match['pct']:
    value = int(round(float(match['val']) * n / 100.0))  # TFDS's 'closest' rounding.
  elif '.' in match['val']:
    raise errors.DataError(f'Split {spec!r} has a fractional absolute bound; {_SYNTAX}.')
  else:
    value = int(match['val'])
  return value + n if value < 0 else value


def even_part(n: int, index: int, count: int) -> tuple[int, int]:
  """[start, stop) of part `index` of `count` near-equal parts of range(n).

  Sizes differ by at most 1, the larger parts first (as `tfds.even_splits`).
  """
  return -(-index * n // count), -(-(index + 1) * n // count)


def part_sizes(n: int, count: int) -> list[int]:
  """Sizes of the `count` parts given by `even_part`."""
  return [even_part(n, i, count)[1] - even_part(n, i, count)[0] for i in range(count)]
