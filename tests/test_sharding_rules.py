"""One resolver for parameters and activations, the size floor, presets by name, warnings."""

import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import pytest

from vit_jax.system import sharding
from vit_jax.train import config as config_lib

FSDP = config_lib.SHARDING_RULES['fsdp']
OUT_PROJ = ('heads', 'kv', 'embed')  # Attention out-projection kernel [heads, head_dim, D].


def _mesh(**axes):
  sizes = {'data': 1, 'fsdp': 1, 'model': 1, **axes}
  n = 1
  for v in sizes.values():
    n *= v
  return sharding.make_mesh(sizes, jax.devices()[:n])


def test_activations_resolve_like_parameters():
  """The issue's case: flax's rule-first resolver gives P(None, None, 'fsdp') here; ours gives
  the parameters' P('fsdp') to activations too."""
  mesh = _mesh(fsdp=4)
  spec = sharding.logical_to_spec(OUT_PROJ, (4, 8, 32), mesh, FSDP)
  assert spec == P('fsdp')
  with sharding.activate(mesh, FSDP):
    out = jax.jit(lambda x: sharding.constrain(x, OUT_PROJ) * 2)(jnp.ones((4, 8, 32)))
  assert out.sharding.is_equivalent_to(NamedSharding(mesh, spec), 3)
  with sharding.activate(mesh, FSDP):  # A dimension the axis does not divide: next one.
    out = jax.jit(lambda x: sharding.constrain(x, OUT_PROJ) * 2)(jnp.ones((3, 8, 32)))
  assert out.sharding.is_equivalent_to(NamedSharding(mesh, P(None, None, 'fsdp')), 3)
  x = jnp.ones((4, 8, 32))
  assert sharding.constrain(x, OUT_PROJ) is x  # Outside `activate`: untouched.


def test_replicating_an_undivided_dimension_warns_once(caplog, monkeypatch):
  # Each case is logged once per process: forget the cases earlier tests in this worker logged.
  monkeypatch.setattr(sharding, '_WARNED', set())
  mesh = _mesh(model=2)
  rules = config_lib.SHARDING_RULES['tp']
  with caplog.at_level(logging.WARNING):
    for _ in range(3):
      assert sharding.logical_to_spec(('embed', 'heads', 'kv'), (8, 3, 4), mesh, rules) == P()
  warnings = [
    r for r in caplog.records if 'Replicating dimension heads of size 3' in r.getMessage()
  ]
  assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def test_parameters_under_the_size_floor_stay_replicated():
  mesh = _mesh(fsdp=4)
  box = lambda shape, dtype=jnp.float32: nn.LogicallyPartitioned(
    jax.ShapeDtypeStruct(shape, dtype), ('embed', 'mlp')
  )
  tree = {
    'big': box((1024, 1024)),
    'small': box((512, 1024)),
    'big_bf16': box((1024, 1024), jnp.bfloat16),
    'step': jax.ShapeDtypeStruct((), jnp.int32),
  }
  specs = {k: s.spec for k, s in sharding.tree_shardings(tree, mesh, FSDP, 4.0).items()}
  # 4 MiB as float32 is sharded; 2 MiB is not; bfloat16 state follows its float32 param.
  assert specs == {'big': P('fsdp'), 'small': P(), 'big_bf16': P('fsdp'), 'step': P()}
  specs = {k: s.spec for k, s in sharding.tree_shardings(tree, mesh, FSDP).items()}
  assert specs['small'] == P('fsdp')  # No floor.


def test_sharding_rules_by_preset_name_or_literal():
  c = config_lib.base_config()
  assert config_lib.sharding_rules(c.sharding_rules) == config_lib.SHARDING_RULES['dp']
  c.sharding_rules = 'fsdp'  # What --config.sharding_rules=fsdp sets.
  assert config_lib.sharding_rules(c.sharding_rules) == FSDP
  c.sharding_rules = [['batch', ['data', 'fsdp']], ['mlp', 'model']]  # As JSON gives it back.
  assert config_lib.sharding_rules(c.sharding_rules) == (
    ('batch', ('data', 'fsdp')),
    ('mlp', 'model'),
  )
  with pytest.raises(ValueError, match=r"unknown preset 'fdsp'; use one of \['dp', 'fsdp'"):
    config_lib.sharding_rules('fdsp')
  with pytest.raises(ValueError, match='neither a preset name'):
    config_lib.sharding_rules(3)
