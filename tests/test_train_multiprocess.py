"""The main job as a real 2-process JAX program (gloo collectives on CPU), as on 2 hosts.

Each process reads its own half of the data, hands its rows to a global batch sharded over
all 4 devices, and the steps run as collectives; only process 0 writes metrics; evaluation
counts every test example exactly once across the processes; checkpoints are shared; a
SIGTERM to one host stops both at the same step, checkpointed (JAX's preemption sync point).

Both tests read the same launches (built once per test run, see `runs`): a 2-process run,
preempted and resumed, and an uninterrupted 1-process run of the same job on as many devices.
A resumed run is bit-identical to one that never stopped (tests/test_train_resume.py), so the
comparison of the two is the comparison of 2 processes with 1.
"""

import json
import os
import signal
import socket
import subprocess
import tempfile

import flax.linen as nn
import jax
import numpy as np
import pytest

from helpers import build_once
from helpers import command_env
from helpers import load_config
from helpers import main_command
from helpers import ROOT
from vit_jax.run import orbax_io
from vit_jax.train import loop
from vit_jax.train import setup_run
from vit_jax.weights import tree

PREEMPTED = loop.PREEMPTED_EXIT_CODE
# Few steps: a 2-process step waits on gloo collectives, ~4 steps/s on an idle 2-core CPU and a
# few times slower beside another test's work (pytest -n 2), so the launches' steps dominate.
STEPS, CHECKPOINT_EVERY, SIGTERM_AFTER = 24, 12, 3
EPS = 2.0**-23  # float32's machine epsilon: one rounding is within eps / 2, relative.
# The default job with FSDP over all 4 devices (params and optimizer state sharded across the
# processes, the batch too) and SGD with momentum (see the equivalence test for why SGD), at a
# learning rate that learns in a few steps; every step logged, for the per-step comparison.
# 2 encoder blocks, not 4: what is checked is 2 processes = 1, not the model's size, and process 1
# compiles cold in every launch (JAX's persistent cache is written by process 0 only, and its keys
# differ per process on CPU).
OVERRIDES = dict(
  model__num_layers=2,
  mesh__data=1,
  mesh__fsdp=4,
  sharding_rules='fsdp',
  min_shard_mib=0.0,
  optim__name='sgd',
  base_lr=0.1,
  batch=64,
  total_steps=STEPS,
  warmup_steps=4,
  progress_every=1,
  eval_every=1000,
  checkpoint_every=CHECKPOINT_EVERY,
)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def launch(workdir, data_dir, processes, devices, sigterm_after=None, expect_code=0):
  """Runs the processes; with sigterm_after, SIGTERMs process 1 once process 0 prints it.
  Returns each process's output (stdout and stderr)."""
  env = command_env(devices)
  port = free_port()
  procs = []
  for i in range(processes):
    cmd = main_command(
      workdir, data_dir, *(f'--config.{k.replace("__", ".")}={v}' for k, v in OVERRIDES.items())
    )
    if processes > 1:
      cmd += [
        '--jax_distributed',
        f'--coordinator_address=127.0.0.1:{port}',
        f'--num_processes={processes}',
        f'--process_id={i}',
      ]
    procs.append(
      subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
      )
    )
  head = ''
  if sigterm_after:
    for line in procs[0].stdout:
      head += line
      if sigterm_after in line:
        procs[1].send_signal(signal.SIGTERM)
        break
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  outputs[0] = head + outputs[0]
  for p, out in zip(procs, outputs):
    assert p.returncode == expect_code, out[-3000:]
  return outputs


def _launch_all(folder, data_dir):
  """two/: 2 processes x 2 devices, SIGTERMed after step SIGTERM_AFTER, then resumed;
  one/: 1 process x 4 devices, uninterrupted. Outputs and the preempted state are saved."""
  two = folder / 'two'
  outputs = launch(
    two, data_dir, 2, 2, sigterm_after=f'step {SIGTERM_AFTER}/', expect_code=PREEMPTED
  )
  preempted = {
    'checkpoints': sorted(os.listdir(two / 'checkpoints')),
    'final_metrics': (two / 'final_metrics.json').exists(),
  }
  outputs += launch(two, data_dir, 2, 2)
  (folder / 'outputs.json').write_text(json.dumps({'outputs': outputs, 'preempted': preempted}))
  launch(folder / 'one', data_dir, 1, 4)


@pytest.fixture(scope='module')
def runs(tmp_path_factory, digits_data_dir):
  """(folder with two/ and one/, outputs of the 4 launched processes, state when preempted)."""
  folder = build_once(tmp_path_factory, 'multiprocess', lambda f: _launch_all(f, digits_data_dir))
  saved = json.loads((folder / 'outputs.json').read_text())
  return folder, saved['outputs'], saved['preempted']


def read_jsonl(workdir):
  with open(workdir / 'metrics.jsonl') as f:
    return [json.loads(line) for line in f]


def test_two_process_training(runs):
  folder, (pre0, pre1, out0, out1), preempted = runs
  workdir = folder / 'two'
  # Preempted: process 1 got SIGTERM after step 3; both stopped at one step, checkpointed.
  assert 'Preempted (SIGTERM): saved step ' in pre0, pre0[-2000:]
  stopped = int(pre0.split('Preempted (SIGTERM): saved step ')[1].split()[0])
  assert SIGTERM_AFTER < stopped < CHECKPOINT_EVERY, pre0[-2000:]
  assert preempted == {'checkpoints': [str(stopped)], 'final_metrics': False}  # Not finished.

  # Both processes resumed from the shared checkpoint and finished.
  assert 'Resumed from' in out0 and f'at step {stopped}' in out0
  final = json.loads((workdir / 'final_metrics.json').read_text())
  print(f'2 processes x 2 devices, preempted at step {stopped}: {final}')
  assert final['step'] == STEPS
  assert final['test/examples'] == 360  # 180 + 180, none dropped or doubled.
  assert final['test/accuracy'] > 0.2  # chance is 0.1; 24 steps, 2 blocks (measured 0.27).
  steps = [l['step'] for l in read_jsonl(workdir) if 'train/loss' in l]
  assert steps == list(range(1, STEPS + 1))  # each written once, by process 0 only.
  assert f'step {STEPS}/{STEPS}' in out0 and f'step {STEPS}/{STEPS}' not in out1
  assert 'step 1/' in pre0 and 'step 1/' not in pre1
  checkpoints = sorted(os.listdir(workdir / 'checkpoints'), key=int)
  assert checkpoints == [str(stopped), str(CHECKPOINT_EVERY), str(STEPS)]


def _initial_params(data_dir):
  """The runs' params before the first step: the loop's init from key(seed), computed here on
  one device (threefry is partitionable: the values do not depend on the sharding)."""
  assert jax.config.jax_threefry_partitionable
  config = load_config('default', data_dir=data_dir, **dict(OVERRIDES, mesh__fsdp=-1))
  with tempfile.TemporaryDirectory() as workdir:
    run = setup_run.build(config, workdir)
    state = jax.jit(lambda r: nn.meta.unbox(run.init(r)))(jax.random.key(config.seed))
  return tree.flatten(jax.device_get(state.params))


def test_two_processes_fsdp_train_as_one_process(runs, digits_data_dir):
  """2 processes x 2 devices and 1 process x 4 devices, FSDP over all 4, same global batch:
  the same batches (the data's global order does not depend on the process count), the same
  losses, evaluation and params after training, up to the order of the collectives' sums.

  Why SGD: the two runs differ only in the order in which the collectives add the devices'
  partial sums (gloo between the processes vs XLA:CPU within one), i.e. by a few float32
  roundings (eps = 2**-23) per step in each gradient, relative to it. SGD (with momentum, global
  norm clipping and weight decay: all linear in the gradient, up to the clipping's common
  scale) turns that into the same relative error of each update, so after T steps each
  tensor's difference is at most ~T * eps of its change during training plus the rounding of
  the params themselves (see below), on any CPU. Adam divides by sqrt(v), which scales a
  gradient made of rounding noise up to a step of ~lr: the bound would depend on how small
  some gradients happen to be."""
  folder, _, _ = runs
  losses, evals = {}, {}
  for run in ('one', 'two'):
    lines = read_jsonl(folder / run)
    losses[run] = np.array([l['train/loss'] for l in lines if 'train/loss' in l])
    evals[run] = json.loads((folder / run / 'final_metrics.json').read_text())
  assert len(losses['one']) == STEPS
  # A loss is a mean over the batch whose last additions (over the devices) are reordered, at
  # params that differ by <= T * eps of their change (a loss change of the same order):
  # within STEPS * eps.
  loss_error = float(np.max(np.abs(losses['two'] / losses['one'] - 1)))
  assert loss_error <= STEPS * EPS, loss_error
  assert evals['two']['test/examples'] == evals['one']['test/examples'] == 360
  # Logits differ by ~eps: at most a near-tie among 360 test images may flip.
  assert abs(evals['two']['test/accuracy'] - evals['one']['test/accuracy']) <= 1 / 360
  assert evals['two']['test/loss'] == pytest.approx(evals['one']['test/loss'], rel=STEPS * EPS)

  two = tree.flatten(orbax_io.load_params(str(folder / 'two')))
  one = tree.flatten(orbax_io.load_params(str(folder / 'one')))
  init = _initial_params(digits_data_dir)
  assert sorted(two) == sorted(one) == sorted(init) and len(one) == 39  # 2 blocks of 16, 7 more.
  norm = lambda x: float(np.linalg.norm(x))
  change = {k: norm(one[k] - init[k]) for k in one}
  # The init really is the runs' starting point: kernels moved by far less than their size (a
  # different random draw would be ~1.4x it away).
  assert all(change[k] < 0.5 * norm(init[k]) for k in one if k.endswith('kernel') and norm(init[k]))
  # Per step, each element's difference grows by (a) the update's relative rounding error, a
  # few eps of the update (summed: of the change in training), and (b) the rounding of p + u to
  # float32, up to eps/2 of |p| (a LayerNorm scale ~1 that moved by 0.01 differs by ulps of 1).
  # Measured (Intel Xeon): <= 3.5 eps for any tensor after 40 steps (losses: <= 1.2 eps).
  diff = {k: norm(two[k] - one[k]) / (change[k] + norm(one[k])) for k in one}
  # Key biases have a gradient of exactly 0 (softmax ignores a per-query constant): they move
  # by rounding noise only (~1e-9), so their difference is noise relative to noise; left out.
  worst, name = max((v, k) for k, v in diff.items() if not k.endswith('key/bias'))
  print(
    f'FSDP 2x2 vs 1x4 devices, {STEPS} SGD steps: largest loss difference '
    f'{loss_error / EPS:.1f} eps, largest param difference {worst / EPS:.1f} eps of (change in '
    f'training + size) ({name}); bound {STEPS} steps x eps'
  )
  assert worst <= STEPS * EPS, name
