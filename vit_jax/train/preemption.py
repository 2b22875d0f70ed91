"""How a run stops when its scheduler preempts it or its user presses Ctrl-C: at one step on
every process, checkpointed (the command then exits with the signal's exit code, and rerunning
it resumes)."""

import signal
import threading

import jax

# Exit codes of a run stopped and checkpointed: SIGTERM (how schedulers preempt) -> EX_TEMPFAIL
# of sysexits.h, "try again", which schedulers read as "requeue me"; Ctrl-C -> 128 + SIGINT,
# what a shell reports for a command the user interrupted.
EXIT_CODES = {'SIGTERM': 75, 'SIGINT': 128 + signal.SIGINT}
# How the loop's last line names the stop.
CAUSES = {'SIGTERM': 'Preempted (SIGTERM)', 'SIGINT': 'Interrupted (Ctrl-C)'}


class Preemption:
  """Stop requests -> the step to checkpoint and stop at.

  One process: handlers for SIGTERM and SIGINT (Ctrl-C); a second Ctrl-C raises
  KeyboardInterrupt at once, without saving (the last checkpoint stays). Several processes (jax.distributed): JAX's
  preemption sync manager, which catches SIGTERM on any host and agrees on a step in the
  background through the coordination service, so no step pays a host collective.
  """

  def __init__(self):
    self.requested = None  # the name of the signal that asked to stop.
    self._previous = {}
    self._distributed = jax.process_count() > 1
    if not self._distributed and threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.requested == 'SIGINT':
      self.restore()
      raise KeyboardInterrupt  # a second Ctrl-C: stop now (the caller decides what it prints).
    self.requested = self.requested or signal.Signals(signum).name

  def reached(self, step: int) -> bool:
    """True at the step where every process stops (called by all processes at every step)."""
    if not self._distributed:
      return self.requested is not None
    from jax.experimental import multihost_utils

    if multihost_utils.reached_preemption_sync_point(step):
      self.requested = 'SIGTERM'
      return True
    return False

  def restore(self):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous = {}
