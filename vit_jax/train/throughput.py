"""Honest training speed: step time without compilation, evaluation or checkpoints; MFU; and
`jax.profiler` traces of a few steps.

    timer = TrainTimer()
    ... first step done (it compiled and warmed up) -> jax.block_until_ready(state)
    timer.start(step)
    with timer.paused('eval', wait_for=state):   # queued steps finish first, as training
      evaluate(...)
    lap = timer.lap(step)                         # after a device_get: a sync point

Steps run asynchronously: a call returns once the step is queued, not done. So the timer only
reads the clock where the device has caught up (after metrics are fetched, after blocking on
the state), or queued training work would be billed to evaluation or lost.
"""

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from typing import Any, Callable, Iterator, Mapping, Optional

from etils import epath
import jax

# bf16 dense (no sparsity) peak FLOP/s of one JAX device, keyed by jax.devices()[0].device_kind
# (the CUDA device name on NVIDIA GPUs). MFU is relative to this bf16 peak, the figure MFU is
# usually quoted against, whatever config.dtype is: float32 matmuls run slower (TF32 on NVIDIA
# GPUs peaks at half of it), so a float32 run shows a lower MFU, truthfully: it leaves part of
# the chip unused. Set config.peak_flops_per_device for other devices or another peak.
PEAK_FLOPS_PER_DEVICE = {
  'NVIDIA B200': 2250e12,
  'NVIDIA H200': 989e12,
  'NVIDIA H200 NVL': 835e12,
  'NVIDIA H100 80GB HBM3': 989e12,  # SXM5.
  'NVIDIA H100 NVL': 835e12,
  'NVIDIA H100 PCIe': 756e12,
  'NVIDIA A100-SXM4-80GB': 312e12,
  'NVIDIA A100-SXM4-40GB': 312e12,
  'NVIDIA A100 80GB PCIe': 312e12,
  'NVIDIA A100-PCIE-40GB': 312e12,
  # From v4 on, a JAX device is a whole chip (both TensorCores of v4/v5p as one megacore).
  'TPU v4': 275e12,
  'TPU v5': 459e12,  # v5p.
  'TPU v5p': 459e12,
  'TPU v5 lite': 197e12,  # v5e.
  'TPU v5e': 197e12,
  'TPU v6 lite': 918e12,  # v6e (Trillium).
  'TPU v6e': 918e12,
}


def peak_flops_per_device(device_kind: str, override: Optional[float] = None) -> Optional[float]:
  """FLOP/s of one device: `override` if set, else the table's bf16 peak; None if unknown."""
  if override is not None:
    return float(override)
  return PEAK_FLOPS_PER_DEVICE.get(device_kind)


def step_flops_per_device(
  compiled: Any, accum_steps: int = 1, uncounted: float = 0.0
) -> Optional[float]:
  """FLOPs one device executes per train step, from XLA's cost analysis of the compiled step.

  XLA partitions a sharded (SPMD) step into the program each device runs and counts that one:
  with data parallelism the global count divided by the device count; computation replicated
  across devices (e.g. layer norms under tensor parallelism) counts on each; so does remat's
  recomputation. XLA counts the body of a loop once: the train step accumulates gradients in
  a `lax.scan` over `accum_steps` micro-batches, hence the factor (it over-counts the
  optimizer update, O(params), negligible next to forward and backward). A model that scans
  over its layers is under-counted the same way: `uncounted` adds the FLOPs per device of one
  micro-batch that the count misses (`uncounted_layer_flops`). CPUs have a count too; None if
  XLA gives none.
  """
  flops = xla_flops(compiled)
  return (flops + uncounted) * accum_steps if flops > 0 else None


def xla_flops(stage: Any) -> float:
  """XLA's FLOP count of a `jax.stages.Compiled` or `Lowered` (0.0 if it gives none)."""
  analysis = stage.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older JAX: one dict per program.
    analysis = analysis[0] if analysis else None
  return float((analysis or {}).get('flops') or 0.0)


def uncounted_layer_flops(
  lower_unrolled: Callable[[int], Any], num_layers: int, num_devices: int
) -> float:
  """FLOPs per device that XLA's count misses in a step whose model scans over its layers.

  XLA counts the scan body (one layer) once, so num_layers - 1 layers are missing. One
  layer's FLOPs are the difference between the counts of the step with the model unrolled to
  2 layers and to 1 layer: `lower_unrolled(n)` returns that step as a `jax.stages.Lowered`
  (XLA counts uncompiled HLO: no compilation, and tracing 2 layers instead of all of them).
  The counts are global; the layers' work is spread evenly over the `num_devices` the step
  runs on, as data, FSDP and tensor parallelism spread a layer's matmuls. (The difference
  also holds one layer's optimizer update, O(its params): negligible.)
  """
  layer = xla_flops(lower_unrolled(2)) - xla_flops(lower_unrolled(1))
  return (num_layers - 1) * max(layer, 0.0) / num_devices


def mfu(flops_per_device: float, seconds_per_step: float, peak_per_device: float) -> float:
  """Model FLOPs utilization in 0..1: achieved FLOP/s of a device over its peak."""
  return flops_per_device / seconds_per_step / peak_per_device


@dataclasses.dataclass
class Lap:
  """Training steps and training-only seconds between two reports."""

  steps: int
  seconds: float

  @property
  def seconds_per_step(self) -> float:
    return self.seconds / self.steps


def speed(
  lap: Lap,
  *,
  batch: int,
  num_devices: int,
  flops_per_device: Optional[float],
  peak_per_device: Optional[float],
) -> dict[str, float]:
  """The throughput values a progress report logs for `lap` (MFU only if both are known)."""
  seconds = lap.seconds_per_step
  values = {
    'images_per_sec': batch / seconds,
    'images_per_sec_per_device': batch / seconds / num_devices,
    'step_seconds': seconds,
  }
  if flops_per_device and peak_per_device:
    values['mfu'] = mfu(flops_per_device, seconds, peak_per_device)
  return values


class TrainTimer:
  """Wall time spent on training steps only.

  Starts once the first step has finished (so compilation, warm-up and the first batch are
  excluded); `paused(kind)` blocks excluded work (evaluation, checkpoint, profiler). The last
  duration of each kind is kept to estimate the rest of the run.
  """

  def __init__(self, clock: Callable[[], float] = time.perf_counter):
    self._clock = clock
    self._step: Optional[int] = None  # step at the last lap (None until started).
    self._time = 0.0
    self._paused = 0.0  # paused seconds since the last lap.
    self.last_pause: dict[str, float] = {}  # kind -> seconds of its latest pause.

  def start(self, step: int) -> None:
    """Call at a sync point (device idle) once `step` is done; time counts from here."""
    self._step, self._time, self._paused = step, self._clock(), 0.0

  @contextlib.contextmanager
  def paused(self, kind: str, wait_for: Any = None) -> Iterator[None]:
    """Excludes the block's time; first waits for `wait_for` (the state) to be computed."""
    if wait_for is not None:
      jax.block_until_ready(wait_for)
    begin = self._clock()
    try:
      yield
    finally:
      seconds = self._clock() - begin
      self._paused += seconds
      self.last_pause[kind] = seconds

  def lap(self, step: int) -> Optional[Lap]:
    """Steps and training seconds since the last lap; call after fetching `step`'s metrics.

    None before start() or when no step ran since (e.g. a report right after the first step).
    """
    if self._step is None or step <= self._step:
      return None
    now = self._clock()
    lap = Lap(step - self._step, now - self._time - self._paused)
    self._step, self._time, self._paused = step, now, 0.0
    return lap

  def eta(self, steps_left: int, seconds_per_step: float, upcoming: Mapping[str, int]) -> float:
    """Seconds to the end: steps left x step time, plus for each pause kind its upcoming count
    x its latest duration (kinds not yet seen, e.g. before the first eval, add nothing)."""
    return steps_left * seconds_per_step + sum(
      n * self.last_pause.get(kind, 0.0) for kind, n in upcoming.items()
    )


def events_left(step: int, every: int, total_steps: int) -> int:
  """How many steps in [step, total_steps] are multiples of `every` or the last step.

  `step` itself is included: the progress report comes before that step's eval and checkpoint.
  """
  if step > total_steps:
    return 0
  return total_steps // every - (step - 1) // every + (1 if total_steps % every else 0)


class StepTrace:
  """A `jax.profiler` trace of `num_steps` steps into `logdir` (process 0 only: each process
  could trace only its own devices, and processes sharing a host would write the same file).

  A remote `logdir` (gs://...) gets the trace through etils.epath: the profiler writes it to a
  local temporary folder, copied there when the trace stops.
  """

  def __init__(self, logdir, num_steps: int, enabled: bool = True):
    self.logdir, self.num_steps = epath.Path(logdir), num_steps
    self.enabled = enabled and num_steps > 0
    self._stop_at: Optional[int] = None
    self._local: Optional[str] = None  # where the profiler writes a remote logdir's trace.

  def start(self, step: int) -> None:
    """Starts tracing the steps after `step` (call where the device is idle)."""
    if self.enabled and self._stop_at is None:
      self.logdir.mkdir(parents=True, exist_ok=True)
      if '://' in os.fspath(self.logdir):
        self._local = tempfile.mkdtemp(prefix='vit_jax_profile_')
      jax.profiler.start_trace(self._local or os.fspath(self.logdir))
      self._stop_at = step + self.num_steps

  def should_stop(self, step: int) -> bool:
    return self._stop_at is not None and step >= self._stop_at

  def stop(self, wait_for: Any = None) -> None:
    """Ends the trace once `wait_for` is computed, so the traced steps are in it. Idempotent."""
    if self._stop_at is not None:
      jax.block_until_ready(wait_for)
      jax.profiler.stop_trace()
      self._stop_at = None
      self.enabled = False  # one trace per run.
      if self._local is not None:
        _copy_tree(self._local, self.logdir)
        shutil.rmtree(self._local, ignore_errors=True)
        self._local = None


def _copy_tree(local: str, target: epath.Path) -> None:
  """Copies the files under the local folder `local` to `target` (any etils.epath path)."""
  for root, _, files in os.walk(local):
    relative = os.path.relpath(root, local)
    folder = target if relative == '.' else target / relative
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
      with open(os.path.join(root, name), 'rb') as f:
        (folder / name).write_bytes(f.read())
