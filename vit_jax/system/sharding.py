"""Device mesh from the config, and the one place where logical axes become mesh axes.

The models name the axes of every parameter and of key activations (`embed`, `mlp`, `heads`,
`kv`, `classes`, `batch`, `length`, ...). A rules table, part of the config, maps each logical
name to a mesh axis, a tuple of mesh axes, or None (replicated):

  data parallel   (('batch', ('data', 'fsdp')),)                   params replicated
  FSDP            + ('embed', 'fsdp'), ('mlp', 'fsdp'), ...          params/grads/opt state sharded
  tensor parallel + ('heads', 'model'), ('mlp', 'model')             heads / MLP hidden split

Switching between them is a config change. A dimension that a mesh axis does not divide
evenly is replicated along that axis instead (e.g. 3 heads on a 2-way `model` axis; logged
as a warning for parameters). `logical_to_spec` is the one resolver, for parameters
(`tree_shardings`) and activations (`constrain`, inside `activate`) alike, so both always
agree. Parameters below a size floor stay replicated (as big_vision's FSDP: gathering tiny
tensors costs more than their memory saves).
"""

import contextlib
import contextvars
import math
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

from absl import logging
import flax.linen as nn
import jax
from jax.sharding import AxisType
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

MeshAxes = Union[None, str, tuple[str, ...]]
Rules = Sequence[tuple[str, MeshAxes]]
_WARNED: set[tuple[int, str, tuple[str, ...]]] = set()  # Each replicated case is logged once.


def make_mesh(axes: Mapping[str, int], devices: Optional[Sequence[Any]] = None) -> Mesh:
  """Mesh with the named axes in order; one size may be -1 (= all remaining devices).

  Raises:
    ValueError: (one line) when the sizes do not multiply to the number of devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  names, sizes = list(axes), [int(s) for s in axes.values()]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f'mesh {dict(axes)}: sizes must be positive, with at most one -1.')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(
        f'mesh {dict(axes)}: {len(devices)} devices are not divisible by the '
        f'fixed axis sizes (product {known}); change config.mesh.'
      )
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    hint = ''
    if math.prod(sizes) > len(devices) and devices[0].platform == 'cpu':
      # CPU devices are simulated; JAX reads their count once, when it starts.
      hint = (
        f' On a CPU, XLA_FLAGS=--xla_force_host_platform_device_count={math.prod(sizes)} before'
        f' the command simulates {math.prod(sizes)} devices.'
      )
    raise ValueError(
      f'mesh {dict(axes)}: sizes multiply to {math.prod(sizes)} but there are '
      f'{len(devices)} devices; make the product {len(devices)} (or use -1).{hint}'
    )
  return jax.make_mesh(
    tuple(sizes), tuple(names), axis_types=(AxisType.Auto,) * len(names), devices=devices
  )


def _as_tuple(axes: MeshAxes) -> tuple[str, ...]:
  if axes is None:
    return ()
  return (axes,) if isinstance(axes, str) else tuple(axes)


def validate_rules(rules: Rules, mesh: Mesh) -> None:
  for logical, axes in rules:
    unknown = [a for a in _as_tuple(axes) if a not in mesh.axis_names]
    if unknown:
      raise ValueError(
        f'sharding rule {logical!r} -> {axes!r} names mesh axes {unknown} that '
        f'the mesh does not have ({list(mesh.axis_names)}).'
      )


def logical_to_spec(
  names: Sequence[Optional[str]], shape: Sequence[int], mesh: Mesh, rules: Rules, warn: bool = True
) -> P:
  """PartitionSpec for an array with logical axis `names`.

  Dimensions are resolved in order. A logical name may have several rules, tried in order; a
  rule is taken when its mesh axes are not yet used by an earlier dimension of this array
  and evenly divide the dimension (else the next rule, else replicated, with a warning if
  `warn`: parameters warn, activations, e.g. init's batch of 1, do not).
  """
  used, spec = set(), []
  for name, dim in zip(names, shape):
    chosen = None
    for logical, axes in rules:
      axes = tuple(a for a in _as_tuple(axes) if mesh.shape[a] > 1)
      if logical != name or not axes or used.intersection(axes):
        continue
      ways = math.prod(mesh.shape[a] for a in axes)
      if dim % ways:
        if warn and (dim, name, axes) not in _WARNED:
          _WARNED.add((dim, name, axes))
          logging.warning(
            'Replicating dimension %s of size %d: %d-way %s does not divide it; '
            'pick mesh sizes that divide it to shard it.',
            name,
            dim,
            ways,
            axes,
          )
        continue
      chosen = axes
      break
    if chosen:
      used.update(chosen)
    spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else chosen)
  while spec and spec[-1] is None:
    spec.pop()
  return P(*spec)


def tree_shardings(
  abstract_boxed: Any, mesh: Mesh, rules: Rules, min_shard_mib: float = 0.0
) -> Any:
  """NamedShardings for a tree whose leaves may be flax LogicallyPartitioned boxes.

  Boxed leaves are sharded by their names, unless smaller than `min_shard_mib` MiB counted
  as float32 (so that a parameter and its optimizer state, maybe bfloat16, agree); plain
  leaves (step counters, RNG keys, scalars of optimizer states) are replicated. The result
  has the structure of the unboxed tree.
  """
  min_elements = min_shard_mib * 2**20 / 4

  def one(leaf):
    if isinstance(leaf, nn.LogicallyPartitioned) and math.prod(leaf.value.shape) >= min_elements:
      return NamedSharding(mesh, logical_to_spec(leaf.names, leaf.value.shape, mesh, rules))
    return NamedSharding(mesh, P())

  return jax.tree.map(one, abstract_boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def batch_axes(rules: Rules) -> tuple[str, ...]:
  """Mesh axes that the 'batch' logical axis maps to (its first rule: the data axes)."""
  return next((_as_tuple(axes) for name, axes in rules if name == 'batch'), ())


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
  """Sharding of a [batch, ...] input array: the batch dim split over the batch axes."""
  axes = tuple(a for a in batch_axes(rules) if a in mesh.axis_names)
  return NamedSharding(mesh, P(axes if axes else None))


def data_parallel_size(mesh: Mesh, rules: Rules) -> int:
  return math.prod(mesh.shape[a] for a in batch_axes(rules) if a in mesh.axis_names)


_ACTIVE: contextvars.ContextVar[Optional[tuple[Mesh, Rules]]] = contextvars.ContextVar(
  'vit_jax_sharding_active', default=None
)


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules) -> Iterator[None]:
  """Context in which functions traced apply the models' activation constraints (`constrain`)."""
  token = _ACTIVE.set((mesh, tuple(rules)))
  try:
    with jax.set_mesh(mesh):
      yield
  finally:
    _ACTIVE.reset(token)


def constrain(x: jax.Array, names: Sequence[Optional[str]]) -> jax.Array:
  """Sharding constraint on an activation by logical axis names, resolved as parameters are;
  a no-op outside `activate`."""
  active = _ACTIVE.get()
  if active is None:
    return x
  mesh, rules = active
  return jax.lax.with_sharding_constraint(
    x, NamedSharding(mesh, logical_to_spec(names, x.shape, mesh, rules, warn=False))
  )
