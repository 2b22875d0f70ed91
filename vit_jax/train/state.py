"""Train state (step, params, optimizer state, RNG), created already sharded over the mesh."""

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vit_jax.system import sharding


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data position.

  Attributes:
    step: int32 scalar, number of updates applied.
    params: the model's parameters (unboxed).
    opt_state: optax state.
    rng: uint32 key data [2]; per-step randomness is fold_in(rng, step).
  """

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def init_fn(
  model: nn.Module, tx: optax.GradientTransformation, image_shape: tuple[int, ...]
) -> Callable[[jax.Array], TrainState]:
  """Returns rng -> TrainState with params/opt_state still boxed with logical axis names."""

  def init(rng):
    init_rng, state_rng = jax.random.split(rng)
    params = model.init(init_rng, jnp.zeros(image_shape, jnp.float32), train=False)['params']
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=tx.init(params),
      rng=jax.random.key_data(state_rng),
    )

  return init


def abstract_state_and_shardings(
  init: Callable[[jax.Array], TrainState], mesh, rules, min_shard_mib: float = 0.0
):
  """(abstract unboxed state with shardings, shardings) without allocating anything.

  Parameters (and their optimizer state) under `min_shard_mib` MiB stay replicated.
  """
  boxed = jax.eval_shape(init, jax.random.key(0))
  shardings = sharding.tree_shardings(boxed, mesh, rules, min_shard_mib)
  abstract = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.meta.unbox(boxed), shardings
  )
  return abstract, shardings


def create_sharded(
  init: Callable[[jax.Array], TrainState], rng: jax.Array, shardings
) -> TrainState:
  """Runs `init` under jit with out_shardings: every array is born on its devices."""
  return jax.jit(lambda r: nn.meta.unbox(init(r)), out_shardings=shardings)(rng)
