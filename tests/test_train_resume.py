"""Checkpoints: a run killed (SIGKILL), preempted (SIGTERM) or interrupted (Ctrl-C, once or
twice) and restarted ends bit-identical to one that never stopped; checkpoints restore onto
another mesh.

The stops are one sequence on one workdir (each restart resumes what the stop before left),
so that the suite starts `python -m vit_jax.main` (~10 s of startup each) as few times as it can.
"""

import os
import signal
import subprocess
import threading
import time

import jax
import numpy as np
import pytest

from helpers import build_once
from helpers import command_env
from helpers import main_command
from helpers import ROOT
from vit_jax import models
from vit_jax.run import orbax_io
from vit_jax.system import sharding
from vit_jax.train import config as config_lib
from vit_jax.train import loop
from vit_jax.train import optim
from vit_jax.train import state as state_lib

# 8 checkpoints: room for the stops below (the latest is at most ~6 * EVERY, after up to 3
# tries at a mid-save kill).
STEPS, EVERY = 80, 10


def command(workdir, data_dir, checkpoint_every=EVERY):
  return main_command(
    workdir,
    data_dir,
    f'--config.total_steps={STEPS}',
    '--config.warmup_steps=20',
    f'--config.checkpoint_every={checkpoint_every}',
    f'--config.progress_every={EVERY // 2}',
    '--config.eval_every=100000',
    '--config.keep_checkpoints=20',
  )


def environment():
  # Two simulated devices: a real (2-way data-parallel) mesh, cheaper than eight.
  return command_env(devices=2)


def run_to_completion(workdir, data_dir, checkpoint_every=EVERY):
  result = subprocess.run(
    command(workdir, data_dir, checkpoint_every),
    cwd=ROOT,
    env=environment(),
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def saved_steps(workdir):
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(int(s) for s in os.listdir(directory) if s.isdigit())


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, digits_data_dir):
  """Params of the run trained without a stop (trained once per test run). Saved at the end
  only: saving reads the state and changes nothing in it (~0.5 s a save)."""
  workdir = build_once(
    tmp_path_factory,
    'resume_uninterrupted',
    lambda w: run_to_completion(str(w), digits_data_dir, checkpoint_every=STEPS),
  )
  return orbax_io.load_params(str(workdir))


def assert_bit_identical(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)


class Started:
  """A training process whose output lines are collected by a thread as they come."""

  def __init__(self, workdir, data_dir):
    self.proc = subprocess.Popen(
      command(workdir, data_dir),
      cwd=ROOT,
      env=environment(),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    self.lines = []
    self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
    self._reader.start()

  def kill_when(self, condition, timeout=300):
    """SIGKILLs the process as soon as condition() holds (polled every ~2 ms)."""
    return self.stop_when(condition, signal.SIGKILL, timeout)

  def stop_when(self, condition, sig, timeout=300, again_after=None):
    """Sends `sig` as soon as condition() holds (and again `again_after` seconds later, if the
    process still runs then); returns the output once the process ended."""
    deadline = time.time() + timeout
    while not condition() and self.proc.poll() is None and time.time() < deadline:
      time.sleep(0.002)
    assert self.proc.poll() is None, ''.join(self.lines)[-3000:]
    self.proc.send_signal(sig)
    if again_after is not None:
      time.sleep(again_after)
      if self.proc.poll() is None:
        self.proc.send_signal(sig)
    self.proc.wait(timeout=120)
    self._reader.join(timeout=60)
    return ''.join(self.lines)


def progress_after(step):
  """The first progress line's step at least half a checkpoint interval after `step`."""
  every = EVERY // 2
  return -(-(step + every) // every) * every


def tmp_checkpoints(workdir):
  directory = os.path.join(workdir, 'checkpoints')
  return [n for n in os.listdir(directory) if 'tmp' in n] if os.path.isdir(directory) else []


def test_sigkill_at_five_points_sigterm_and_ctrl_c_then_restart_is_bit_identical(
  tmp_path, digits_data_dir, uninterrupted
):
  """Killed (1) while compiling, (2) mid-save, (3) just after a save completed, (4) between
  checkpoints and (5) right after a resume, (6) preempted with SIGTERM, (7) interrupted with
  Ctrl-C, (8) with Ctrl-C twice, then run to the end: bit-identical params."""
  workdir = str(tmp_path)
  config_json = os.path.join(workdir, 'config.json')
  run = Started(workdir, digits_data_dir)  # (1) Before any step: a fresh start again.
  run.kill_when(lambda: os.path.exists(config_json))
  assert not saved_steps(workdir)

  for _ in range(3):  # (2) A checkpoint's temporary folder exists (retried if the kill lands
    run = Started(workdir, digits_data_dir)  # just after the folder was renamed).
    run.kill_when(lambda: tmp_checkpoints(workdir))
    if tmp_checkpoints(workdir):
      break
  assert tmp_checkpoints(workdir), 'no kill landed mid-save'
  mid_save = saved_steps(workdir)

  run = Started(workdir, digits_data_dir)  # (3) A new step folder just appeared.
  run.kill_when(lambda: len(saved_steps(workdir)) > len(mid_save))
  after_save = max(saved_steps(workdir))

  run = Started(workdir, digits_data_dir)  # (4) Half-way between two checkpoints.
  target = f'step {after_save + EVERY // 2}/'
  output = run.kill_when(lambda: any(target in line for line in run.lines))
  assert f'at step {after_save}' in output and max(saved_steps(workdir)) == after_save

  run = Started(workdir, digits_data_dir)  # (5) Just after the restore, before a step.
  output = run.kill_when(lambda: any('Resumed from' in line for line in run.lines))
  assert f'Resumed from {workdir}/checkpoints at step {after_save}' in output

  # (6) Preempted (SIGTERM) between checkpoints after a resume: it saves the step it stopped
  # at and exits with the code a scheduler reads as "requeue me", unfinished.
  run = Started(workdir, digits_data_dir)
  target = f'step {after_save + EVERY // 2}/'
  output = run.stop_when(lambda: any(target in line for line in run.lines), signal.SIGTERM)
  assert run.proc.returncode == loop.PREEMPTED_EXIT_CODE, output[-3000:]
  assert not os.path.exists(os.path.join(workdir, 'final_metrics.json'))  # Not finished.
  assert 'Preempted (SIGTERM): saved step' in output, output[-3000:]
  preempted_at = int(output.split('Preempted (SIGTERM): saved step ')[1].split()[0])
  assert after_save + EVERY // 2 <= preempted_at < STEPS and preempted_at in saved_steps(workdir)

  # (7) Ctrl-C once: the same as SIGTERM, with the exit code of an interrupted command (a
  # 43-line traceback after ~20 s and nothing saved, before).
  run = Started(workdir, digits_data_dir)
  target = f'step {progress_after(preempted_at)}/'
  output = run.stop_when(lambda: any(target in line for line in run.lines), signal.SIGINT)
  assert run.proc.returncode == 130 and 'Traceback' not in output, output[-3000:]
  interrupted_at = int(output.split('Interrupted (Ctrl-C): saved step ')[1].split()[0])
  assert preempted_at < interrupted_at < STEPS and interrupted_at in saved_steps(workdir)

  # (8) Ctrl-C twice, 20 ms apart: the second one lands in the save the first asked for, or
  # after it; either way one line, exit 130, and the resume below stays bit-identical.
  run = Started(workdir, digits_data_dir)
  target = f'step {progress_after(interrupted_at)}/'
  output = run.stop_when(
    lambda: any(target in line for line in run.lines), signal.SIGINT, again_after=0.02
  )
  assert run.proc.returncode == 130 and 'Traceback' not in output, output[-3000:]
  last = output.rstrip().splitlines()[-1]
  assert last.startswith(('Stopped (Ctrl-C) without saving; ', 'Interrupted (Ctrl-C): saved')), last
  interrupted_at = max(saved_steps(workdir))

  output = run_to_completion(workdir, digits_data_dir)
  assert f'Resumed from {workdir}/checkpoints at step {interrupted_at}' in output
  assert_bit_identical(orbax_io.load_params(workdir), uninterrupted)


def _state_on(mesh_axes, rules, devices):
  c = config_lib.base_config()
  schedule = optim.make_schedule(0.1, 10, 1, 'cosine')
  tx = optim.make_optimizer(c, schedule)
  model = models.VisionTransformer(
    num_classes=8, patch_size=(4, 4), hidden_size=32, num_layers=1, num_heads=4, mlp_dim=64
  )
  mesh = sharding.make_mesh(mesh_axes, devices)
  init = state_lib.init_fn(model, tx, (1, 16, 16, 3))
  abstract, shardings = state_lib.abstract_state_and_shardings(init, mesh, rules)
  return init, abstract, shardings


def test_restore_onto_another_mesh(tmp_path):
  rules = config_lib.SHARDING_RULES['fsdp']
  init, _, shardings = _state_on({'data': 1, 'fsdp': 8, 'model': 1}, rules, jax.devices())
  state = state_lib.create_sharded(init, jax.random.key(3), shardings)
  # Make the momentum non-zero, so that optimizer state is checked too.
  state = state.replace(
    opt_state=jax.tree.map(lambda x: x + 0.5 if x.dtype == np.float32 else x, state.opt_state)
  )
  kernel = state.params['Transformer']['encoderblock_0']['MlpBlock_3']['Dense_0']['kernel']
  assert kernel.addressable_shards[0].data.shape == (4, 64)  # really sharded 8 ways.
  io = orbax_io.CheckpointIO(str(tmp_path))
  io.save(state, {'position': 7})
  io.save(state, {'position': 7})  # same step again (e.g. preemption right after): a no-op.
  io.close()

  _, abstract, _ = _state_on({'data': 1, 'fsdp': 1, 'model': 1}, rules, jax.devices()[:1])
  io = orbax_io.CheckpointIO(str(tmp_path))
  restored, data_state = io.restore(abstract)
  io.close()
  assert data_state == {'position': 7}
  restored_kernel = restored.params['Transformer']['encoderblock_0']['MlpBlock_3']['Dense_0'][
    'kernel'
  ]
  assert restored_kernel.sharding.device_set == {jax.devices()[0]}
  assert_bit_identical(jax.device_get(restored), jax.device_get(state))
