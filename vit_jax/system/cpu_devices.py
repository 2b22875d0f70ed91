"""One XLA device per CPU core when JAX computes on the host, so the batch splits across cores.

Why: XLA:CPU runs one device's ops with intra-op threads, and many of a ViT's ops (per-head
attention dots, LayerNorm, softmax, the small matmuls of the backward pass) are too small to
keep two cores busy. Split into one device per core with the batch sharded over them (data
parallel, gradients all-reduced), each core runs whole ops: on a 2-core machine ViT-Ti/16 at
batch 32 ran inference 1.3x and the train step 1.2x faster than on one device with two
threads (`benchmarks/vs_timm.py --cpu_devices=1` vs `2`).

`prepare()` is the one call, first thing in a process (before JAX starts: the device count and
XLA's flags are read once): one device per core plus the backend flags for the dtype and CPU
(vit_jax.system.xla_cpu_flags). `python -m vit_jax.main`, `predict`, `analyze`,
`inference_time`, `experiment`, `Session`, `inference.predictor.load` and the benchmarks call
it; it leaves a device count the user set (`jax.config.update('jax_num_cpu_devices', N)` or
XLA_FLAGS=--xla_force_host_platform_device_count=N) alone, and does nothing once JAX has
started. For a plain `jax.jit(model.apply)`, `shard_batch(images)` spreads the batch over the
devices and jit follows the input's sharding:

    cpu_devices.prepare()                       # first thing
    logits = jax.jit(model.apply)(variables, cpu_devices.shard_batch(images))
"""

import math
import os
from typing import Callable, Sequence

import jax

from vit_jax.system import host_memory
from vit_jax.system import xla_cpu_flags


def _user_chose() -> bool:
  return (
    'xla_force_host_platform_device_count' in os.environ.get('XLA_FLAGS', '')
    or jax.config.jax_num_cpu_devices != -1
  )


def cores() -> int:
  """CPU cores this process may run on (its affinity mask, e.g. a container's share)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not Linux.
    return os.cpu_count() or 1


# ISA extensions that decide which matmul kernels XLA:CPU and PyTorch can use (bfloat16 and
# int8 units: AVX512-BF16, AMX), in /proc/cpuinfo's names.
ISA_FLAGS = (
  'avx2',
  'avx512f',
  'avx512_vnni',
  'avx512_bf16',
  'avx512_fp16',
  'amx_tile',
  'amx_bf16',
  'amx_int8',
)


def describe_cpu(cpuinfo: str | None = None) -> str:
  """The host CPU as benchmarks print it beside their numbers: model, cores this process may
  use and the ISA_FLAGS it has, e.g. 'Intel(R) Xeon(R) Processor, 2 cores; avx2 avx512f
  avx512_bf16 (no AMX)'. `cpuinfo`: /proc/cpuinfo's text (read when None; other systems:
  platform.processor())."""
  fields = xla_cpu_flags.cpuinfo_fields(cpuinfo)
  if fields is None:
    import platform

    return f'{platform.processor() or "unknown CPU"}, {cores()} cores'
  flags = set(fields.get('flags', '').split())
  isa = [f for f in ISA_FLAGS if f in flags]
  amx = '' if 'amx_tile' in flags else ' (no AMX)'
  return f'{fields.get("model name", "unknown CPU")}, {cores()} cores; {" ".join(isa)}{amx}'


def devices_for(batch_sizes: Sequence[int], num_cores: int) -> int:
  """The most devices, at most one per core, that divide every batch size evenly."""
  divisor = math.gcd(*batch_sizes) if batch_sizes else num_cores
  return max(d for d in range(1, max(num_cores, 1) + 1) if divisor % d == 0)


def split_host(batch_sizes: Sequence[int] = ()) -> int:
  """Sets the number of host CPU devices to `devices_for(batch_sizes, cores())`.

  Does nothing (returns 0) when JAX computes on an accelerator, when the user already chose
  the CPU device count, or when JAX's backends are already initialised (too late).
  Returns the number of CPU devices set otherwise.
  """
  if not host_memory.computes_on_cpu() or _user_chose():
    return 0
  count = devices_for(batch_sizes, cores())
  try:
    jax.config.update('jax_num_cpu_devices', count)
  except RuntimeError:  # JAX refuses once its backends are initialised: too late.
    return 0
  if count > 1:
    _patient_collectives()
  return count


def prepare(
  dtypes: Sequence = ('float32',), batch_sizes: Sequence[int] = (), split: bool = True
) -> dict:
  """One device per core (`split_host(batch_sizes)`; not with `split=False`, e.g. for a mesh
  the user sized) and the XLA:CPU flags for a process
  computing in `dtypes` on this CPU (`xla_cpu_flags.apply`), when JAX computes on the host, has
  not started yet and is not under jax.distributed.

  Returns:
    {'cpu_devices': the device count set (0: none set), 'xla_flags': the flags added}.
  """
  if (
    not host_memory.computes_on_cpu()
    or _jax_started()
    or jax.distributed.is_initialized()  # each process's devices are the launcher's choice.
  ):
    return {'cpu_devices': 0, 'xla_flags': ()}
  flags = xla_cpu_flags.apply(dtypes)
  return {'cpu_devices': split_host(batch_sizes) if split else 0, 'xla_flags': flags}


def _jax_started() -> bool:
  """Whether JAX's backends have started, through public API only: JAX refuses to change the
  device count from then on (setting the same value again is always allowed)."""
  current = jax.config.jax_num_cpu_devices
  try:
    jax.config.update('jax_num_cpu_devices', current + 2)
  except RuntimeError:
    return True
  jax.config.update('jax_num_cpu_devices', current)
  return False


def shard_batch(batch):
  """`batch` (arrays or a pytree of them, leading axis the batch) spread over the local
  devices along that axis when there are several and it divides evenly; as it is otherwise.
  A jitted function given the result runs data-parallel (its other arguments replicated)."""
  count = jax.local_device_count()
  leaves = jax.tree.leaves(batch)
  if count < 2 or not leaves or any(len(x) % count for x in leaves):
    return batch
  mesh = jax.sharding.Mesh(jax.local_devices(), ('batch',))
  spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('batch'))
  return jax.device_put(batch, spec)


# XLA:CPU aborts the process when a device thread waits for the others at a collective (the
# gradient all-reduce) for 40 s. With one device per core, a busy machine (another job, a
# notebook, tf.data) can delay one device's thread that long: seen as "Termination timeout for
# `all reduce RendezvousKey...` of 40 seconds exceeded". Waiting longer costs nothing when all
# is well.
COLLECTIVE_TIMEOUTS = {
  'xla_cpu_collective_call_warn_stuck_timeout_seconds': 60,
  'xla_cpu_collective_call_terminate_timeout_seconds': 600,
}


def _patient_collectives() -> None:
  """Adds COLLECTIVE_TIMEOUTS to XLA_FLAGS (before the CPU backend starts), unless set."""
  flags = os.environ.get('XLA_FLAGS', '')
  extra = [f'--{name}={value}' for name, value in COLLECTIVE_TIMEOUTS.items() if name not in flags]
  if extra:
    os.environ['XLA_FLAGS'] = ' '.join([flags] + extra).strip()


def one_at_a_time(fn: Callable) -> Callable:
  """`fn` (a jitted step) made to return only once its results are computed, when JAX computes
  on several CPU devices; `fn` itself otherwise.

  Why: XLA:CPU launches each device's share of a program as a separate task, and with the next
  step already queued (async dispatch) it can launch device 1's share of step n + 1 before its
  share of step n. That task then blocks the device (its per-device launch slot) waiting for
  step n's outputs, while device 0 waits in step n's gradient all-reduce for device 1: a
  deadlock, seen under load as "Termination timeout for `all reduce RendezvousKey...`" (gdb:
  one pool thread in InProcessCommunicator::AllReduce, one launch in Semaphore::Acquire, one
  in BlockUntilReady). Waiting for each step loses the overlap of the host's work with the
  step: measured on the default job (~50 ms steps, 2 cores) 2,621 / 2,425 img/s with the wait
  vs 2,783 / 2,668 without (6-9%); less for longer steps.
  """
  if jax.default_backend() != 'cpu' or jax.local_device_count() < 2:
    return fn

  def call(*args, **kwargs):
    return jax.block_until_ready(fn(*args, **kwargs))

  return call
