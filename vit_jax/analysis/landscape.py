"""Loss landscapes along filter-normalised random directions (HDVW Fig. 1; analysis B4).

Li et al., "Visualizing the Loss Landscape of Neural Nets" (NeurIPS 2018), as used by "How Do
Vision Transformers Work?" (Park & Kim, ICLR 2022): draw two Gaussian directions d1, d2 in
parameter space, rescale each *filter* of a direction to the norm of the same filter of the
params, and evaluate L(θ + a·d1 + b·d2) on a grid of (a, b) ∈ [-1, 1]² (paper: 21 x 21, eval
mode, augmented training data). Filter normalisation removes the scale invariance that would
otherwise make landscapes of differently scaled networks incomparable.

A filter, for the flax layouts of this package (parameter paths like
'Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel'):
  * Dense kernels [in, out] and Conv kernels [kh, kw, in, out]: one slice along the LAST axis
    (one output unit / output channel); its norm is taken over all other axes.
  * Attention query/key/value kernels [D, heads, head_dim]: one (head, dim) column, i.e. the
    norm over axis 0; the `out` kernel [heads, head_dim, D] is a Dense kernel (last axis).
  * Scanned blocks (path segment 'encoderblock', params stacked [L, ...]): the same, per layer.
Excluded (direction exactly zero, as in Li et al. for biases and norms): leaves of ndim <= 1
(biases, LayerNorm/BatchNorm scale and bias; per layer when scanned), leaves named 'bias' (the
query/key/value biases are [heads, head_dim]), and leaves whose path has a segment containing
'pos_embedding' or 'relative' (position tables) or equal to 'cls' (class token). A filter of
the params that is zero gives a zero filter of the direction (so an untrained ViT, whose head is
zero-initialised, has a flat surface).
"""

import functools
from typing import Any, Callable, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

PyTree = Any
Path = tuple[str, ...]

_SCANNED = (
  'encoderblock'  # vit_jax.models.layouts: the scan layout stacks the blocks under this name
)
_PER_HEAD_INPUTS = ('query', 'key', 'value')


class Surface(NamedTuple):
  """coords: float64 [steps] = linspace(-span, span, steps), shared by both axes.
  losses: float64 [steps, steps]; losses[i, j] = L(θ + coords[i]·d1 + coords[j]·d2)."""

  coords: np.ndarray
  losses: np.ndarray


def _key_name(entry) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def _path(key_path) -> Path:
  return tuple(_key_name(entry) for entry in key_path)


def _num_layer_axes(path: Path) -> int:
  """1 for the stacked leaves of scanned encoder blocks ([L, ...]), else 0."""
  return int(_SCANNED in path)


def default_is_excluded(path: Path, array: Any) -> bool:
  """The module doc's rule: ndim <= 1 per layer, biases, position embeddings, relative tables,
  the class token."""
  if np.ndim(array) - _num_layer_axes(path) <= 1 or path[-1:] == ('bias',):
    return True
  return any('pos_embedding' in p or 'relative' in p.lower() or p == 'cls' for p in path)


def filter_axes(path: Path, array: Any) -> tuple[int, ...]:
  """The axes a filter's norm is taken over (the input axes): all but the output axes and
  the scan layer axis. Output axes: the last one, or the last two for query/key/value
  kernels of ndim 3 (per layer)."""
  lead = _num_layer_axes(path)
  num_out = (
    2
    if (
      len(path) >= 2
      and path[-2] in _PER_HEAD_INPUTS
      and path[-1] == 'kernel'
      and np.ndim(array) - lead == 3
    )
    else 1
  )
  return tuple(range(lead, np.ndim(array) - num_out))


def filter_normalized_direction(
  key: jax.Array, params: PyTree, is_excluded: Optional[Callable[[Path, Any], bool]] = None
) -> PyTree:
  """A Gaussian direction whose every filter has the norm of the params' filter (Li et al.).

  d = g · ||θ_f|| / (||g_f|| + 1e-10) per filter f, g ~ N(0, I), filters as in the module doc;
  zero for excluded leaves.

  Args:
    key: a jax PRNG key; g = normal(key, [total size]) cut into the leaves in tree order.
    params: pytree of arrays, possibly holding flax partitioning boxes (unboxed here).
    is_excluded: (path, array) -> bool, replacing default_is_excluded; path is the tuple of
      dict keys, e.g. ('Transformer', 'posembed_input', 'pos_embedding'); array is abstract
      inside jit (use its shape, ndim and dtype only). Hashable (a function), it is static.

  Returns:
    A pytree like the unboxed params, each leaf with its param's shape and dtype.
  """
  return _direction(is_excluded or default_is_excluded, key, nn.meta.unbox(params))


@functools.partial(jax.jit, static_argnums=0)
def _direction(is_excluded, key, params):
  """filter_normalized_direction as one compiled program (eagerly, every leaf's shape would
  compile its own small ops)."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  # One draw for the whole tree, cut into leaves: a threefry per leaf compiles much slower.
  sizes = np.cumsum([0] + [x.size for _, x in leaves])
  noise = jax.random.normal(key, (int(sizes[-1]),), jnp.float32)

  def direction(index, key_path, x):
    path = _path(key_path)
    if is_excluded(path, x):
      return jnp.zeros_like(x)
    axes = filter_axes(path, x)
    g = noise[sizes[index] : sizes[index + 1]].reshape(x.shape)
    norm_x = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=axes, keepdims=True))
    norm_g = jnp.sqrt(jnp.sum(jnp.square(g), axis=axes, keepdims=True))
    return (g * norm_x / (norm_g + 1e-10)).astype(x.dtype)

  return jax.tree.unflatten(
    treedef, [direction(i, key_path, x) for i, (key_path, x) in enumerate(leaves)]
  )


@functools.partial(jax.jit, static_argnums=0)
def _loss_at(loss_fn, params, d1, d2, a, b):
  """loss_fn(θ + a·d1 + b·d2) with a, b traced float32 scalars (one compile for the grid)."""
  moved = jax.tree.map(
    lambda p, u, v: (
      p.astype(jnp.float32) + a * u.astype(jnp.float32) + b * v.astype(jnp.float32)
    ).astype(p.dtype),
    params,
    d1,
    d2,
  )
  return loss_fn(moved).astype(jnp.float32)


def loss_surface(
  loss_fn: Callable[[PyTree], jax.Array],
  params: PyTree,
  directions: Sequence[PyTree],
  steps: int = 21,
  span: float = 1.0,
  progress: bool = True,
) -> Surface:
  """The loss on a steps x steps grid spanned by two directions around params (HDVW Fig. 1).

  Args:
    loss_fn: params -> scalar; may average over several batches it closes over (they become
      constants of the one compiled program). Reuse the function object to reuse the compile.
    params: pytree θ, possibly boxed (unboxed here).
    directions: (d1, d2), pytrees like the unboxed params (filter_normalized_direction).
    steps: grid points per axis (paper: 21).
    span: the grid covers [-span, span]² in units of the directions.
    progress: show a tqdm bar over the rows.

  Returns:
    Surface(coords float64 [steps], losses float64 [steps, steps]); losses[i, j] is the loss at
    θ + coords[i]·d1 + coords[j]·d2 (with odd steps the centre is loss_fn(params)).
  """
  if len(directions) != 2:
    raise ValueError(f'loss_surface takes two directions (d1, d2), got {len(directions)}.')
  params = nn.meta.unbox(params)
  d1, d2 = (nn.meta.unbox(d) for d in directions)
  coords = np.linspace(-span, span, steps)
  losses = np.zeros((steps, steps), np.float64)
  for i in tqdm.trange(steps, desc='Loss surface', disable=not progress):
    # Dispatch the whole row before reading it back, so the device is not left waiting.
    row = [_loss_at(loss_fn, params, d1, d2, np.float32(coords[i]), np.float32(c)) for c in coords]
    losses[i] = [float(v) for v in row]
  return Surface(coords, losses)
