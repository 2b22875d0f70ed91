"""Loop <-> scan block layouts at the checkpoint boundary: exact conversions, released `.npz`
files into and out of scanned models, Orbax train states restored into the other layout."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from vit_jax import models
from vit_jax.models import layouts
from vit_jax.run import orbax_io
from vit_jax.system import sharding
from vit_jax.train import config as config_lib
from vit_jax.train import optim
from vit_jax.train import state as state_lib
from vit_jax.train import step as step_lib
from vit_jax.weights import fit
from vit_jax.weights import released as released_lib
from vit_jax.weights import tree as tree_lib

TINY = dict(num_classes=4, patch_size=(8, 8), hidden_size=12, num_layers=3, num_heads=3, mlp_dim=16)
KERNEL = ('MlpBlock_3', 'Dense_0', 'kernel')


def vit(**kw):
  return models.VisionTransformer(**{**TINY, **kw})


def shapes(model, size=32):
  variables = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, size, size, 3)))
  return nn.meta.unbox(variables['params'])


def randomized(tree, seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: rng.normal(size=x.shape).astype(x.dtype), tree)


def zeros(tree):
  return jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), tree)


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(x, y)


def block(tree, i=None):
  blocks = tree['Transformer']
  node = blocks['encoderblock'] if i is None else blocks[f'encoderblock_{i}']
  for key in KERNEL:
    node = node[key]
  return node


def test_loop_scan_loop_round_trip_is_bit_exact():
  loop = randomized(shapes(vit()))
  scan = layouts.to_scan(loop)
  # Exactly the tree a scan=True model has.
  target = shapes(vit(scan=True))
  assert jax.tree.structure(scan) == jax.tree.structure(target)
  assert [x.shape for x in jax.tree.leaves(scan)] == [x.shape for x in jax.tree.leaves(target)]
  for i in range(3):
    np.testing.assert_array_equal(block(scan)[i], block(loop, i))
  assert_trees_equal(layouts.to_loop(scan), loop)
  assert (layouts.layout_of(loop), layouts.layout_of(scan)) == ('loop', 'scan')
  assert_trees_equal(layouts.to_scan(scan), scan)  # already there: unchanged.
  mixer = shapes(
    models.get_model(
      'Mixer-B_32', num_classes=2, num_blocks=2, hidden_dim=8, tokens_mlp_dim=4, channels_mlp_dim=4
    )
  )
  assert layouts.layout_of(mixer) is None and layouts.to_scan(mixer) == mixer
  with pytest.raises(ValueError, match=r'encoder blocks \[0, 2\] are not numbered 0..1'):
    layouts.to_scan({'Transformer': {'encoderblock_0': {}, 'encoderblock_2': {}}})


def test_npz_save_from_scan_model_is_released_layout_and_loads_back(tmp_path):
  loop = randomized(shapes(vit(representation_size=5)))
  scan = layouts.to_scan(loop)
  released_lib.save(tmp_path / 'scan.npz', scan)
  with np.load(tmp_path / 'scan.npz') as npz:
    keys = set(npz.files)
    np.testing.assert_array_equal(
      npz['Transformer/encoderblock_2/MlpBlock_3/Dense_0/kernel'], block(loop, 2)
    )
  assert keys == set(tree_lib.flatten(loop))  # released keys only, no stacked ones.
  assert_trees_equal(released_lib.load(tmp_path / 'scan.npz'), loop)
  assert_trees_equal(released_lib.load(tmp_path / 'scan.npz', layout='scan'), scan)
  # A file written from a scanned model with Linen numbering (as big_vision writes) loads too.
  flat = {k.replace('MlpBlock_3', 'MlpBlock_0'): v for k, v in tree_lib.flatten(scan).items()}
  np.savez(tmp_path / 'bv.npz', **flat)
  assert_trees_equal(released_lib.load(tmp_path / 'bv.npz'), loop)


def test_load_pretrained_from_released_file_into_scan_model(tmp_path):
  # Relative position tables and position embeddings are resampled per layer (32 -> 48 px).
  kw = dict(posemb='relative_bias', representation_size=5)
  released = randomized(shapes(vit(**kw)))
  released_lib.save(tmp_path / 'pre.npz', released)
  loop_init, scan_init = shapes(vit(**kw), 48), shapes(vit(scan=True, **kw), 48)
  expected = fit.load_pretrained(tmp_path / 'pre.npz', zeros(loop_init))
  got = fit.load_pretrained(tmp_path / 'pre.npz', zeros(scan_init))
  table = ('MultiHeadDotProductAttention_1', 'relative_position_bias')
  assert got['Transformer']['encoderblock'][table[0]][table[1]].shape == (3, 11 * 11 + 3, 3)
  assert_trees_equal(got, layouts.to_scan(expected))
  # Strict inference loading (keep_head), and params of a scanned run into a loop model.
  strict = fit.load_pretrained(
    tmp_path / 'pre.npz', zeros(shapes(vit(scan=True, **kw))), keep_head=True
  )
  assert_trees_equal(strict, layouts.to_scan(released))
  assert_trees_equal(
    fit.load_pretrained(layouts.to_scan(released), zeros(shapes(vit(**kw))), keep_head=True),
    released,
  )


RULES = config_lib.SHARDING_RULES['fsdp']
IMAGES = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
LABELS = np.arange(8) % 4


class Setup:
  """Model, optimizer, shardings and a jitted train step of one layout on one mesh."""

  def __init__(self, scan, mesh_axes, devices):
    c = config_lib.base_config()
    schedule = optim.make_schedule(0.05, 100, 1, 'cosine')
    self.tx = optim.make_optimizer(c, schedule)
    self.model = vit(scan=scan)
    self.mesh = sharding.make_mesh(mesh_axes, devices)
    init = state_lib.init_fn(self.model, self.tx, (1, 32, 32, 3))
    self.abstract, self.shardings = state_lib.abstract_state_and_shardings(init, self.mesh, RULES)
    self.step = jax.jit(
      step_lib.make_train_step(self.model, self.tx, schedule, num_classes=4),
      out_shardings=(self.shardings, None),
    )

  def fresh_state(self, seed=0):
    """Random floats (params and optimizer moments), zero counters; drawn in the loop layout
    (so both layouts start equal), converted and placed (no init to compile)."""
    init = state_lib.init_fn(vit(), self.tx, (1, 32, 32, 3))
    abstract = nn.meta.unbox(jax.eval_shape(init, jax.random.key(0)))
    rng = np.random.default_rng(seed)
    state = jax.tree.map(
      lambda x: (
        (0.1 * rng.normal(size=x.shape)).astype(x.dtype)
        if x.dtype == np.float32
        else np.zeros(x.shape, x.dtype)
      ),
      abstract,
    )
    layout = layouts.SCAN if self.model.scan else layouts.LOOP
    return jax.device_put(layouts.convert(state, layout), self.shardings)

  def train(self, state, steps):
    with sharding.activate(self.mesh, RULES):
      for _ in range(steps):
        state, _ = self.step(state, {'image': IMAGES, 'label': LABELS})
    return state


def save(state, workdir):
  io = orbax_io.CheckpointIO(str(workdir))
  io.save(state, {'position': 1})
  io.close()


def restore(workdir, abstract):
  io = orbax_io.CheckpointIO(str(workdir))
  state, data = io.restore(abstract)
  io.close()
  assert data == {'position': 1}
  return state


ONE = ({'data': 1, 'fsdp': 1, 'model': 1}, jax.devices()[:1])
FSDP4 = ({'data': 1, 'fsdp': 4, 'model': 1}, jax.devices()[:4])


@pytest.mark.parametrize('saved_scan', [False, True])
def test_orbax_state_restores_exactly_into_the_other_layout(tmp_path, saved_scan):
  saver, loader = Setup(saved_scan, *FSDP4), Setup(not saved_scan, *ONE)
  state = saver.fresh_state()  # optimizer moments non-zero: their conversion is checked too.
  save(state, tmp_path)
  restored = restore(tmp_path, loader.abstract)
  expected = layouts.convert(jax.device_get(state), layouts.SCAN if not saved_scan else 'loop')
  assert_trees_equal(jax.device_get(restored), expected)
  assert jax.tree.map(lambda x: x.sharding, restored) == loader.shardings
  # Fine-tuning from that run's workdir (pretrained_path) into the other layout.
  params = orbax_io.load_params(str(tmp_path))
  assert layouts.layout_of(params) == ('scan' if saved_scan else 'loop')
  loaded = fit.load_pretrained(params, zeros(loader.abstract.params), keep_head=True)
  assert_trees_equal(loaded, expected.params)


def test_training_resumed_in_the_other_layout_continues_like_the_unswitched_run(tmp_path):
  looped, scanned = Setup(False, *ONE), Setup(True, *FSDP4)
  reference = jax.device_get(looped.train(looped.fresh_state(), 2))
  save(looped.train(looped.fresh_state(), 1), tmp_path)
  resumed = scanned.train(restore(tmp_path, scanned.abstract), 1)
  kernel = resumed.params['Transformer']['encoderblock']['MlpBlock_3']['Dense_0']['kernel']
  assert kernel.addressable_shards[0].data.shape == (3, 3, 16)  # [layers, embed / 4, mlp].
  resumed = layouts.to_loop(jax.device_get(resumed))
  assert int(resumed.step) == 2
  # Step 2 runs in another float32 program (scan, FSDP over 4 devices: the batch's gradient
  # sums split and reduced across them). SGD is linear in the gradient, so each leaf (the
  # momentum holds the gradient; params move by lr times it) is off by the gradient's error:
  # forward and backward, reductions of <= 192 terms (patch embedding; 136 over batch and
  # tokens) over 3 blocks, ~sqrt(192)*6*eps*sqrt(2) = 1.4e-5 of the leaf's scale typical,
  # worst ~1e-3. 5e-5 of max |want| per leaf.
  for got, want in zip(
    jax.tree.leaves((resumed.params, resumed.opt_state)),
    jax.tree.leaves((reference.params, reference.opt_state)),
  ):
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-5 * np.abs(want).max())
  moved = max(
    np.abs(a - b).max()
    for a, b in zip(
      jax.tree.leaves(reference.params),
      jax.tree.leaves(jax.device_get(looped.fresh_state().params)),
    )
  )
  assert moved > 1e-3  # the two steps did something.
