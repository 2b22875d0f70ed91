"""Launch commands for TPU pods and SLURM, checked through --dry_run (nothing is run)."""

import shlex

import pytest

from vit_jax import launch
from vit_jax.train import loop

MAIN = [
  '--config=configs/vit.py:ViT-B_16,imagenet2012',
  '--workdir=gs://bucket/run',
  '--config.batch=4096',
]


def _run(capsys, argv):
  code = launch.main(argv)
  out = capsys.readouterr()
  return code, out.out, out.err


def test_tpu_pod_runs_one_distributed_process_per_worker(capsys):
  code, out, _ = _run(
    capsys,
    [
      'tpu',
      '--name=pod',
      '--zone=us-central2-b',
      '--project=p',
      '--setup',
      '--repo_url=https://example.com/vit_jax.git',
      '--dry_run',
      '--',
      *MAIN,
    ],
  )
  assert code == 0
  setup, train = [shlex.split(line) for line in out.strip().splitlines()]
  for command in (setup, train):
    assert command[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'pod']
    assert {'--zone=us-central2-b', '--worker=all', '--project=p'} <= set(command)
  assert 'git clone https://example.com/vit_jax.git vit_jax' in setup[-1]
  remote = shlex.split(train[-1].removeprefix('--command='))
  assert remote[:4] == ['cd', 'vit_jax', '&&', 'python3']
  assert remote[4:] == ['-m', 'vit_jax.main', *MAIN, '--jax_distributed']


def test_slurm_script_one_task_per_node_requeued_on_sigterm(capsys, tmp_path):
  script = tmp_path / 'job.sbatch'
  main = [MAIN[0], '--workdir=/shared/run', '--jax_distributed']
  code, out, _ = _run(
    capsys,
    [
      'slurm',
      '--nodes=4',
      '--gpus_per_node=8',
      '--time=24:00:00',
      f'--script={script}',
      '--dry_run',
      '--',
      *main,
    ],
  )
  assert code == 0 and not script.exists()  # Dry run: printed, not written or submitted.
  lines = out.splitlines()
  for directive in (
    '--nodes=4',
    '--ntasks-per-node=1',
    '--gpus-per-node=8',
    '--time=24:00:00',
    '--requeue',
    '--signal=TERM@120',
  ):
    assert f'#SBATCH {directive}' in lines
  srun = next(line for line in lines if line.startswith('srun '))
  assert shlex.split(srun) == ['srun', 'python', '-m', 'vit_jax.main', *main]  # Flag not doubled.
  assert lines[-1] == f'sbatch {script}'
  requeue = lines[lines.index(srun) + 2]
  assert requeue.startswith(f'if [ "$code" -eq {loop.PREEMPTED_EXIT_CODE} ]; then scontrol requeue')


@pytest.mark.parametrize(
  'argv, message',
  [
    (
      ['tpu', '--name=n', '--zone=z', '--dry_run', '--', MAIN[0], '--workdir=/tmp/run'],
      'is local to each TPU VM',
    ),
    (['tpu', '--name=n', '--zone=z', '--setup', '--dry_run', '--', *MAIN], 'give --repo_url'),
    (['slurm', '--nodes=2', '--dry_run', '--', MAIN[0]], 'give --workdir for vit_jax.main'),
    (['slurm', '--nodes=0', '--dry_run', '--', *MAIN], '--nodes and --gpus_per_node'),
  ],
)
def test_launch_errors_are_one_line(capsys, argv, message):
  code, out, err = _run(capsys, argv)
  assert code == 2 and not out
  assert err.startswith('Launch error: ') and message in err and err.count('\n') == 1
