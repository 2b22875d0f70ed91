r"""One-shot accelerator check: cuDNN attention, speed against timm, the default job.

    python -u benchmarks/accelerator_check.py [--budget_s=480]   # one GPU, <= 8 minutes
    python benchmarks/accelerator_check.py --dry_run              # every part, tiny, CPU

Prints a line naming the device, then one markdown table per part (ready for README.md):
  (a) attention_impl='auto' against 'xla' on the same params and images, logits and
      gradients: ViT-B/16 widths at 224px (197 tokens) and 384px (577), float32 and bfloat16,
      a MAP head, a relative position bias (benchmarks/accelerator_check_attention.py). On a
      GPU 'auto' is cuDNN's fused attention where cuDNN accepts the shapes and falls back to
      xla where it refuses; the table says which it took.
  (b) ViT-B/16 bfloat16 train step: vit_jax img/s and MFU against timm with torch.compile on
      the same card (benchmarks/vs_timm.py, run as it is).
  (c) the README's default job (`python -m vit_jax.main --config=configs/default.py`), then
      one fine-tune step from its workdir at 24px (position embeddings resampled). vit_jax's
      input pipeline is tf.data: without TensorFlow (and TFDS, scikit-learn for the digits)
      this part is SKIPped, and says so.
Each command runs with a timeout taken from what is left of --budget_s; a timed-out command is
killed with its workers (process group). The exit code is 1 when any part FAILs, else 0
(SKIP included: it is printed). --dry_run runs every part at tiny sizes on the CPU ('testing'
ViT, 32px, batch 2, 2 steps; timm left out: vs_timm has no timm model for 'testing').
"""

import argparse
import importlib.util
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
HERE = pathlib.Path(__file__).resolve().parent

# JAX processes (this one computing (a), vs_timm's worker) share the GPU with timm's worker:
# none may take 75% of its memory up front (JAX's default). Set before JAX is imported; the
# commands inherit it (a step's speed is the same once warm: the pool has grown).
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

# The default job, shrunk for the dry run: --config.<field>=<value>, a '__' in a key a '.'.
DRY_DEFAULT_JOB = dict(
  total_steps=2,
  warmup_steps=1,
  batch=16,
  batch_eval=64,
  progress_every=1,
  eval_every=2,
  checkpoint_every=2,
  model__num_layers=1,
  model__hidden_size=16,
  model__num_heads=2,
  model__mlp_dim=32,
)
# One fine-tune step from the default job's workdir, at 24px instead of 16px.
FINE_TUNE = dict(
  total_steps=1, warmup_steps=0, progress_every=1, eval_every=1, checkpoint_every=1, pp__crop=24
)


def _child_env() -> dict:
  """The commands' environment: this one, the checkout importable, output unbuffered."""
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  env['PYTHONPATH'] = os.pathsep.join(p for p in (str(ROOT), env.get('PYTHONPATH')) if p)
  return env


def _run(argv, timeout: float) -> tuple[int | None, str, float]:
  """(exit code or None when it timed out, stdout + stderr, seconds) of `argv` from the root.
  Runs in its own process group: a timeout kills its workers too (vs_timm's, tf.data's)."""
  start = time.perf_counter()
  proc = subprocess.Popen(
    argv,
    cwd=ROOT,
    env=_child_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    start_new_session=True,
  )
  try:
    out, _ = proc.communicate(timeout=max(timeout, 1))
    code = proc.returncode
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    code = None
  return code, out, time.perf_counter() - start


def _tail(out: str, lines: int = 12) -> None:
  """The end of a failed command's output, indented (not part of any table)."""
  for line in out.strip().splitlines()[-lines:]:
    print(f'    {line}')


def _number(text) -> float:
  """A table cell's number ('1,234.5'); 0 for '-' or no cell."""
  try:
    return float(str(text).replace(',', ''))
  except ValueError:
    return 0.0


# What each part imports beyond the standard library and JAX (a GPU image may lack some).
NEEDS = {
  'a': ('flax', 'optax'),
  'b': ('flax', 'optax', 'ml_collections', 'timm', 'torch'),
  'c': ('tensorflow', 'tensorflow_datasets', 'sklearn', 'ml_collections', 'orbax', 'absl'),
}


def _missing(*modules) -> list[str]:
  return [m for m in modules if importlib.util.find_spec(m) is None]


def describe_device() -> str:
  """'device: <kind> x<count> (<platform>); jax <version>' (CPU: model, cores, ISA)."""
  import jax

  device = jax.devices()[0]
  if device.platform == 'cpu':
    from vit_jax.system import cpu_devices

    kind = cpu_devices.describe_cpu()
  else:
    kind = f'{device.device_kind} x{jax.device_count()}'
  return f'device: {kind} ({device.platform}); jax {jax.__version__}'


# --------------------------------------------------------------------------- (b) vs timm
def part_b(args, timeout: float) -> bool:
  print('\n### (b) ViT-B/16 bfloat16 train step: vit_jax vs timm (torch.compile)\n', flush=True)
  if args.dry_run:
    # 'testing' has no timm counterpart (vs_timm_workers.TIMM_NAMES): vit_jax alone.
    flags = ['--models=testing', '--image_size=32', '--batch=2', '--rounds=1', '--steps=1']
    flags += ['--pause=0', '--no_timm']
  else:
    flags = [f'--models={args.model}', f'--batch={args.batch}', '--rounds=5', '--steps=10']
    flags += ['--compile=on'] + (['--no_timm'] if _missing('timm', 'torch') else [])
  argv = [sys.executable, str(HERE / 'vs_timm.py'), '--modes=train', '--dtypes=bfloat16', *flags]
  code, out, seconds = _run(argv, timeout)
  rows = [line for line in out.splitlines() if line.startswith('|')]
  for line in rows + [line for line in out.splitlines() if line.startswith('MFU peak')]:
    print(line)
  # Columns by header name: vs_timm's table may grow columns.
  header = [c.strip() for c in rows[0].strip('|').split('|')] if rows else []
  data = [dict(zip(header, (c.strip() for c in r.strip('|').split('|')))) for r in rows[2:]]
  rates_ok = bool(data) and all(_number(r.get('vit_jax img/s')) > 0 for r in data)
  timm_ok = '--no_timm' in flags or all(_number(r.get('timm img/s')) > 0 for r in data)
  passed = code == 0 and rates_ok and timm_ok
  note = 'timed out' if code is None else f'exit code {code}'
  if '--no_timm' in flags:
    note += '; timm not run (' + ('dry run' if args.dry_run else 'timm/torch missing') + ')'
  print(f'\n(b): {"PASS" if passed else "FAIL"} in {seconds:.0f} s ({note}): {" ".join(argv[1:])}')
  if not passed:
    _tail(out)
  return passed


# --------------------------------------------------------------------------- (c) default job
def _main_argv(workdir, config: dict) -> list[str]:
  flags = [f'--config.{k.replace("__", ".")}={v}' for k, v in config.items()]
  return [
    sys.executable,
    '-m',
    'vit_jax.main',
    '--config=configs/default.py',
    f'--workdir={workdir}',
    *flags,
  ]


def _job_row(name, workdir, code, out, seconds, min_accuracy) -> bool:
  final_path = pathlib.Path(workdir) / 'final_metrics.json'
  final = json.loads(final_path.read_text()) if code == 0 and final_path.exists() else {}
  accuracy = final.get('test/accuracy')
  rates = re.findall(r'\| ([\d,.]+) img/s', out)
  passed = accuracy is not None and accuracy >= min_accuracy
  result = 'PASS' if passed else ('FAIL (timed out)' if code is None else f'FAIL (exit {code})')
  print(
    f'| {name} | {final.get("step", "-")} | '
    f'{"-" if accuracy is None else f"{accuracy:.4f}"} | {min_accuracy} | '
    f'{rates[-1] if rates else "-"} | {seconds:.0f} | {result} |',
    flush=True,
  )
  return passed


def part_c(args, deadline: float) -> tuple[bool, bool]:
  """(passed, skipped)."""
  print('\n### (c) default job, then one fine-tune step from its workdir\n', flush=True)
  missing = _missing('tensorflow', 'tensorflow_datasets', 'sklearn')
  if missing:
    print(
      f'(c): SKIP: {", ".join(missing)} not installed. vit_jax reads every dataset (TFDS and '
      'image folders alike) through tf.data, and the default job trains on TFDS '
      "'sklearn_digits': install tensorflow-cpu, tensorflow-datasets and scikit-learn "
      "(setup.py's requirements) to run it."
    )
    return True, True
  workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix='accelerator_check_'))
  pre, fine = workdir / 'default_job', workdir / 'fine_tune'
  pre_config = dict(DRY_DEFAULT_JOB if args.dry_run else {})
  if args.data_dir:
    pre_config['data_dir'] = args.data_dir
  # The README's claim for the full job (configs/default.py); 2 dry-run steps are chance.
  min_accuracy = 0.0 if args.dry_run else 0.95
  print('| run | steps | test accuracy | required | img/s (last) | s | result |')
  print('| --- | ---: | ---: | ---: | ---: | ---: | --- |')
  runs = [
    ('default job', pre, pre_config, min_accuracy),
    ('fine-tune step', fine, dict(pre_config, pretrained_path=pre, **FINE_TUNE), 0.0),
  ]
  finished, printed = [], []
  for i, (name, path, config, required) in enumerate(runs):
    # The default job gets 80% of what is left, the fine-tune step (compile, restore, one
    # evaluation) the rest.
    share = 1.0 if i == len(runs) - 1 else 0.8
    argv = _main_argv(path, config)
    code, out, seconds = _run(argv, share * (deadline - time.perf_counter()))
    finished.append(_job_row(name, path, code, out, seconds, required))
    printed.append((argv, code, out))
    if not finished[-1]:
      break
  for argv, code, out in printed:
    print(f'\n`{" ".join(argv[1:])}`')
    lines = [line for line in out.splitlines() if line.startswith(('Finished', 'Compiled'))]
    for line in lines or ['(no summary line)']:
      print(f'    {line}')
    if code != 0:
      _tail(out)
  passed = len(finished) == len(runs) and all(finished)
  print(f'\n(c): {"PASS" if passed else "FAIL"}; workdirs under {workdir}')
  return passed, False


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--dry_run', action='store_true', help='Every part at tiny sizes (CPU).')
  parser.add_argument('--budget_s', type=float, default=480, help='Wall-clock budget, seconds.')
  parser.add_argument('--parts', default='a,b,c', help='Which parts to run: a, b, c.')
  parser.add_argument('--model', default='ViT-B_16', help='(b): the model measured.')
  parser.add_argument('--batch', type=int, default=256, help='(b): train batch size.')
  parser.add_argument('--attention_batch', type=int, default=8, help='(a): images per case.')
  parser.add_argument('--workdir', default=None, help='(c): where the runs write (temp dir).')
  parser.add_argument('--data_dir', default=None, help="(c): TFDS data_dir (TFDS's default).")
  args = parser.parse_args()
  start = time.perf_counter()
  deadline = start + args.budget_s
  parts = set(args.parts.split(','))
  if args.dry_run:
    args.attention_batch = 2
  sys.path.insert(0, str(ROOT))  # the checkout's vit_jax, installed or not.
  sys.path.insert(0, str(HERE))

  print(describe_device())
  print(
    f'check: {"dry run" if args.dry_run else "full"}, parts {args.parts}, budget '
    f'{args.budget_s:.0f} s, {time.strftime("%Y-%m-%d %H:%M:%S")}',
    flush=True,
  )
  missing = {p: _missing(*NEEDS[p]) for p in sorted(parts) if p in NEEDS}
  print(
    'modules missing: '
    + ('; '.join(f'({p}) {", ".join(m)}' for p, m in missing.items() if m) or 'none'),
    flush=True,
  )
  results = {}
  if 'a' in parts:
    import accelerator_check_attention

    results['a'] = accelerator_check_attention.run(args.dry_run, args.attention_batch)
  skipped = []
  if 'c' in parts and not _missing('tensorflow', 'tensorflow_datasets', 'sklearn'):
    reserve_c = 0.35 * (deadline - time.perf_counter())  # (c) after (b): keep its share.
  else:
    reserve_c = 5.0
  if 'b' in parts:
    results['b'] = part_b(args, deadline - time.perf_counter() - reserve_c)
  if 'c' in parts:
    results['c'], skip = part_c(args, deadline - 5)
    skipped += ['c'] * skip
  failed = [p for p, ok in results.items() if not ok]
  print(
    f'\ntotal: {time.perf_counter() - start:.0f} s of a {args.budget_s:.0f} s budget; '
    f'failed: {", ".join(failed) or "none"}; skipped: {", ".join(skipped) or "none"}'
  )
  sys.exit(1 if failed else 0)


if __name__ == '__main__':
  main()
