"""Speed logs are honest: images/s and ETA count training steps only (not compilation, evals or
checkpoints), MFU comes from XLA's per-device FLOPs over a known peak, and profile_steps writes
a jax.profiler trace into the workdir."""

import json
import time

import jax
import jax.numpy as jnp
import pytest

from helpers import load_config
from vit_jax.train import loop
from vit_jax.train import setup_run
from vit_jax.train import throughput


class FakeClock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now

  def advance(self, seconds):
    self.now += seconds


class QueuedWork:
  """A stand-in for a state whose steps are still running: blocking on it takes time."""

  def __init__(self, clock, seconds):
    self.clock, self.seconds = clock, seconds

  def block_until_ready(self):
    self.clock.advance(self.seconds)
    return self


def test_timer_counts_training_steps_only():
  clock = FakeClock()
  timer = throughput.TrainTimer(clock)
  clock.advance(40.0)  # compiling and running the first step: before start().
  assert timer.lap(1) is None
  timer.start(1)
  assert timer.lap(1) is None  # a report right after the first step times nothing.
  clock.advance(9 * 0.5)  # steps 2..10 at 0.5 s.
  lap = timer.lap(10)
  assert (lap.steps, lap.seconds, lap.seconds_per_step) == (9, 4.5, 0.5)

  clock.advance(10 * 0.5)  # steps 11..20 dispatched; 1 s of them still queued on the device.
  with timer.paused('eval', wait_for=QueuedWork(clock, 1.0)):
    clock.advance(30.0)
  with timer.paused('checkpoint'):
    clock.advance(4.0)
  clock.advance(4 * 0.5)  # steps 21..24.
  lap = timer.lap(24)
  # 14 steps in 5 + 1 (queued, counted as training) + 2 s; the 34 s paused are not.
  assert (lap.steps, lap.seconds) == (14, pytest.approx(8.0))
  assert timer.last_pause == {'eval': 30.0, 'checkpoint': 4.0}

  # ETA: 76 steps x 0.5 s + 2 evals x 30 s + 3 checkpoints x 4 s (latest durations).
  assert timer.eta(76, 0.5, {'eval': 2, 'checkpoint': 3}) == pytest.approx(38 + 60 + 12)
  assert timer.eta(76, 0.5, {'eval': 2, 'never_seen': 5}) == pytest.approx(38 + 60)


def test_events_left_counts_cadence_and_last_step():
  assert throughput.events_left(100, 500, 1500) == 3  # 500, 1000, 1500.
  assert throughput.events_left(500, 500, 1500) == 3  # 500 itself is still to come.
  assert throughput.events_left(501, 500, 1500) == 2
  assert throughput.events_left(100, 1000, 1500) == 2  # 1000 and the last step.
  assert throughput.events_left(1500, 1000, 1500) == 1
  assert throughput.events_left(1501, 1000, 1500) == 0


def test_speed_and_mfu_from_flops_and_peak():
  lap = throughput.Lap(steps=10, seconds=2.0)
  speed = throughput.speed(
    lap, batch=128, num_devices=8, flops_per_device=1e9, peak_per_device=2e10
  )
  assert speed == {
    'images_per_sec': 640.0,
    'images_per_sec_per_device': 80.0,
    'step_seconds': 0.2,
    'mfu': pytest.approx(0.25),
  }  # 5e9 of 2e10 FLOP/s.
  assert 'mfu' not in throughput.speed(
    lap, batch=128, num_devices=8, flops_per_device=1e9, peak_per_device=None
  )
  assert throughput.peak_flops_per_device('NVIDIA H100 80GB HBM3') == 989e12
  assert throughput.peak_flops_per_device('TPU v5 lite') == 197e12
  assert throughput.peak_flops_per_device('cpu') is None
  assert throughput.peak_flops_per_device('cpu', override=5e10) == 5e10


def test_xla_flops_are_per_device_and_scan_bodies_scaled():
  m, k, n = 64, 128, 256
  f = lambda x, w: x @ w
  x, w = jnp.ones((m, k)), jnp.ones((k, n))
  exact = 2 * m * k * n
  single = throughput.step_flops_per_device(jax.jit(f).lower(x, w).compile())
  assert single == pytest.approx(exact, rel=0.01)

  mesh = jax.make_mesh((8,), ('data',))
  shard = lambda a, spec: jax.device_put(a, jax.sharding.NamedSharding(mesh, spec))
  sharded = jax.jit(f).lower(shard(x, jax.P('data')), shard(w, jax.P())).compile()
  assert throughput.step_flops_per_device(sharded) == pytest.approx(exact / 8, rel=0.01)

  def scanned(x, w):  # 4 micro-batches, like gradient accumulation: XLA counts one.
    return jax.lax.scan(lambda c, xi: (c + (xi @ w).sum(), None), 0.0, x.reshape(4, m // 4, k))[0]

  compiled = jax.jit(scanned).lower(x, w).compile()
  assert throughput.step_flops_per_device(compiled, accum_steps=4) == pytest.approx(exact, rel=0.02)


def vit_train_flops_per_example(config) -> float:
  """Matmul FLOPs of the default config's ViT per training example: 3x forward (backward
  twice the forward)."""
  tokens = (config.pp.crop // config.model.patch_size[0]) ** 2
  d, mlp, layers = config.model.hidden_size, config.model.mlp_dim, config.model.num_layers
  patch = config.model.patch_size[0] * config.model.patch_size[1] * 3
  per_layer = 2 * tokens * d * (4 * d + 2 * mlp) + 4 * tokens * tokens * d
  return 3 * (2 * tokens * patch * d + layers * per_layer + 2 * d * 10)


def test_run_logs_honest_speed_mfu_and_profile(tmp_path, digits_data_dir, monkeypatch, capsys):
  pause, evaluate = 1.5, loop.evaluate
  slowed = []

  def slow_evaluate(*args):  # the first eval takes > `pause` s: it must not show in images/s.
    if not slowed:
      slowed.append(time.sleep(pause))
    return evaluate(*args)

  monkeypatch.setattr(loop, 'evaluate', slow_evaluate)
  config = load_config(
    'default',
    data_dir=digits_data_dir,
    total_steps=6,
    warmup_steps=1,
    progress_every=2,
    eval_every=4,
    checkpoint_every=4,
    accum_steps=2,
    profile_steps=2,
    peak_flops_per_device=1e11,
  )
  loop.train_and_evaluate(setup_run.build(config, str(tmp_path)))
  assert 'MFU ' in capsys.readouterr().out

  lines = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  compiled = [l for l in lines if 'train/compile_seconds' in l]
  assert len(compiled) == 1 and compiled[0]['step'] == 0
  flops = compiled[0]['train/step_flops_per_device']
  expected = vit_train_flops_per_example(config) * config.batch / jax.device_count()
  print(f'XLA FLOPs / analytic matmul FLOPs per device: {flops / expected:.3f}')
  # Per device (not global: x8) and both micro-batches (not one: x0.5); XLA adds the
  # elementwise ops (norms, softmax, GELU, AdamW) to the matmuls.
  assert 1.0 <= flops / expected <= 1.2

  train = [l for l in lines if 'train/loss' in l]
  assert [l['step'] for l in train] == [2, 4, 6]
  seconds = [l['train/step_seconds'] for l in train]
  print('step seconds', seconds, 'compile seconds', compiled[0]['train/compile_seconds'])
  # The first lap (step 2) excludes compilation, the lap after the eval at step 4 excludes its
  # `pause`: were they included, these would be >= compile / 1 step and >= pause / 2 steps.
  assert seconds[0] < compiled[0]['train/compile_seconds']
  assert seconds[2] < pause / 2
  for l in train:
    assert l['train/images_per_sec'] == pytest.approx(128 / l['train/step_seconds'])
    assert l['train/images_per_sec_per_device'] == pytest.approx(l['train/images_per_sec'] / 8)
    assert l['train/mfu'] == pytest.approx(flops / l['train/step_seconds'] / 1e11)

  traces = list((tmp_path / 'profile').glob('plugins/profile/*/*.xplane.pb'))
  assert len(traces) == 1 and traces[0].stat().st_size > 1000


@pytest.mark.parametrize('field, value', [('profile_steps', -1), ('peak_flops_per_device', 0.0)])
def test_bad_speed_settings_are_config_errors(tmp_path, field, value):
  config = load_config('default', **{field: value})
  with pytest.raises(setup_run.ConfigError) as e:
    setup_run.build(config, str(tmp_path))
  assert str(e.value).startswith(f'config.{field}={value}; use ') and '\n' not in str(e.value)
