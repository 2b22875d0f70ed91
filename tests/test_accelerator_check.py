"""benchmarks/accelerator_check.py: its CPU dry run (every part at tiny sizes) passes and
prints the tables a GPU run fills in; how it names what attention_impl='auto' took."""

import pathlib
import re
import subprocess
import sys

from helpers import command_env
from helpers import IN_PROCESS_XLA_FLAGS

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))

import accelerator_check_attention  # noqa: E402


def _table(out: str, heading: str) -> list[list[str]]:
  """The cells of the data rows of the markdown table after the line starting `heading`."""
  lines = out[out.index(heading) :].splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith('|'))
  rows = []
  for line in lines[start + 2 :]:
    if not line.startswith('|'):
      break
    rows.append([c.strip() for c in line.strip('|').split('|')])
  return rows


def test_dry_run_passes_and_prints_every_part(tmp_path, digits_data_dir):
  env = command_env()  # the script's own device choice, not the suite's 8 fake devices.
  # A dry run compiles ~14 small programs and runs each a step or two: XLA -O0, as the
  # suite's own processes (helpers.IN_PROCESS_XLA_FLAGS), compiles faster.
  env['XLA_FLAGS'] = IN_PROCESS_XLA_FLAGS
  result = subprocess.run(
    [
      sys.executable,
      str(ROOT / 'benchmarks' / 'accelerator_check.py'),
      '--dry_run',
      f'--workdir={tmp_path}',
      f'--data_dir={digits_data_dir}',
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  out = result.stdout
  assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
  assert re.fullmatch(
    r'device: .+, \d+ cores; [\w ]*( \(no AMX\))? \(cpu\); jax \S+', out.splitlines()[0]
  )

  # (a): one row per case; on the CPU 'auto' is per_head, compared with xla within bounds.
  rows = _table(out, '### (a)')
  assert [(r[0], r[2], r[3]) for r in rows] == [
    ('class token', '5', 'float32'),
    ('class token', '5', 'bfloat16'),
    ('class token', '10', 'bfloat16'),
    ('MAP head', '4', 'bfloat16'),
    ('relative bias', '5', 'bfloat16'),
  ]
  for r in rows:
    tolerance = accelerator_check_attention.TOLERANCE[r[3]]
    assert r[4] == 'per_head' and r[8] == 'PASS', r
    assert float(r[7]) == tolerance
    # Two different programs (per_head, xla): not bit-identical, and within the bound.
    assert 0 < float(r[5]) + float(r[6]) and max(float(r[5]), float(r[6])) < tolerance, r

  # (b): vs_timm's row, vit_jax alone ('testing' has no timm counterpart).
  (row,) = _table(out, '### (b)')
  assert row[:4] == ['testing', 'train', 'bfloat16', '2']
  assert float(row[4].replace(',', '')) > 0 and row[5] == '-'
  assert '(b): PASS' in out

  # (c): the default job's 2 steps, then 1 fine-tune step from its workdir, both evaluated.
  default_job, fine_tune = _table(out, '### (c)')
  assert default_job[:2] == ['default job', '2'] and fine_tune[:2] == ['fine-tune step', '1']
  for r in (default_job, fine_tune):
    assert 0 <= float(r[2]) <= 1 and r[-1] == 'PASS', r
  assert re.search(r'^    Finished step 2 in .*: test/accuracy 0\.\d+\.', out, re.M)
  assert re.search(r'^    Finished step 1 in .*: test/accuracy 0\.\d+\.', out, re.M)
  assert (tmp_path / 'fine_tune' / 'final_metrics.json').is_file()
  assert re.search(r'^total: \d+ s of a 480 s budget; failed: none; skipped: none$', out, re.M)


def test_auto_is_named_by_what_cudnn_accepted():
  took = accelerator_check_attention._took
  assert took('per_head', []) == ('per_head', '')
  assert took('xla', []) == ('xla', '')
  assert took('cudnn', [None, None]) == ('cudnn', '2 attention calls')
  refused = 'NotImplementedError: Unsupported sequence length Q 197, KV 197.'
  assert took('cudnn', [refused, refused]) == ('xla (fallback)', f'2/2 refused: {refused}')
  assert took('cudnn', [refused, None, None]) == (
    'cudnn + xla (fallback)',
    f'1/3 refused: {refused}',
  )
