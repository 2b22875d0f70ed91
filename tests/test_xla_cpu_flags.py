"""XLA:CPU flags chosen per dtype and CPU (`vit_jax.system.xla_cpu_flags`): the rules, the
user's XLA_FLAGS winning, flags the installed jaxlib does not know never passed, and each rule's
flags leaving the numbers where they were."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vit_jax.system import xla_cpu_flags

AMX = frozenset({'avx512f', 'avx512_bf16', 'amx_tile', 'amx_bf16', 'amx_int8'})
NO_AMX = frozenset({'avx2', 'avx512f', 'avx512_bf16', 'avx512_vnni'})
ZEN3 = frozenset({'avx2', 'fma'})


def test_onednn_dots_only_for_bfloat16_on_amx_and_never_beside_float32():
  assert xla_cpu_flags.choose(['bfloat16'], AMX) == xla_cpu_flags.ONEDNN_DOTS
  assert xla_cpu_flags.choose(['float32'], AMX) == ()
  # A process that also runs float32 programs (where these flags crash on AMX) gets none.
  assert xla_cpu_flags.choose(['float32', 'bfloat16'], AMX) == ()
  for isa in (NO_AMX, ZEN3, frozenset()):
    assert xla_cpu_flags.choose(['bfloat16'], isa) == ()
    assert xla_cpu_flags.choose(['float32'], isa) == ()


def test_cpu_isa_reads_the_first_processor_flags():
  text = (
    'processor\t: 0\nmodel name\t: X\nflags\t\t: avx2 amx_bf16\n\nprocessor\t: 1\nflags : sse\n'
  )
  assert xla_cpu_flags.cpu_isa(text) == {'avx2', 'amx_bf16'}
  assert xla_cpu_flags.cpu_isa('') == frozenset()


def test_apply_adds_flags_unless_the_user_chose_or_jaxlib_does_not_know_them(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
  assert xla_cpu_flags.apply(['bfloat16'], AMX) == xla_cpu_flags.ONEDNN_DOTS
  assert os.environ['XLA_FLAGS'].split() == [
    '--xla_force_host_platform_device_count=2',
    *xla_cpu_flags.ONEDNN_DOTS,
  ]
  assert xla_cpu_flags.apply(['float32'], AMX) == ()  # nothing for float32.
  # The user's own choice of matmul library wins.
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_experimental_ynn_fusion_type=')
  assert xla_cpu_flags.user_decides()
  assert xla_cpu_flags.apply(['bfloat16'], AMX) == ()
  assert os.environ['XLA_FLAGS'] == '--xla_cpu_experimental_ynn_fusion_type='
  # XLA aborts on an unknown flag: one this jaxlib does not name is never passed.
  monkeypatch.setenv('XLA_FLAGS', '')
  bogus = xla_cpu_flags.Rule('amx_bf16', 'bfloat16', ('--xla_cpu_no_such_flag=1',), 'test')
  monkeypatch.setattr(xla_cpu_flags, 'RULES', (bogus,))
  assert xla_cpu_flags.apply(['bfloat16'], AMX) == ()
  assert os.environ['XLA_FLAGS'] == ''


def test_the_installed_jaxlib_knows_every_flag_of_the_rules():
  for rule in xla_cpu_flags.RULES:
    assert all(xla_cpu_flags.known_to_jaxlib(f) for f in rule.flags), rule
  assert xla_cpu_flags.known_to_jaxlib('--xla_cpu_experimental_ynn_fusion_type=')
  assert not xla_cpu_flags.known_to_jaxlib('--xla_cpu_no_such_flag=1')


# A tiny ViT (2 layers, 3 heads) forward and its gradient, in the dtypes given, printed as JSON.
_NUMBERS = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
from vit_jax import models
out = {}
x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)), jnp.float32)
for dtype in sys.argv[1].split(','):
  model = models.get_model('testing', num_classes=10, dtype=jnp.dtype(dtype))
  params = model.init(jax.random.key(0), x)['params']
  params = jax.tree.map(lambda p: p + 0.02 * jnp.ones_like(p), params)  # a head that is not 0.
  logits = jax.jit(lambda p: model.apply({'params': p}, x, train=False))(params)
  grad = jax.jit(jax.grad(lambda p: jnp.mean(model.apply({'params': p}, x, train=False) ** 2)))(params)
  out[dtype] = [np.asarray(logits).tolist(), np.concatenate([np.ravel(g) for g in jax.tree.leaves(grad)]).tolist()]
print(json.dumps(out))
"""


def _numbers(dtypes: list[str], flags: tuple[str, ...]) -> dict:
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(JAX_PLATFORMS='cpu', XLA_FLAGS=' '.join(flags))
  return subprocess.Popen(
    [sys.executable, '-c', _NUMBERS, ','.join(dtypes)],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def _rel(a, b) -> float:
  a, b = np.asarray(a), np.asarray(b)
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize('rule', xla_cpu_flags.RULES, ids=lambda r: f'{r.isa}-{r.dtype}')
def test_each_rule_keeps_the_numbers(rule):
  """Each rule's flags, forced on this CPU for its dtype, against XLA's defaults: float32 to
  1e-6 (float32 rounding over a 2-layer model), bfloat16 within test_model_attention's bound
  (3e-2 relative to float32)."""
  procs = {
    'default': _numbers(['float32', rule.dtype], ()),
    'rule': _numbers([rule.dtype], rule.flags),
  }
  got = {}
  for name, proc in procs.items():
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    got[name] = json.loads(stdout.strip().splitlines()[-1])
  reference = got['default']['float32']
  ruled = got['rule'][rule.dtype]
  if rule.dtype == 'float32':
    assert _rel(ruled[0], reference[0]) <= 1e-6 and _rel(ruled[1], reference[1]) <= 1e-6
  else:
    assert _rel(ruled[0], reference[0]) <= 3e-2
    assert _rel(ruled[1], reference[1]) <= 3e-2
    # and as close to XLA's default bfloat16 as that is to float32.
    default = got['default'][rule.dtype]
    assert _rel(ruled[0], default[0]) <= 3e-2
