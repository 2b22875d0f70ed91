"""Silences a library's python-side absl warnings for a block (ones we report better ourselves)."""

import contextlib
import logging


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
