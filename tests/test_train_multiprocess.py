"""The main job as a real 2-process JAX program (gloo collectives on CPU), as on 2 hosts.

Each process reads its own half of the data, hands its rows to a global batch sharded over
all 4 devices, and the steps run as collectives; only process 0 writes metrics; evaluation
counts every test example exactly once across the processes; checkpoints are shared; a
SIGTERM to one host stops both at the same step, checkpointed (JAX's preemption sync point).
"""

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np

from helpers import ROOT
from vit_jax.run import orbax_io
from vit_jax.train.loop import PREEMPTED_EXIT_CODE as PREEMPTED
from vit_jax.weights import tree


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def launch(
  workdir,
  data_dir,
  port,
  steps,
  sigterm_after=None,
  expect_code=0,
  processes=2,
  devices=2,
  flags=(),
):
  """Runs the processes; with sigterm_after, SIGTERMs process 1 once process 0 prints it."""
  env = dict(
    os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}', PYTHONUNBUFFERED='1'
  )
  procs = []
  for i in range(processes):
    cmd = [
      sys.executable,
      '-m',
      'vit_jax.main',
      '--config=configs/default.py',
      f'--workdir={workdir}',
      f'--config.data_dir={data_dir}',
      f'--config.total_steps={steps}',
      '--config.warmup_steps=10',
      '--config.progress_every=20',
      '--config.eval_every=1000',
      '--config.checkpoint_every=40',
      *flags,
    ]
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


def test_two_process_training(tmp_path, digits_data_dir):
  workdir = tmp_path / 'run'
  # Preempted: process 1 gets SIGTERM after step 20; both stop at one step, checkpointed.
  outputs = launch(
    workdir,
    digits_data_dir,
    free_port(),
    steps=100,
    sigterm_after='step 20/',
    expect_code=PREEMPTED,
  )
  stopped = int(outputs[0].split('Preempted (SIGTERM): saved step ')[1].split()[0])
  assert 20 < stopped < 100, outputs[0][-2000:]
  assert os.listdir(workdir / 'checkpoints') == [str(stopped)]
  assert not (workdir / 'final_metrics.json').exists()  # Only a finished run writes it.

  # Both processes resume from the shared checkpoint and finish.
  outputs = launch(workdir, digits_data_dir, free_port(), steps=100)
  assert 'Resumed from' in outputs[0] and f'at step {stopped}' in outputs[0]
  final = json.loads((workdir / 'final_metrics.json').read_text())
  print(f'2 processes x 2 devices: {final}')
  assert final['step'] == 100
  assert final['test/examples'] == 360  # 180 + 180, none dropped or doubled.
  assert final['test/accuracy'] > 0.3  # chance is 0.1; 100 steps only.
  with open(workdir / 'metrics.jsonl') as f:
    steps = [json.loads(line)['step'] for line in f if 'train/loss' in line]
  assert steps == [20, 40, 60, 80, 100]  # written once, by process 0 only.
  assert 'step 100/100' in outputs[0] and 'step 100/100' not in outputs[1]
  assert sorted(os.listdir(workdir / 'checkpoints'), key=int)[-2:] == ['80', '100']


def test_two_processes_fsdp_train_as_one_process(tmp_path, digits_data_dir):
  """2 processes x 2 devices and 1 process x 4 devices, FSDP over all 4, same global batch:
  the same batches (the data's global order does not depend on the process count), the same
  losses and the same params after training, up to the order of the collectives' sums."""
  fsdp = (
    '--config.mesh.data=1',
    '--config.mesh.fsdp=4',
    '--config.sharding_rules=fsdp',
    '--config.min_shard_mib=0',
    '--config.checkpoint_every=1000',
    '--config.warmup_steps=2',
    '--config.progress_every=1',
  )
  launch(tmp_path / 'two', digits_data_dir, free_port(), steps=6, flags=fsdp)
  launch(tmp_path / 'one', digits_data_dir, None, steps=6, processes=1, devices=4, flags=fsdp)
  losses = {}
  for run in ('one', 'two'):
    with open(tmp_path / run / 'metrics.jsonl') as f:
      losses[run] = [json.loads(line)['train/loss'] for line in f if 'train/loss' in line]
  assert len(losses['one']) == 6
  np.testing.assert_allclose(losses['two'], losses['one'], rtol=1e-6)
  two = tree.flatten(orbax_io.load_params(str(tmp_path / 'two')))
  one = tree.flatten(orbax_io.load_params(str(tmp_path / 'one')))
  assert sorted(two) == sorted(one) and len(one) == 71  # 4 blocks of 16, and 7 more.
  diff = {k: float(np.linalg.norm(two[k] - one[k]) / np.linalg.norm(one[k])) for k in one}
  total = np.sqrt(
    sum(float(np.sum((two[k] - one[k]) ** 2)) for k in one)
    / sum(float(np.sum(one[k] ** 2)) for k in one)
  )
  # Key biases have a gradient of exactly 0 (softmax ignores a per-query constant), so they
  # hold rounding noise (|b| ~ 1e-6) that Adam scales up to steps of ~lr: left out per tensor.
  worst, name = max((v, k) for k, v in diff.items() if not k.endswith('key/bias'))
  print(
    f'FSDP 2x2 vs 1x4 devices, 6 steps: relative difference of all params {total:.1e}, '
    f'worst tensor {worst:.1e} ({name})'
  )
  assert total <= 1e-6 and worst <= 1e-6
