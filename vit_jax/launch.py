r"""Launches `vit_jax.main` on every host of a Cloud TPU VM pod or a SLURM GPU cluster.

  python -m vit_jax.launch tpu --name=my-v4-32 --zone=us-central2-b --dry_run -- \
      --config=configs/vit.py:ViT-B_16,imagenet2012 --workdir=gs://my-bucket/vit_b16
  python -m vit_jax.launch slurm --nodes=4 --gpus_per_node=8 --dry_run -- \
      --config=configs/vit.py:ViT-B_16,imagenet2012 --workdir=/shared/runs/vit_b16

Everything after `--` goes to `vit_jax.main` unchanged, plus `--jax_distributed`: one process
per host, and jax.distributed.initialize() finds the others itself (Cloud TPU metadata, SLURM
environment). `--dry_run` prints the commands (and the sbatch script) instead of running them.
All hosts must see the same workdir: a `gs://` bucket on TPU pods, a shared filesystem on
SLURM. Rerunning the same command resumes from the workdir's last checkpoint.
"""

import argparse
import shlex
import subprocess
import sys
from typing import Optional, Sequence

# vit_jax.train.loop.PREEMPTED_EXIT_CODE; not imported, so that launching needs no JAX.
PREEMPTED_EXIT_CODE = 75


class LaunchError(ValueError):
  """A launch that cannot work; the message says what to change."""


def _main_args(args: Sequence[str]) -> list[str]:
  """The arguments for vit_jax.main, checked, with --jax_distributed added."""
  names = {a.split('=', 1)[0] for a in args}
  missing = [f for f in ('--config', '--workdir') if f not in names]
  if missing:
    raise LaunchError(
      f'give {" and ".join(missing)} for vit_jax.main after `--`, e.g. -- '
      '--config=configs/default.py --workdir=gs://BUCKET/run.'
    )
  return [*args, *([] if '--jax_distributed' in names else ['--jax_distributed'])]


def _workdir(args: Sequence[str]) -> str:
  return next(a.split('=', 1)[1] for a in args if a.startswith('--workdir='))


def tpu_commands(opts: argparse.Namespace, main_args: Sequence[str]) -> list[list[str]]:
  """gcloud commands: optional setup on all workers, then the training process on each."""
  if not _workdir(main_args).startswith('gs://'):
    raise LaunchError(
      f'--workdir={_workdir(main_args)} is local to each TPU VM; the hosts of a '
      'pod must share it: use a gs:// bucket.'
    )
  ssh = [
    'gcloud',
    'compute',
    'tpus',
    'tpu-vm',
    'ssh',
    opts.name,
    f'--zone={opts.zone}',
    '--worker=all',
  ]
  if opts.project:
    ssh.append(f'--project={opts.project}')
  repo = shlex.quote(opts.repo_dir)
  commands = []
  if opts.setup:
    if not opts.repo_url:
      raise LaunchError(
        '--setup clones vit_jax on every worker: give --repo_url (the git URL '
        'of your vit_jax repository).'
      )
    setup = (
      f'(test -d {repo} || git clone {shlex.quote(opts.repo_url)} {repo}) && '
      f"pip install -q -U 'jax[tpu]' && pip install -q -e {repo}"
    )
    commands.append(ssh + [f'--command={setup}'])
  train = f'cd {repo} && python3 -m vit_jax.main {shlex.join(main_args)}'
  commands.append(ssh + [f'--command={train}'])
  return commands


def slurm_script(opts: argparse.Namespace, main_args: Sequence[str]) -> str:
  """An sbatch script: one task per node that sees all the node's GPUs."""
  lines = [
    '#!/bin/bash',
    f'#SBATCH --job-name={opts.job_name}',
    f'#SBATCH --nodes={opts.nodes}',
    '#SBATCH --ntasks-per-node=1',
    f'#SBATCH --gpus-per-node={opts.gpus_per_node}',
    f'#SBATCH --cpus-per-task={opts.cpus_per_task}',
  ]
  if opts.partition:
    lines.append(f'#SBATCH --partition={opts.partition}')
  if opts.time:
    lines.append(f'#SBATCH --time={opts.time}')
  # SIGTERM 2 minutes before the time limit: vit_jax.main saves a checkpoint and exits with
  # PREEMPTED_EXIT_CODE, on which the job requeues itself and resumes from the checkpoint.
  lines += [
    '#SBATCH --requeue',
    '#SBATCH --signal=TERM@120',
    '',
    f'srun python -m vit_jax.main {shlex.join(main_args)}',
    'code=$?',
    f'if [ "$code" -eq {PREEMPTED_EXIT_CODE} ]; then scontrol requeue "$SLURM_JOB_ID"; fi',
    'exit "$code"',
    '',
  ]
  return '\n'.join(lines)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog='python -m vit_jax.launch', description=__doc__.splitlines()[0]
  )
  sub = parser.add_subparsers(dest='target', required=True)
  tpu = sub.add_parser('tpu', help='Cloud TPU VM pod (gcloud ... ssh --worker=all).')
  tpu.add_argument('--name', required=True, help='TPU VM name.')
  tpu.add_argument('--zone', required=True)
  tpu.add_argument('--project', default=None)
  tpu.add_argument('--setup', action='store_true', help='Clone and pip install on all workers.')
  tpu.add_argument('--repo_url', default=None, help='Git URL cloned by --setup.')
  tpu.add_argument('--repo_dir', default='vit_jax', help='Checkout on each worker.')
  slurm = sub.add_parser('slurm', help='SLURM GPU cluster (sbatch + srun).')
  slurm.add_argument('--nodes', type=int, required=True)
  slurm.add_argument('--gpus_per_node', type=int, default=8)
  slurm.add_argument(
    '--cpus_per_task',
    type=int,
    default=32,
    help='Host cores for the input pipeline (README: ~6-8 per H100).',
  )
  slurm.add_argument('--partition', default=None)
  slurm.add_argument('--time', default=None, help='e.g. 24:00:00')
  slurm.add_argument('--job_name', default='vit_jax')
  slurm.add_argument('--script', default='vit_jax.sbatch', help='Where to write the script.')
  for p in (tpu, slurm):
    p.add_argument('--dry_run', action='store_true', help='Print, do not run.')
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  split = argv.index('--') if '--' in argv else len(argv)
  opts = _parser().parse_args(argv[:split])
  try:
    main_args = _main_args(argv[split + 1 :])
    if opts.target == 'tpu':
      commands = tpu_commands(opts, main_args)
    else:
      if opts.nodes < 1 or opts.gpus_per_node < 1:
        raise LaunchError('--nodes and --gpus_per_node must be >= 1.')
      script = slurm_script(opts, main_args)
      commands = [['sbatch', opts.script]]
  except LaunchError as e:
    print(f'Launch error: {e}', file=sys.stderr)
    return 2
  if opts.target == 'slurm':
    if opts.dry_run:
      print(f'# {opts.script}\n{script}')
    else:
      with open(opts.script, 'w') as f:
        f.write(script)
  for command in commands:
    print(shlex.join(command))
    if not opts.dry_run:
      code = subprocess.run(command, check=False).returncode
      if code:
        print(f'Launch error: `{command[0]}` exited with {code}.', file=sys.stderr)
        return code
  return 0


if __name__ == '__main__':
  sys.exit(main())
