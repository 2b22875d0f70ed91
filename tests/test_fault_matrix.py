"""docs/faults.md, the fault and bad-input matrix: at least 45 cases, each with an outcome that
loses nothing and a test that exists (issue 20's goal), so the table cannot drift from tests."""

import re

from helpers import ROOT

OUTCOMES = {'error', 'skip', 'falls back', 'resume', 'stops', 'as meant'}


def rows():
  table = (ROOT / 'docs' / 'faults.md').read_text().split('| --- | --- | --- | --- |\n')[1]
  return [[c.strip() for c in line.strip('|').split('|')] for line in table.strip().splitlines()]


def test_the_matrix_has_45_cases_or_more_each_a_test_with_an_outcome_that_loses_nothing():
  cases = rows()
  assert [int(number) for number, *_ in cases] == list(range(1, len(cases) + 1))
  assert len(cases) >= 45
  assert len({case for _, case, _, _ in cases}) == len(cases)  # each case once.
  for number, case, outcome, test in cases:
    assert outcome in OUTCOMES, (number, outcome)
    file, name = re.fullmatch(r'(test_\w+\.py)::(test_\w+)', test).groups()
    assert re.search(rf'^def {name}\(', (ROOT / 'tests' / file).read_text(), re.M), test


def test_the_readme_gives_the_matrixs_size():
  readme = ' '.join((ROOT / 'README.md').read_text().split())
  assert f'`docs/faults.md` lists {len(rows())} faults and kinds of bad input' in readme
