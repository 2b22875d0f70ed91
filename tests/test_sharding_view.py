"""sharding_view: the layout of each array and the bytes each device holds, real or abstract."""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from helpers import load_config
from vit_jax import models
from vit_jax.system import sharding
from vit_jax.system import sharding_view
from vit_jax.train import config as config_lib
from vit_jax.train import optim
from vit_jax.train import state as state_lib


def test_layouts_and_bytes_of_arrays():
  mesh = sharding.make_mesh({'a': 2, 'b': 4})
  x = np.arange(8 * 12, dtype=np.float32).reshape(8, 12)
  tree = {
    'replicated': jax.device_put(x, NamedSharding(mesh, P())),
    'rows': jax.device_put(x, NamedSharding(mesh, P(('a', 'b')))),
    'columns': jax.device_put(x.astype(jnp.bfloat16), NamedSharding(mesh, P(None, 'b'))),
    'host': x,  # not on the devices: skipped
    'count': 3,
  }
  rows = {l.path: l for l in sharding_view.layouts(tree)}
  assert set(rows) == {'replicated', 'rows', 'columns'}
  assert (rows['replicated'].shard_shape, rows['replicated'].copies) == ((8, 12), 8)
  assert (rows['rows'].shard_shape, rows['rows'].copies) == ((1, 12), 1)
  assert rows['rows'].spec == P(('a', 'b'))
  assert (rows['columns'].shard_shape, rows['columns'].copies) == ((8, 3), 2)
  assert rows['columns'].dtype == jnp.bfloat16

  per_device = sharding_view.bytes_per_device(tree)
  assert [d.id for d in per_device] == sorted(d.id for d in jax.devices())
  # replicated 8*12*4 + one row 12*4 + a quarter of the columns 8*3*2 bytes, on every device.
  assert set(per_device.values()) == {384 + 48 + 48}
  # The real shards add up to the same.
  for device, total in per_device.items():
    held = sum(
      s.data.nbytes
      for leaf in jax.tree.leaves(tree)
      if isinstance(leaf, jax.Array)
      for s in leaf.addressable_shards
      if s.device == device
    )
    assert held == total
  # Abstract arrays with shardings count the same, allocating nothing.
  abstract = jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
    {k: v for k, v in tree.items() if isinstance(v, jax.Array)},
  )
  assert sharding_view.bytes_per_device(abstract) == per_device


def test_fsdp_holds_an_eighth_of_what_dp_holds():
  config = load_config('default')
  model = models.get_model('testing', num_classes=8, hidden_size=64, mlp_dim=128)
  tx = optim.make_optimizer(config, optim.make_schedule(1e-3, 10, 1, 'cosine'))
  init = state_lib.init_fn(model, tx, (1, 16, 16, 3))
  totals = {}
  for name, mesh in (('dp', {'data': 8, 'fsdp': 1}), ('fsdp', {'data': 1, 'fsdp': 8})):
    mesh = sharding.make_mesh(mesh)
    abstract, _ = state_lib.abstract_state_and_shardings(
      init, mesh, config_lib.SHARDING_RULES[name]
    )
    totals[name] = sharding_view.bytes_per_device(abstract.params)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3))))
  size = sum(l.size * l.dtype.itemsize for l in jax.tree.leaves(params))
  assert set(totals['dp'].values()) == {size}
  # Every dimension the rules name is divisible by 8 here, except what stays replicated.
  assert sum(totals['fsdp'].values()) < 1.3 * size
  assert max(totals['fsdp'].values()) < size / 6
