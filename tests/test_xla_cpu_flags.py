"""XLA:CPU flags chosen per dtype and CPU (`vit_jax.system.xla_cpu_flags`): the rules, the
user's XLA_FLAGS winning, flags the installed jaxlib does not know never passed, and each rule's
flags leaving the numbers where they were."""

import json
import os
import subprocess
import sys

import numpy as np

from vit_jax.system import xla_cpu_flags

AMX = frozenset({'vendor:GenuineIntel', 'avx512f', 'avx512_bf16', 'amx_tile', 'amx_bf16'})
NO_AMX = frozenset({'vendor:GenuineIntel', 'avx2', 'avx512f', 'avx512_bf16', 'avx512_vnni'})
ZEN4 = frozenset({'vendor:AuthenticAMD', 'avx2', 'avx512f', 'avx512_bf16', 'avx512_vnni'})
AVX2_ONLY = frozenset({'vendor:GenuineIntel', 'avx2', 'fma'})


def test_the_rules_per_cpu_and_dtype():
  # bfloat16 on AMX: oneDNN's dot fusion (reaches AMX); on an AVX512-BF16 Xeon without AMX:
  # YNNPACK off (XLA's Eigen kernels); elsewhere, and for float32 everywhere, XLA's defaults.
  assert xla_cpu_flags.choose(['bfloat16'], AMX) == xla_cpu_flags.ONEDNN_DOTS
  assert xla_cpu_flags.choose(['bfloat16'], NO_AMX) == xla_cpu_flags.YNNPACK_OFF
  for isa in (AMX, NO_AMX, ZEN4, AVX2_ONLY, frozenset()):
    assert xla_cpu_flags.choose(['float32'], isa) == ()
    # A process that also runs float32 programs (oneDNN crashes them) gets only shared flags.
    assert xla_cpu_flags.choose(['float32', 'bfloat16'], isa) == ()
  for isa in (ZEN4, AVX2_ONLY, frozenset()):  # not measured: defaults.
    assert xla_cpu_flags.choose(['bfloat16'], isa) == ()


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
  bogus = xla_cpu_flags.Rule(('amx_bf16',), (), 'bfloat16', ('--xla_cpu_no_such_flag=1',), 'test')
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


def test_each_rule_keeps_the_numbers():
  """Each rule's flags, forced on this CPU for its dtype, against XLA's defaults: float32 to
  1e-6 (float32 rounding over a 2-layer model), bfloat16 within test_model_attention's bound
  (3e-2 relative to float32) and as close to the default bfloat16 program."""
  procs = {'default': _numbers(['float32', 'bfloat16'], ())}
  procs.update({rule: _numbers([rule.dtype], rule.flags) for rule in xla_cpu_flags.RULES})
  got = {}
  for key, proc in procs.items():
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, (key, stderr[-2000:])
    got[key] = json.loads(stdout.strip().splitlines()[-1])
  reference = got['default']['float32']
  for rule in xla_cpu_flags.RULES:
    logits, grads = got[rule][rule.dtype]
    bound = 1e-6 if rule.dtype == 'float32' else 3e-2
    assert _rel(logits, reference[0]) <= bound and _rel(grads, reference[1]) <= bound, rule
    default = got['default'][rule.dtype]
    assert _rel(logits, default[0]) <= bound, rule
