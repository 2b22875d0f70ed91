"""Test setup: eight simulated CPU devices, so that sharding code runs on a real mesh.

XLA_FLAGS must be set before jax is imported anywhere, hence here at the top.
"""

import os

os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
).strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pathlib

import pytest

# `../shared` beside the checkout holds real data (MNIST) for some tests; absent in some places.
SHARED_DIR = pathlib.Path(__file__).resolve().parents[1].parent / 'shared'


@pytest.fixture
def shared_dir():
  """Path of ../shared; skips the test cleanly when it is absent."""
  if not (SHARED_DIR / 'data').is_dir():
    pytest.skip('../shared is not present beside the checkout')
  return SHARED_DIR


@pytest.fixture(scope='session')
def digits_data_dir(tmp_path_factory):
  """A TFDS data_dir private to the test session (the built-in dataset prepares itself)."""
  return str(tmp_path_factory.mktemp('tfds'))
