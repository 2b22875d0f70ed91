"""Learning-rate schedule values and optimizer construction."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vit_jax.train import config as config_lib
from vit_jax.train import optim


@pytest.mark.parametrize(
  'decay,step,expected',
  [
    ('cosine', 0, 0.1 / 10),  # first update: not zero.
    ('cosine', 4, 0.1 * 5 / 10),
    ('cosine', 9, 0.1),  # last warm-up step reaches base_lr.
    ('cosine', 10, 0.1),  # decay starts at base_lr...
    ('cosine', 60, 0.1 * 0.5 * (1 + np.cos(np.pi * 0.5))),  # ...half-way: half.
    ('cosine', 109, 0.1 * 0.5 * (1 + np.cos(np.pi * 99 / 100))),  # last update: > 0.
    ('linear', 35, 0.1 * (1 - 25 / 100)),
    ('linear', 109, 0.1 * (1 - 99 / 100)),
    ('constant', 80, 0.1),
  ],
)
def test_schedule_values(decay, step, expected):
  schedule = optim.make_schedule(0.1, total_steps=110, warmup_steps=10, decay_type=decay)
  # float32: 1 + cos(pi p) and 1 - p cancel (1 + cos(0.99 pi) = 4.9e-4), so their error is
  # absolute: p to ~1 ulp of 1 (2**-23) and XLA's float32 cos (a polynomial, not correctly
  # rounded; a few ulps on any CPU) to <= 20 ulps, times base_lr / 2 = 0.05: abs 2**-23; plus a
  # few relative roundings (products, warm-up division): rel 2 * 2**-23.
  assert float(schedule(step)) == pytest.approx(expected, rel=2 * 2**-23, abs=2**-23)


def test_no_warmup_starts_at_base_lr_and_never_reaches_zero():
  schedule = optim.make_schedule(0.5, total_steps=4, warmup_steps=0, decay_type='cosine')
  values = [float(schedule(s)) for s in range(4)]
  assert values[0] == pytest.approx(0.5, rel=2 * 2**-23)  # as in test_schedule_values.
  assert all(v > 0 for v in values) and values == sorted(values, reverse=True)


@pytest.mark.parametrize(
  'kwargs,message',
  [
    (dict(decay_type='exp'), "decay_type 'exp' is unknown"),
    (dict(warmup_steps=100), 'warmup_steps=100 must be >= 0 and < total_steps=100'),
  ],
)
def test_schedule_errors(kwargs, message):
  args = dict(base_lr=0.1, total_steps=100, warmup_steps=10, decay_type='cosine')
  with pytest.raises(ValueError, match=message):
    optim.make_schedule(**{**args, **kwargs})


def _config(**optim_fields):
  c = config_lib.base_config()
  c.base_lr = 0.1
  for k, v in optim_fields.items():
    c.optim[k] = v
  return c


def test_sgd_first_update_uses_first_lr():
  c = _config(name='sgd', momentum=0.9)
  schedule = optim.make_schedule(0.1, 100, 10, 'cosine')
  tx = optim.make_optimizer(c, schedule)
  params = {'w': jnp.ones(3)}
  grads = {'w': jnp.array([0.1, 0.2, -0.3])}  # global norm < 1: no clipping.
  updates, _ = tx.update(grads, tx.init(params), params)
  # float32: lr = 0.1 * 1 / 10 and lr * g on one side, fl(0.01) * g on the other: <= 5
  # roundings of 2**-24, 2.5 eps = 3e-7 worst case. 5e-7.
  np.testing.assert_allclose(updates['w'], -0.01 * grads['w'], rtol=5e-7)


def test_adamw_decays_kernels_only_and_independently_of_base_lr():
  for base_lr in (0.1, 0.01):
    c = _config(name='adamw', weight_decay=1e-2)
    c.base_lr = base_lr
    c.grad_norm_clip = 0.0
    schedule = optim.make_schedule(base_lr, 100, 0, 'constant')
    tx = optim.make_optimizer(c, schedule)
    params = {'dense': {'kernel': jnp.full((2, 2), 3.0), 'bias': jnp.full(2, 3.0)}}
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    # Zero gradients: only decay moves params, by wd * lr(t)/base_lr * p = 1e-2 * 3. float32:
    # lr(t) / base_lr, wd and lr products, ~5 roundings of 2**-24: 2.5 eps = 3e-7. 5e-7.
    np.testing.assert_allclose(updates['dense']['kernel'], -0.03, rtol=5e-7)
    np.testing.assert_array_equal(updates['dense']['bias'], 0.0)


def test_momentum_dtype_and_unknown_optimizer():
  c = _config(name='sgd', momentum=0.9, momentum_dtype='bfloat16')
  tx = optim.make_optimizer(c, optim.make_schedule(0.1, 10, 1, 'cosine'))
  state = tx.init({'w': jnp.ones(3)})
  traces = [s for s in jax.tree.leaves(state) if getattr(s, 'dtype', None) == jnp.bfloat16]
  assert len(traces) == 1
  with pytest.raises(ValueError, match="optim.name 'lamb' is unknown"):
    optim.make_optimizer(_config(name='lamb'), optim.make_schedule(0.1, 10, 1, 'cosine'))


def test_clipping_by_global_norm():
  c = _config(name='sgd', momentum=0.0)
  tx = optim.make_optimizer(c, optim.make_schedule(1.0, 10, 0, 'constant'))
  grads = {'a': jnp.array([3.0, 4.0])}  # norm 5 -> clipped to 1.
  updates, _ = tx.update(grads, tx.init(grads), grads)
  # float32: the norm 5 is exact; 1 / 5 (or max_norm / norm), the products and 0.6, 0.8
  # themselves round: <= 4 roundings of 2**-24, 2 eps = 2.4e-7. 5e-7.
  np.testing.assert_allclose(updates['a'], [-0.6, -0.8], rtol=5e-7)
  assert isinstance(tx, optax.GradientTransformation)
