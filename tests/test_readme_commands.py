"""README's quick-start commands and CI agree, so CI tests what a new user runs."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def quick_start_blocks():
  text = (ROOT / 'README.md').read_text()
  section = text.split('## Quick start', 1)[1].split('\n## ', 1)[0]
  return [b.strip().splitlines() for b in re.findall(r'```bash\n(.*?)```', section, re.S)]


def test_readme_has_two_quick_start_commands():
  blocks = quick_start_blocks()
  assert len(blocks) == 2
  setup, tests = blocks
  assert setup[0] == tests[0] == 'python3 -m venv .venv && . .venv/bin/activate'
  assert setup[1].startswith('pip install -e .') and tests[1] == "pip install -e '.[test]'"


def test_ci_runs_the_readme_test_command_verbatim():
  ci_lines = [l.strip() for l in (ROOT / '.ci' / 'run').read_text().splitlines()]
  tests = quick_start_blocks()[1]
  start = ci_lines.index(tests[0])
  assert ci_lines[start : start + len(tests)] == tests
  assert 'set -euo pipefail' in ci_lines
