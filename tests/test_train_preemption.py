"""Stop requests of a single-process run (vit_jax.train.preemption): SIGTERM and Ctrl-C stop at
the next step (the loop saves there), a second Ctrl-C stops at once; the handlers the process
had are back afterwards. The command line's side (lines, exit codes, the resumed run) is in
test_train_resume."""

import signal

import pytest

from vit_jax.train import preemption


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_one_signal_stops_at_the_next_step(sig):
  before = signal.getsignal(sig)
  stop = preemption.Preemption()
  try:
    assert not stop.reached(1)
    signal.raise_signal(sig)
    assert stop.reached(2) and stop.requested == sig.name
    signal.raise_signal(signal.SIGTERM)  # more notices change nothing.
    assert stop.requested == sig.name
    assert preemption.EXIT_CODES[stop.requested] == {'SIGTERM': 75, 'SIGINT': 130}[sig.name]
  finally:
    stop.restore()
  assert signal.getsignal(sig) is before


def test_a_second_ctrl_c_stops_at_once():
  before = signal.getsignal(signal.SIGINT)
  stop = preemption.Preemption()
  signal.raise_signal(signal.SIGINT)
  with pytest.raises(KeyboardInterrupt):
    signal.raise_signal(signal.SIGINT)
  assert signal.getsignal(signal.SIGINT) is before  # the handlers were put back.
  stop.restore()  # again: harmless.
  assert signal.getsignal(signal.SIGINT) is before
