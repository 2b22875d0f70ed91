"""How a run stops when its scheduler preempts it: at one step on every process, checkpointed
(the loop then exits with PREEMPTED_EXIT_CODE, and rerunning the command resumes)."""

import signal
import threading

import jax


class Preemption:
  """Preemption notices (SIGTERM, how schedulers preempt) -> the step to checkpoint and stop at.

  One process: a SIGTERM handler. Several processes (jax.distributed): JAX's preemption sync
  manager, which catches SIGTERM on any host and agrees on a step in the background through
  the coordination service, so no step pays a host collective.
  """

  def __init__(self):
    self.requested = False
    self._previous = None
    self._distributed = jax.process_count() > 1
    if not self._distributed and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def reached(self, step: int) -> bool:
    """True at the step where every process stops (called by all processes at every step)."""
    if not self._distributed:
      return self.requested
    from jax.experimental import multihost_utils

    return multihost_utils.reached_preemption_sync_point(step)

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
