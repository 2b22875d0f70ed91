"""Library logs silenced where we report a failure ourselves, and errors shown as one line."""

import contextlib
import gc
import logging
import re
import sys


@contextlib.contextmanager
def absl_errors_only():
  """Within the block the `absl` logger shows errors only (TFDS, Orbax log through it)."""
  logger = logging.getLogger('absl')
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


class _DropOrbaxErrors(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.ERROR and '/orbax/' in record.pathname)


@contextlib.contextmanager
def orbax_errors_reported_by_caller():
  """Within the block Orbax's error logs (tracebacks, also from its save threads) are dropped:
  the caller turns every Orbax failure into its own one-line error."""
  logger, dropped = logging.getLogger('absl'), _DropOrbaxErrors()
  logger.addFilter(dropped)
  try:
    yield
  finally:
    logger.removeFilter(dropped)


@contextlib.contextmanager
def unraisable_silenced():
  """Within the block, exceptions Python cannot raise (e.g. of abandoned coroutines of a failed
  TensorStore read) are not printed; the caller reports the failure itself."""
  hook = sys.unraisablehook
  sys.unraisablehook = lambda unraisable: None
  try:
    yield
  finally:
    gc.collect()  # abandoned coroutines are finalised here, while silenced.
    sys.unraisablehook = hook


# Terminal colour and style codes (ESC [ ... m), which some libraries put in their messages.
_ANSI_STYLE = re.compile(r'\x1b\[[0-9;]*m')


def first_line(error: BaseException, limit: int = 200) -> str:
  """An error's message, first line only (at most `limit` characters, no terminal colour
  codes), or its type's name."""
  text = _ANSI_STYLE.sub('', getattr(error, 'message', None) or str(error)).strip()
  return (text.splitlines()[0] if text else type(error).__name__)[:limit]
