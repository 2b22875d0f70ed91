"""One XLA device per core on a CPU host (`vit_jax.system.cpu_devices`), unless the user chose."""

import json
import os
import subprocess
import sys

from vit_jax.system import cpu_devices


def test_devices_for_divides_every_batch():
  assert cpu_devices.devices_for([128, 128, 64], 2) == 2
  assert cpu_devices.devices_for([6], 4) == 3
  assert cpu_devices.devices_for([7], 2) == 1
  assert cpu_devices.devices_for([96, 40], 16) == 8
  assert cpu_devices.devices_for([], 4) == 4


_PROBE = (
  'import jax; from vit_jax.system import cpu_devices; '
  'n = cpu_devices.split_host([{batch}]); print(n, jax.device_count())'
)


def _probe(batch: int, xla_flags: str = '') -> str:
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(JAX_PLATFORMS='cpu', XLA_FLAGS=xla_flags)
  return subprocess.run(
    [sys.executable, '-c', _PROBE.format(batch=batch)],
    env=env,
    capture_output=True,
    text=True,
    check=True,
  ).stdout.strip()


def test_split_host_one_device_per_core_unless_user_chose():
  expected = cpu_devices.devices_for([12], cpu_devices.cores())
  assert _probe(12) == f'{expected} {expected}'
  # A device count the user set is left alone.
  assert _probe(12, '--xla_force_host_platform_device_count=3') == '0 3'


def test_split_host_gives_collectives_time_and_xla_accepts_the_flags():
  """More than one device: XLA_FLAGS gains the longer collective timeouts (an unknown flag
  would abort the backend's start), and an all-reduce over the devices runs."""
  code = (
    'import os, jax, jax.numpy as jnp; from vit_jax.system import cpu_devices; '
    'n = cpu_devices.split_host([4]); '
    'x = jax.pmap(lambda v: jax.lax.psum(v, "d"), axis_name="d")(jnp.ones(n)); '
    'print(n, float(x[0]), os.environ.get("XLA_FLAGS", ""))'
  )
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(JAX_PLATFORMS='cpu', XLA_FLAGS='')
  out = subprocess.run(
    [sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True
  ).stdout.split()
  n = int(out[0])
  assert float(out[1]) == n
  flags = ' '.join(out[2:])
  if n > 1:
    for name, seconds in cpu_devices.COLLECTIVE_TIMEOUTS.items():
      assert f'--{name}={seconds}' in flags
  else:  # A one-core machine: no collectives, nothing added.
    assert flags == ''


def test_one_at_a_time_waits_for_results_only_with_several_cpu_devices():
  """The wrapped step returns computed arrays (no step queued behind an unfinished one)."""
  code = (
    'import jax, jax.numpy as jnp; from vit_jax.system import cpu_devices; '
    'jax.config.update("jax_num_cpu_devices", {n}); '
    'f = jax.jit(lambda x: x * 2); g = cpu_devices.one_at_a_time(f); '
    'y = g(jnp.ones(4)); print(g is f, y.is_ready(), float(y.sum()))'
  )
  for n, expected in ((1, 'True True 8.0'), (2, 'False True 8.0')):
    env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
    env.update(JAX_PLATFORMS='cpu')
    out = subprocess.run(
      [sys.executable, '-c', code.format(n=n)], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == expected, (n, out)


def test_split_host_after_jax_started_changes_nothing():
  """Through public JAX API only: once JAX's backends run, the count cannot change (JAX raises,
  split_host returns 0); no private JAX module is imported for the check."""
  code = (
    'import jax; jax.devices(); from vit_jax.system import cpu_devices; '
    'print(cpu_devices.split_host([12]), jax.device_count())'
  )
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(JAX_PLATFORMS='cpu', XLA_FLAGS='')
  out = subprocess.run(
    [sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True
  ).stdout.split()
  assert out == ['0', '1']
  source = open(cpu_devices.__file__, encoding='utf-8').read()
  assert '_src' not in source


def test_prepare_splits_and_sets_flags_before_jax_starts_and_nothing_after():
  from vit_jax.system import xla_cpu_flags

  code = (
    'import json, os, jax, jax.numpy as jnp; from vit_jax.system import cpu_devices; '
    'a = cpu_devices.prepare(["{dtype}"], [12]); n = jax.device_count(); '
    'y = float(jax.jit(lambda x: x @ x)(jnp.ones((4, 4), "{dtype}")).sum()); '
    'b = cpu_devices.prepare(["float32"], [12]); '
    'print(json.dumps([a["cpu_devices"], n, a["xla_flags"], os.environ["XLA_FLAGS"], y, b]))'
  )
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(JAX_PLATFORMS='cpu', XLA_FLAGS='')
  expected = cpu_devices.devices_for([12], cpu_devices.cores())
  for dtype in ('float32', 'bfloat16'):
    out = subprocess.run(
      [sys.executable, '-c', code.format(dtype=dtype)],
      env=env,
      capture_output=True,
      text=True,
      check=True,
    ).stdout
    devices, count, flags, xla_flags, y, after = json.loads(out.strip().splitlines()[-1])
    assert devices == count == expected
    # This CPU's rule for the dtype (float32: none on every CPU), in XLA_FLAGS, which XLA
    # accepted and computed with; once JAX has started, nothing changes.
    assert tuple(flags) == xla_cpu_flags.choose([dtype])
    assert all(f in xla_flags.split() for f in flags) and y == 64.0
    assert after == {'cpu_devices': 0, 'xla_flags': []}
  # Once this process's JAX has started (conftest's 8 devices): nothing to do.
  import jax

  assert jax.device_count() == 8
  assert cpu_devices.prepare(['bfloat16'], [8]) == {'cpu_devices': 0, 'xla_flags': ()}


def test_shard_batch_spreads_a_divisible_batch_and_jit_follows():
  import jax
  import numpy as np

  count = jax.local_device_count()
  assert count > 1  # conftest's simulated devices.
  x = np.arange(count * 3 * 2, dtype=np.float32).reshape(count * 3, 2)
  sharded = cpu_devices.shard_batch(x)
  assert len(sharded.sharding.device_set) == count
  params = jax.device_put(np.ones((2, 5), np.float32))  # uncommitted: replicated by jit.
  y = jax.jit(lambda p, v: v @ p)(params, sharded)
  assert len(y.sharding.device_set) == count
  np.testing.assert_allclose(np.asarray(y), x @ np.ones((2, 5)), rtol=1e-6)
  assert cpu_devices.shard_batch(x[:-1]) is not None
  assert not hasattr(cpu_devices.shard_batch(x[:-1]), 'sharding')  # not divisible: as given.


def test_the_readme_per_core_block_runs_as_written():
  """README's Python block for a plain jax.jit(model.apply), run as written in a fresh process
  (plus one line that prints where the logits were computed)."""
  import re

  from helpers import ROOT

  readme = (ROOT / 'README.md').read_text(encoding='utf-8')
  (block,) = [b for b in re.findall(r'```python\n(.*?)```', readme, re.S) if 'shard_batch' in b]
  code = block + 'print(len(logits.sharding.device_set), logits.shape)\n'
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_backend_optimization_level=1')
  out = subprocess.run(
    [sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True, cwd=ROOT
  ).stdout.split('\n')[-2]
  devices = cpu_devices.devices_for([8], cpu_devices.cores())
  assert out == f'{devices} (8, 10)'
