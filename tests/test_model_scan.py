"""Scan over layers and rematerialisation compute the same function as the plain loop.

The scanned model gets the loop model's params converted (vit_jax.models.layouts), so any
difference in logits or gradients is the model's. Train-mode randomness cannot be compared
draw for draw (the loop folds each block's name into the dropout RNG, the scan splits it per
layer), so stochastic depth is checked at rates 0 and 1 (deterministic) and dropout by its
statistics. FLOPs of a scanned train step must count every layer.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import load_config
from vit_jax import models
from vit_jax.models import layouts
from vit_jax.system import sharding
from vit_jax.train import config as config_lib
from vit_jax.train import loop
from vit_jax.train import setup_run
from vit_jax.train import throughput

TINY = dict(num_classes=5, patch_size=(4, 4), hidden_size=16, num_layers=3, num_heads=2, mlp_dim=24)
IMAGES = np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)
LABELS = np.array([0, 1, 2, 3])


def tiny(**kw):
  return models.VisionTransformer(**{**TINY, **kw})


def random_params(model, seed=0):
  """Loop-layout params with non-trivial values everywhere (the zero-init head included)."""
  shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), IMAGES)['params'])
  leaves, tree = jax.tree.flatten(shapes)
  rng = np.random.default_rng(seed)
  return jax.tree.unflatten(tree, [rng.normal(0, 0.3, x.shape).astype(np.float32) for x in leaves])


def logits_and_grads(model, params, train=False, rng=None):
  def loss(p):
    logits = model.apply(
      {'params': p}, IMAGES, train=train, rngs={'dropout': rng} if rng is not None else None
    )
    return jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), LABELS]), logits

  (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return np.asarray(logits), grads


def max_diff(a, b):
  return max(
    float(np.abs(np.asarray(x) - np.asarray(y)).max())
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


@pytest.mark.parametrize(
  'kw',
  [
    dict(classifier='token', posemb='learn', representation_size=6),
    dict(classifier='map', posemb='relative_bias'),
  ],
)
def test_scan_equals_loop_logits_and_grads(kw):
  params = random_params(tiny(**kw))
  logits, grads = logits_and_grads(tiny(**kw), params)
  scan_params = layouts.to_scan(params)
  block = scan_params['Transformer']['encoderblock']['MlpBlock_3']['Dense_0']['kernel']
  assert block.shape == (3, 16, 24)
  scan_logits, scan_grads = logits_and_grads(tiny(scan=True, **kw), scan_params)
  assert np.abs(logits).max() > 0.1  # a real function of the params, not the zero head.
  # Two float32 programs (the scan body is compiled on its own): reductions of <= 48 terms
  # (patch embedding; 24 MLP, 17 tokens) over 3 blocks, ~sqrt(48)*3*eps*sqrt(2) = 3.5e-6 of the
  # logits' scale typical, worst ~2e-4. 1e-5 of max |logits|.
  np.testing.assert_allclose(scan_logits, logits, rtol=0, atol=1e-5 * np.abs(logits).max())
  scan_grads = layouts.to_loop(scan_grads)
  assert jax.tree.structure(scan_grads) == jax.tree.structure(grads)
  # Forward and backward: twice the depth, ~sqrt(48)*6*eps*sqrt(2) = 7e-6 of the largest
  # gradient typical, worst ~5e-4. 2e-5.
  assert max_diff(scan_grads, grads) < 2e-5 * max(np.abs(g).max() for g in jax.tree.leaves(grads))


def test_remat_policies_give_the_same_gradients():
  params = random_params(tiny())
  _, reference = logits_and_grads(tiny(), params)
  scale = max(np.abs(g).max() for g in jax.tree.leaves(reference))
  for scan, policy in [
    (False, 'dots_saveable'),
    (True, 'nothing_saveable'),
    (True, 'dots_with_no_batch_dims_saveable'),
  ]:
    _, grads = logits_and_grads(
      tiny(scan=scan, remat_policy=policy), layouts.to_scan(params) if scan else params
    )
    # Rematerialised (and scanned) gradients are other float32 programs: as in
    # test_scan_equals_loop_logits_and_grads, ~7e-6 of the largest gradient typical. 2e-5.
    assert max_diff(layouts.to_loop(grads), reference) < 2e-5 * scale, (scan, policy)


def test_unknown_remat_policy_is_one_clear_line(tmp_path):
  with pytest.raises(ValueError, match=r"unknown remat_policy 'dots'; choose one of \('none', "):
    jax.eval_shape(tiny(remat_policy='dots').init, jax.random.key(0), IMAGES)
  config = load_config('default', model__remat_policy='dots', model__scan=True)
  with pytest.raises(
    setup_run.ConfigError,
    match=r"^config.model.remat_policy='dots'; use one "
    r"of \('none', 'nothing_saveable', 'dots_saveable', "
    r"'dots_with_no_batch_dims_saveable'\)\.$",
  ):
    setup_run.build(config, str(tmp_path))


def test_stochastic_depth_rates_grow_linearly_over_scanned_layers():
  # Two layers with stochastic_depth=1: rates 0 and 1, so layer 0 is always kept and layer 1
  # always dropped; train mode is then deterministic and equals a 1-layer model in eval mode.
  kw = dict(TINY, num_layers=2, stochastic_depth=1.0, classifier='gap')
  params = random_params(tiny(**kw))
  run = lambda model, p, train: jax.jit(functools.partial(model.apply, train=train))(
    {'params': p}, IMAGES, rngs={'dropout': jax.random.key(7)}
  )
  loop_out = run(tiny(**kw), params, True)
  scan_out = run(tiny(**{**kw, 'scan': True}), layouts.to_scan(params), True)
  one_layer = dict(
    params, Transformer={k: v for k, v in params['Transformer'].items() if k != 'encoderblock_1'}
  )
  expected = run(tiny(**{**kw, 'num_layers': 1}), one_layer, False)
  # The same function in other float32 programs (train mode, drop path, scan): reductions of
  # <= 48 terms over 1 block that counts, ~sqrt(48)*eps*sqrt(2) = 1.2e-6 of the outputs'
  # scale (x ~2 through the softmax) typical, worst ~5e-5. 1e-5 of max |expected|.
  scale = np.abs(expected).max()
  np.testing.assert_allclose(loop_out, expected, rtol=0, atol=1e-5 * scale)
  np.testing.assert_allclose(scan_out, expected, rtol=0, atol=1e-5 * scale)
  assert np.abs(run(tiny(**kw), params, False) - expected).max() > 1e-3


def mask_fn(model):
  """seed -> per layer, the zero pattern of the MLP's hidden dropout [layers, B, T, mlp]
  (GELU is never exactly 0, so zeros are dropped units)."""
  apply = jax.jit(
    functools.partial(
      model.apply,
      train=True,
      mutable=['intermediates'],
      capture_intermediates=lambda m, _: isinstance(m, nn.Dropout),
    )
  )

  def masks(params, seed):
    _, state = apply({'params': params}, IMAGES, rngs={'dropout': jax.random.key(seed)})
    blocks = layouts.to_loop(state['intermediates'])['Transformer']
    return np.stack(
      [
        np.asarray(blocks[f'encoderblock_{i}']['MlpBlock_3']['Dropout_0']['__call__'][0]) == 0
        for i in range(TINY['num_layers'])
      ]
    )

  return masks


def test_scanned_dropout_is_reproducible_and_independent_per_layer():
  params = random_params(tiny())
  for scan in (False, True):
    masks_of = mask_fn(tiny(dropout_rate=0.3, scan=scan))
    p = layouts.to_scan(params) if scan else params
    masks = masks_of(p, 1)
    np.testing.assert_array_equal(masks, masks_of(p, 1))
    assert (masks != masks_of(p, 2)).mean() > 0.3
    # Each layer drops ~30% (4 x 17 x 24 = 1,632 units per layer: 4 sigma is 4.5%) ...
    np.testing.assert_allclose(masks.mean(axis=(1, 2, 3)), 0.3, atol=0.045)
    # ... independently of the others: two layers agree on 0.7^2 + 0.3^2 = 58% of units
    # (a mask shared by all layers would agree on 100%).
    for i, j in [(0, 1), (1, 2), (0, 2)]:
      assert abs((masks[i] == masks[j]).mean() - 0.58) < 0.05, (scan, i, j)


def test_scanned_params_have_a_layers_axis_that_stays_unsharded():
  boxed = jax.eval_shape(tiny(scan=True).init, jax.random.key(0), IMAGES)['params']
  kernel = boxed['Transformer']['encoderblock']['MlpBlock_3']['Dense_0']['kernel']
  assert kernel.names == ('layers', 'embed', 'mlp')
  mesh = sharding.make_mesh({'data': 2, 'fsdp': 4, 'model': 1})
  rules = config_lib.SHARDING_RULES['fsdp']
  assert sharding.logical_to_spec(kernel.names, kernel.value.shape, mesh, rules) == (
    jax.sharding.PartitionSpec(None, 'fsdp')
  )


class Recorder:
  """The metric writer's interface, keeping what the loop writes."""

  def __init__(self):
    self.scalars, self.lines = {}, []

  def write_scalars(self, step, values):
    self.scalars.update(values)

  def log(self, line):
    self.lines.append(line)


def test_logged_flops_of_a_scanned_run_count_every_layer(tmp_path, digits_data_dir):
  # The loop's own code path, from the config, on 8 devices (data parallel). Width 128: the
  # missing layers are counted on uncompiled HLO, whose elementwise ops XLA's fusion changes a
  # little, so the count is within 1% once matmuls dominate (as in real models; ViT-L: 0.2%).
  flops, xla_only = {}, {}
  for scan in (False, True):
    config = load_config(
      'default',
      data_dir=digits_data_dir,
      model__scan=scan,
      model__hidden_size=128,
      model__mlp_dim=512,
    )
    run = setup_run.build(config, str(tmp_path / str(scan)))
    assert layouts.layout_of(run.abstract_state.params) == ('scan' if scan else 'loop')
    batch = {
      'image': jax.ShapeDtypeStruct((128, 16, 16, 3), jnp.float32, sharding=run.batch_sharding),
      'label': jax.ShapeDtypeStruct((128,), jnp.int32, sharding=run.batch_sharding),
    }
    writer = Recorder()
    with sharding.activate(run.mesh, run.rules):
      train_step, _ = loop.jit_steps(run)
      compiled, flops[scan], _ = loop._compile_train_step(
        run, train_step, run.abstract_state, batch, writer, 0
      )
    assert writer.scalars['train/step_flops_per_device'] == flops[scan]
    assert ('(scanned layers: all 4 counted, XLA counts one)' in writer.lines[0]) == scan
    xla_only[scan] = throughput.step_flops_per_device(compiled)
  assert xla_only[True] < 0.5 * xla_only[False]  # XLA alone counts one scanned layer of 4.
  assert flops[False] == xla_only[False]
  print(
    f'FLOPs per device: loop {flops[False]:.4g}, scan {flops[True]:.4g} (XLA alone '
    f'{xla_only[True]:.4g}); scan / loop - 1 = {flops[True] / flops[False] - 1:+.2%}'
  )
  assert flops[True] == pytest.approx(flops[False], rel=0.01)
