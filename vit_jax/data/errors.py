"""Errors raised by the input pipeline; each message says in one line what to do."""


class DataError(ValueError):
  """A bad dataset name, split, folder layout, argument or iterator state."""


class UnreadableImageError(DataError):
  """An image could not be decoded and `skip_unreadable=False` was requested."""
