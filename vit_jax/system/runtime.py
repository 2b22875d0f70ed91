"""What this process runs on, for notebooks and scripts that size their work to it.

    rt = runtime.detect()     # Runtime(platform='cpu', num_devices=2, device_kind='cpu', ...)
    steps = 1500 if rt.accelerator else 300
    if rt.online: ...         # the released checkpoints can be downloaded

`detect` starts JAX (it lists the devices): set the device count first (XLA_FLAGS or
`vit_jax.system.cpu_devices.split_host`), since it cannot change afterwards.
"""

import dataclasses
import socket
import threading

import jax

# Where the released checkpoints are (vit_jax.weights.catalogue downloads over HTTPS).
RELEASES_HOST = 'storage.googleapis.com'


@dataclasses.dataclass(frozen=True)
class Runtime:
  """The devices JAX computes on, and whether the released checkpoints are reachable."""

  platform: str  # 'tpu', 'gpu' or 'cpu': JAX's default backend.
  num_devices: int  # over all processes.
  device_kind: str  # e.g. 'TPU v2', 'NVIDIA H100 80GB HBM3', 'cpu'.
  online: bool  # RELEASES_HOST answered (False when not checked).

  @property
  def accelerator(self) -> bool:
    """True on a TPU or GPU: room for larger models, images and more steps."""
    return self.platform != 'cpu'


def online(host: str = RELEASES_HOST, port: int = 443, timeout: float = 3.0) -> bool:
  """Whether a TCP connection to host:port opens within `timeout` seconds (no data sent).

  The name lookup counts too: the probe runs in a thread that is abandoned after `timeout`,
  since a resolver that gets no answer can block for much longer than the connect timeout.
  """
  opened = []

  def probe():
    try:
      with socket.create_connection((host, port), timeout=timeout):
        opened.append(True)
    except OSError:  # no DNS, refused, unreachable, timed out.
      pass

  thread = threading.Thread(target=probe, name='vit_jax-online-probe', daemon=True)
  thread.start()
  thread.join(timeout)
  return bool(opened)


def detect(check_network: bool = True, timeout: float = 3.0) -> Runtime:
  """The runtime; `check_network=False` skips the probe (online=False), `timeout` bounds it."""
  devices = jax.devices()
  platform = jax.default_backend()
  return Runtime(
    platform='gpu' if platform in ('cuda', 'rocm') else platform,
    num_devices=len(devices),
    device_kind=devices[0].device_kind,
    online=online(timeout=timeout) if check_network else False,
  )


class OutOfMemoryError(ValueError):
  """A compiled step needs more memory than its devices have free; one line on what to do."""


def free_bytes(device) -> int | None:
  """Memory `device` can still allocate: an accelerator's own (limit - in use), a CPU device's
  share of the host's available memory (MemAvailable; the host's CPU devices share it); None
  where neither is known."""
  stats = device.memory_stats() if device.platform != 'cpu' else None
  if stats and 'bytes_limit' in stats:
    return int(stats['bytes_limit']) - int(stats.get('bytes_in_use', 0))
  if device.platform != 'cpu':
    return None
  try:
    with open('/proc/meminfo') as f:
      available = next(int(l.split()[1]) * 1024 for l in f if l.startswith('MemAvailable:'))
  except (OSError, StopIteration, ValueError):  # not Linux
    return None
  return available // max(jax.local_device_count(), 1)


def check_step_memory(compiled, what: str, fix: str) -> None:
  """Refuses a compiled step that cannot run in the free memory of a device, before it runs
  (it grew until the OS stopped it: ViT-H/14 at batch 512 took 12 GiB on a CPU, no output).

  XLA's memory analysis of the compiled program gives, per device, its temporaries and the
  outputs it allocates (the inputs exist already; donated ones are reused).

  Raises:
    OutOfMemoryError: one line with both sizes and `fix`.
  """
  memory = compiled.memory_analysis()
  free = free_bytes(jax.local_devices()[0])
  if memory is None or free is None:
    return
  need = memory.temp_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
  if need <= free:
    return
  gib = 2**30
  raise OutOfMemoryError(
    f'{what} needs {need / gib:.1f} GiB per device (XLA: {memory.temp_size_in_bytes / gib:.1f} '
    f'GiB temporaries, {(need - memory.temp_size_in_bytes) / gib:.1f} GiB outputs) but a '
    f'device has {free / gib:.1f} GiB free; {fix}'
  )
