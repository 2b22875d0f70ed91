"""Host-memory tuning (`vit_jax.system.host_memory`) is opt-in and takes effect at import."""

import os
import platform
import subprocess
import sys

import pytest

_PROBE = (
  'import vit_jax, jax; from vit_jax.system import host_memory; '
  'jax.numpy.ones(3).block_until_ready(); print(host_memory._applied)'
)


def _probe(**env) -> str:
  full = {k: v for k, v in os.environ.items() if k != 'VIT_JAX_RETAIN_HOST_MEMORY'}
  full.update(env, JAX_PLATFORMS='cpu')
  return subprocess.run(
    [sys.executable, '-c', _PROBE], env=full, capture_output=True, text=True, check=True
  ).stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='tunes glibc malloc only')
def test_off_by_default_on_with_env_var():
  assert _probe() == 'False'
  assert _probe(VIT_JAX_RETAIN_HOST_MEMORY='1') == 'True'
  assert _probe(VIT_JAX_RETAIN_HOST_MEMORY='0') == 'False'
