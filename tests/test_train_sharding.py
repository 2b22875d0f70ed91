"""The same train step on 1 device and on 8 (simulated) devices under DP, FSDP and TP meshes.

Data parallelism, FSDP and tensor parallelism are configs of the same code; after several
steps (dropout and stochastic depth on) params must agree with the 1-device run.
"""

import jax
import numpy as np
import pytest

from vit_jax import models
from vit_jax.system import sharding
from vit_jax.train import config as config_lib
from vit_jax.train import optim
from vit_jax.train import state as state_lib
from vit_jax.train import step as step_lib

NUM_CLASSES, SIZE, BATCH, STEPS = 10, 16, 16, 3


def tiny_model():
  return models.VisionTransformer(
    num_classes=NUM_CLASSES,
    patch_size=(4, 4),
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    mlp_dim=64,
    classifier='token',
    representation_size=16,
    dropout_rate=0.1,
    stochastic_depth=0.1,
  )


def batches(seed=0):
  rng = np.random.default_rng(seed)
  return [
    {
      'image': rng.uniform(-1, 1, (BATCH, SIZE, SIZE, 3)).astype(np.float32),
      'label': rng.integers(0, NUM_CLASSES, BATCH).astype(np.int32),
    }
    for _ in range(STEPS)
  ]


def train(mesh_axes, rules, devices, accum_steps=1, momentum=0.9):
  """Runs STEPS steps; returns (host params, per-step losses, final state)."""
  c = config_lib.base_config()
  c.optim.momentum = momentum
  schedule = optim.make_schedule(0.05, 100, 2, 'cosine')
  tx = optim.make_optimizer(c, schedule)
  model = tiny_model()
  mesh = sharding.make_mesh(mesh_axes, devices)
  init = state_lib.init_fn(model, tx, (1, SIZE, SIZE, 3))
  _, shardings = state_lib.abstract_state_and_shardings(init, mesh, rules)
  batch_sharding = sharding.batch_sharding(mesh, rules)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  step = jax.jit(
    step_lib.make_train_step(model, tx, schedule, num_classes=NUM_CLASSES, accum_steps=accum_steps),
    in_shardings=(shardings, batch_sharding),
    out_shardings=(shardings, replicated),
    donate_argnums=0,
  )
  losses = []
  with sharding.activate(mesh, rules):
    state = state_lib.create_sharded(init, jax.random.key(0), shardings)
    for batch in batches():
      state, metrics = step(state, jax.device_put(batch, batch_sharding))
      losses.append(float(metrics['loss']))
  return jax.device_get(state.params), losses, state


@pytest.fixture(scope='module')
def single_device_run():
  return train(
    {'data': 1, 'fsdp': 1, 'model': 1}, config_lib.SHARDING_RULES['dp'], jax.devices()[:1]
  )


def assert_params_close(a, b, rtol=1e-5):
  """Each leaf within rtol of its own scale (+1e-9 for leaves whose true gradient is 0, like
  attention key biases, where only float noise moves them); returns the global relative
  L2 difference."""
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    err, scale = np.abs(x - y).max(), np.abs(y).max()
    assert err <= rtol * scale + 1e-9, f'{jax.tree_util.keystr(path)}: {err} vs scale {scale}'
  flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)]).astype(np.float64)
  return np.linalg.norm(flat(a) - flat(b)) / np.linalg.norm(flat(b))


@pytest.mark.parametrize(
  'mesh_axes,rules',
  [
    ({'data': 8, 'fsdp': 1, 'model': 1}, 'dp'),
    ({'data': 2, 'fsdp': 4, 'model': 1}, 'fsdp'),
    ({'data': 2, 'fsdp': 2, 'model': 2}, 'fsdp_tp'),
    ({'data': 2, 'fsdp': 1, 'model': 4}, 'tp'),
  ],
)
def test_params_match_single_device(single_device_run, mesh_axes, rules):
  assert jax.device_count() == 8
  params, losses, state = train(mesh_axes, config_lib.SHARDING_RULES[rules], jax.devices())
  ref_params, ref_losses, _ = single_device_run
  error = assert_params_close(params, ref_params)
  print(f'{mesh_axes} {rules}: relative L2 param difference vs 1 device {error:.2e}')
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  assert losses[-1] != losses[0]  # the steps did something.

  # The state really is laid out as the rules say.
  query = state.params['Transformer']['encoderblock_0']['MultiHeadDotProductAttention_1']['query'][
    'kernel'
  ]  # [embed 32, heads 4, kv 8]
  mlp = state.params['Transformer']['encoderblock_0']['MlpBlock_3']['Dense_0']['kernel']
  local = lambda x: x.addressable_shards[0].data.shape
  if rules == 'dp':
    assert local(query) == (32, 4, 8) and local(mlp) == (32, 64)
  elif rules == 'fsdp':
    assert local(query) == (8, 4, 8) and local(mlp) == (8, 64)
  elif rules == 'fsdp_tp':
    assert local(query) == (16, 2, 8) and local(mlp) == (16, 32)
  else:
    assert local(query) == (32, 1, 8) and local(mlp) == (32, 16)
  # Optimizer state (momentum) is sharded like the params.
  trace = jax.tree.leaves(state.opt_state)
  assert any(t.shape == mlp.shape and local(t) == local(mlp) for t in trace)


def test_gradient_accumulation_equals_full_batch():
  no_dropout = lambda: models.VisionTransformer(
    num_classes=NUM_CLASSES,
    patch_size=(4, 4),
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    mlp_dim=64,
  )
  rules = config_lib.SHARDING_RULES['dp']
  results = {}
  one, eight = {'data': 1, 'fsdp': 1, 'model': 1}, {'data': 8, 'fsdp': 1, 'model': 1}
  for accum, mesh_axes, devices in [
    (1, one, jax.devices()[:1]),
    (4, one, jax.devices()[:1]),
    (2, eight, jax.devices()),
  ]:
    global tiny_model
    saved, tiny_model = tiny_model, no_dropout
    try:
      results[(accum, len(devices))] = train(
        mesh_axes, rules, devices, accum_steps=accum, momentum=0.0
      )
    finally:
      tiny_model = saved
  full_params, full_losses, _ = results[(1, 1)]
  for key in [(4, 1), (2, 8)]:
    params, losses, _ = results[key]
    error = assert_params_close(params, full_params)
    print(f'accum_steps={key[0]} on {key[1]} device(s): relative L2 difference {error:.2e}')
    np.testing.assert_allclose(losses, full_losses, rtol=1e-5)


def test_microbatch_split_is_strided_and_complete():
  x = np.arange(12)
  micro = np.asarray(step_lib.split_microbatches(x, 3))
  np.testing.assert_array_equal(micro, [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]])
  with pytest.raises(ValueError, match='not divisible by accum_steps=5'):
    step_lib.split_microbatches(x, 5)


def test_logical_to_spec_never_shards_unevenly():
  mesh = sharding.make_mesh({'data': 2, 'model': 4})
  rules = (('heads', 'model'), ('mlp', 'model'), ('embed', 'data'))
  P = jax.sharding.PartitionSpec
  assert sharding.logical_to_spec(('embed', 'heads', 'kv'), (8, 3, 4), mesh, rules) == P('data')
  assert sharding.logical_to_spec(('embed', 'mlp'), (8, 16), mesh, rules) == P('data', 'model')
  # A mesh axis is used once per array; a later rule for the same name is the fallback.
  rules = (('embed', 'model'), ('mlp', 'model'), ('mlp', 'data'))
  assert sharding.logical_to_spec(('embed', 'mlp'), (8, 16), mesh, rules) == P('model', 'data')


@pytest.mark.parametrize(
  'axes,message',
  [
    ({'data': 3, 'model': 2}, 'sizes multiply to 6 but there are 8 devices'),
    ({'data': -1, 'model': 3}, '8 devices are not divisible by the fixed axis sizes'),
    ({'data': -1, 'model': -1}, 'at most one -1'),
  ],
)
def test_bad_meshes(axes, message):
  with pytest.raises(ValueError, match=message):
    sharding.make_mesh(axes)
