"""The main job as a real 2-process JAX program (gloo collectives on CPU), as on 2 hosts.

Each process reads its own half of the data, hands its rows to a global batch sharded over
all 4 devices, and the steps run as collectives; only process 0 writes metrics; evaluation
counts every test example exactly once across the processes; checkpoints are shared.
"""

import json
import os
import socket
import subprocess
import sys

from helpers import ROOT


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def launch(workdir, data_dir, port, steps):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
             PYTHONUNBUFFERED='1')
  procs = []
  for i in range(2):
    cmd = [sys.executable, '-m', 'vit_jax.main', '--config=configs/default.py',
           f'--workdir={workdir}', f'--config.data_dir={data_dir}', '--jax_distributed',
           f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}',
           f'--config.total_steps={steps}', '--config.warmup_steps=10',
           '--config.progress_every=20', '--config.eval_every=1000',
           '--config.checkpoint_every=40']
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  return outputs


def test_two_process_training(tmp_path, digits_data_dir):
  workdir = tmp_path / 'run'
  outputs = launch(workdir, digits_data_dir, free_port(), steps=80)
  final = json.loads((workdir / 'final_metrics.json').read_text())
  print(f'2 processes x 2 devices: {final}')
  assert final['test/examples'] == 360  # 180 + 180, none dropped or doubled.
  assert final['test/accuracy'] > 0.3  # chance is 0.1; 80 steps only.
  with open(workdir / 'metrics.jsonl') as f:
    steps = [json.loads(line)['step'] for line in f if 'train/loss' in line]
  assert steps == [20, 40, 60, 80]  # written once, by process 0 only.
  assert 'step 80/80' in outputs[0] and 'step 80/80' not in outputs[1]
  assert sorted(os.listdir(workdir / 'checkpoints'))[:2] == ['40', '80']

  # Both processes resume from the shared checkpoint and carry on.
  outputs = launch(workdir, digits_data_dir, free_port(), steps=100)
  assert 'Resumed from' in outputs[0] and 'at step 80' in outputs[0]
  assert json.loads((workdir / 'final_metrics.json').read_text())['step'] == 100
