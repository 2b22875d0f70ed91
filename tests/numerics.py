"""Numerical helpers of the model tests: scale-free errors and jitted VJPs."""

import jax
import numpy as np


def rel_err(actual, expected):
  """max |actual - expected| / max |expected| (a scale-free error for a whole array)."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  return np.abs(actual - expected).max() / np.abs(expected).max()


def value_and_vjp(fn, cotangent, *args):
  """(fn(*args), cotangent pulled back to each of args), as one jitted program."""

  def run(cotangent, *args):
    out, vjp = jax.vjp(fn, *args)
    return out, vjp(cotangent)

  return jax.jit(run)(cotangent, *args)
