"""Keeps freed host memory for reuse, so XLA:CPU steps stop paying page faults on every call.

Why: XLA:CPU allocates all temporaries of an executable as one buffer per call (2.1 GB for a
ViT-Ti/16 train step at batch 32) from one of its worker threads. glibc serves a request that
large from a thread arena with a fresh `mmap` and returns it with `munmap` on free, so every
step faults in and zeroes every page again: ~580k page faults and ~1 s of kernel time per
2.9 s step on a 2-core machine. With a single arena, no `mmap` for large blocks and no
trimming, the freed block is reused by the next step (0 faults; the step takes 2.05 s).
PyTorch does not suffer from this because its tensors are allocated one by one, each below
glibc's adaptive mmap threshold.

The cost: the process keeps its peak heap (it is not returned to the OS), and all threads
share one malloc arena. Other threads then contend for it: with tf.data feeding the step and
XLA compiling, the default job (configs/default.py) took 145 s instead of 107 s and its
compile 19 s instead of 13 s. glibc offers no middle way (a thread arena serves blocks over
64 MB only with `mmap`, and an arena cannot be chosen per thread), so this is opt-in: set
VIT_JAX_RETAIN_HOST_MEMORY=1 for big models on the CPU fed from memory (benchmarks, CPU-only
fine-tuning of ViT-Ti and larger). `import vit_jax` applies it then, on Linux with glibc and
only where JAX computes on the host CPU (no accelerator plugin, or JAX_PLATFORMS=cpu); it must
run before JAX starts its threads, hence at import.
"""

import ctypes
import importlib.util
import os
import platform

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_ACCELERATOR_PLUGINS = (
  'jax_cuda12_plugin',
  'jax_cuda13_plugin',
  'jax_rocm60_plugin',
  'jax_rocm7_plugin',
  'libtpu',
)

ENV_VAR = 'VIT_JAX_RETAIN_HOST_MEMORY'
_applied = False


def computes_on_cpu() -> bool:
  """True when JAX will compute on the host CPU (no accelerator plugin, or JAX_PLATFORMS=cpu)."""
  platforms = os.environ.get('JAX_PLATFORMS', '')
  if platforms:
    return platforms.split(',')[0].strip() == 'cpu'
  return not any(importlib.util.find_spec(name) for name in _ACCELERATOR_PLUGINS)


def retain_freed_memory(force: bool = False) -> bool:
  """Tunes glibc malloc to keep and reuse freed blocks; True if it was applied.

  Effective only before JAX creates its CPU client (the first computation or device query),
  since threads that already own an arena keep it. Without `force`, does nothing unless
  VIT_JAX_RETAIN_HOST_MEMORY=1 is set and JAX computes on the CPU (see the module docstring).
  """
  global _applied
  if _applied:
    return True
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return False
  if not force and (os.environ.get(ENV_VAR) != '1' or not computes_on_cpu()):
    return False
  libc = ctypes.CDLL('libc.so.6')
  # -1 as a size_t is the largest threshold: never give the top of the heap back.
  _applied = all(
    libc.mallopt(param, value) == 1
    for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))
  )
  return _applied
