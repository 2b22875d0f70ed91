"""Learning-rate schedules and optimizers built from the config.

Schedule (`step` = number of updates already applied, 0 for the first update):
  warm-up   lr = base_lr * (step + 1) / warmup_steps            for step < warmup_steps
  decay     p = (step - warmup_steps) / (total_steps - warmup_steps)
            cosine: base_lr * 0.5 * (1 + cos(pi * p));  linear: base_lr * (1 - p)
The `+ 1` makes the first update use base_lr / warmup_steps, not 0 (the original computed
base_lr * step / warmup_steps, so its first update was a no-op), and p < 1 keeps the last
update non-zero.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

Schedule = Callable[[jax.Array], jax.Array]
DECAY_TYPES = ('cosine', 'linear', 'constant')
OPTIMIZERS = ('sgd', 'adamw')


def make_schedule(base_lr: float, total_steps: int, warmup_steps: int, decay_type: str) -> Schedule:
  """Learning rate as a function of the update index (see module docstring)."""
  if decay_type not in DECAY_TYPES:
    raise ValueError(f'decay_type {decay_type!r} is unknown; choose one of {DECAY_TYPES}.')
  if not 0 <= warmup_steps < total_steps:
    raise ValueError(f'warmup_steps={warmup_steps} must be >= 0 and < total_steps={total_steps}.')

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warmup = base_lr * (step + 1.0) / max(warmup_steps, 1)
    progress = jnp.clip((step - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
    if decay_type == 'cosine':
      decayed = base_lr * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    elif decay_type == 'linear':
      decayed = base_lr * (1.0 - progress)
    else:
      decayed = jnp.full_like(progress, base_lr)
    return jnp.where(step < warmup_steps, warmup, decayed)

  return schedule


def decay_mask(params: Any) -> Any:
  """Weight decay on kernels (matrices, convs) only: not on biases, norms, embeddings, cls."""

  def is_kernel(path, _):
    names = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]
    return bool(names) and names[-1] == 'kernel'

  # Works on plain and on logically boxed params (their paths end in the box's attribute).
  return jax.tree_util.tree_map_with_path(is_kernel, params)


def make_optimizer(config: Any, schedule: Schedule) -> optax.GradientTransformation:
  """Global-norm clipping, then SGD+momentum (fine-tuning) or AdamW (pre-training).

  AdamW's `weight_decay` follows big_vision: decoupled and multiplied by the schedule's
  *relative* value lr(t) / base_lr, so that changing base_lr does not change the decay.
  """
  opt = config.optim
  parts = []
  if config.grad_norm_clip:
    parts.append(optax.clip_by_global_norm(config.grad_norm_clip))
  if opt.name == 'sgd':
    if opt.momentum:
      parts.append(
        optax.trace(decay=opt.momentum, nesterov=opt.nesterov, accumulator_dtype=opt.momentum_dtype)
      )
    if opt.weight_decay:
      parts.append(optax.add_decayed_weights(opt.weight_decay, mask=decay_mask))
  elif opt.name == 'adamw':
    parts.append(
      optax.scale_by_adam(b1=opt.b1, b2=opt.b2, eps=opt.eps, mu_dtype=opt.momentum_dtype)
    )
    if opt.weight_decay:
      parts.append(optax.add_decayed_weights(opt.weight_decay / config.base_lr, mask=decay_mask))
  else:
    raise ValueError(f'optim.name {opt.name!r} is unknown; choose one of {OPTIMIZERS}.')
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts)
