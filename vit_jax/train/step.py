"""The train and eval steps: pure functions of (state, batch), jitted with shardings by the loop.

Randomness (dropout, stochastic depth, mixup) comes from fold_in(state.rng, state.step), so a
step's result depends only on the state and the batch: runs reproduce, and a resumed run
continues exactly.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vit_jax.models import layers
from vit_jax.train import state as state_lib

Batch = dict[str, jax.Array]


def mixup(rng: jax.Array, images: jax.Array, labels: jax.Array, alpha: float):
  """Mixes each example with its neighbour in the batch: lam * x_i + (1 - lam) * x_{i-1}.

  One lam ~ Beta(alpha, alpha) per batch (as big_vision); labels are one-hot/soft [B, C].
  """
  lam = jax.random.beta(rng, alpha, alpha)
  mix = lambda x: lam * x + (1.0 - lam) * jnp.roll(x, 1, axis=0)
  return mix(images), mix(labels)


def split_microbatches(x: jax.Array, n: int) -> jax.Array:
  """[B, ...] -> [n, B/n, ...], micro-batch k = rows k, k+n, k+2n, ...

  Strided rather than contiguous, so that each device's contiguous shard of the batch holds
  an equal part of every micro-batch and the split moves no data between devices.
  """
  if x.shape[0] % n:
    raise ValueError(f'batch {x.shape[0]} is not divisible by accum_steps={n}.')
  return jnp.swapaxes(x.reshape(x.shape[0] // n, n, *x.shape[1:]), 0, 1)


def make_train_step(
  model: nn.Module,
  tx: optax.GradientTransformation,
  schedule: Callable[[jax.Array], jax.Array],
  *,
  num_classes: int,
  accum_steps: int = 1,
  label_smoothing: float = 0.0,
  mixup_alpha: float = 0.0,
  param_shardings: Any = None,
) -> Callable[..., Any]:
  """Returns train_step(state, batch) -> (state, metrics) for batches {'image', 'label'}.

  Images are uint8 [0, 255] or floats in [-1, 1] (see `layers.model_input`). The loss is the mean
  softmax cross-entropy over the whole batch; with accum_steps > 1 the batch is processed in
  micro-batches whose gradients are averaged (equal to the full-batch gradient) before a
  single update; the running gradient sum is laid out as the params (`param_shardings`, e.g.
  FSDP-sharded) rather than wherever XLA's propagation puts a fresh zeros tree.
  """

  def loss_fn(params, images, targets, labels, rng):
    logits = model.apply({'params': params}, images, train=True, rngs={'dropout': rng})
    logits = logits.astype(jnp.float32)
    loss = optax.softmax_cross_entropy(logits, targets).mean()
    correct = jnp.sum(jnp.argmax(logits, -1) == labels)
    return loss, correct

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def like_params(tree):
    if param_shardings is None:
      return tree
    return jax.lax.with_sharding_constraint(tree, param_shardings)

  def train_step(state: state_lib.TrainState, batch: Batch):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    mix_rng, drop_rng = jax.random.split(rng)
    images, labels = layers.model_input(batch['image']), batch['label']
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    if mixup_alpha:
      images, targets = mixup(mix_rng, images, targets, mixup_alpha)

    if accum_steps == 1:
      (loss, correct), grads = grad_fn(state.params, images, targets, labels, drop_rng)
    else:
      micro = [split_microbatches(x, accum_steps) for x in (images, targets, labels)]

      def body(carry, xs):
        grad_sum, loss_sum, correct_sum = carry
        i, im, tg, lb = xs
        (loss, correct), grads = grad_fn(state.params, im, tg, lb, jax.random.fold_in(drop_rng, i))
        grad_sum = like_params(
          jax.tree.map(lambda a, g: a + g.astype(jnp.float32), grad_sum, grads)
        )
        return (grad_sum, loss_sum + loss, correct_sum + correct), None

      zeros = like_params(jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params))
      init = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
      (grad_sum, loss_sum, correct), _ = jax.lax.scan(body, init, (jnp.arange(accum_steps), *micro))
      grads = jax.tree.map(lambda g, p: (g / accum_steps).astype(p.dtype), grad_sum, state.params)
      loss = loss_sum / accum_steps

    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
      'loss': loss,
      'accuracy': correct / labels.shape[0],
      'learning_rate': schedule(state.step),
      'grad_norm': optax.tree.norm(grads),
    }
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  return train_step


def make_eval_step(model: nn.Module, num_classes: int) -> Callable[..., dict[str, jax.Array]]:
  """Returns eval_step(params, batch) -> sums over the unmasked examples of the batch.

  batch: {'image' [B,H,W,3] (see `layers.model_input`), 'label' [B], 'mask' [B]} (mask 0 on padding
  rows). Output:
  {'correct_top1', 'correct_top5', 'loss', 'count'}: float32 sums, so that accuracy over a
  split is sum(correct) / sum(count) with every example counted exactly once.
  """
  top_k = min(5, num_classes)

  def eval_step(params, batch: Batch):
    logits = model.apply(
      {'params': params}, layers.model_input(batch['image']), train=False
    ).astype(jnp.float32)
    labels, mask = batch['label'], batch['mask'].astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    top1 = jnp.argmax(logits, -1) == labels
    # In the top k iff fewer than k classes score strictly higher than the true one.
    true_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    topk = jnp.sum(logits > true_logit, axis=-1) < top_k
    return {
      'correct_top1': jnp.sum(top1 * mask),
      'correct_top5': jnp.sum(topk * mask),
      'loss': jnp.sum(loss * mask),
      'count': jnp.sum(mask),
    }

  return eval_step
