"""A4, attention rollout: rows of R sum to 1, identity attention gives R = I, a two-layer
product matches a hand-computed matrix (and the order of layers matters); the map peaks
where the class token attends."""

import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.analysis import rollout as rl

# A cyclic shift (token i attends to i+1) and "everyone attends to token 0".
SHIFT = np.array([[0.0, 1, 0], [0, 0, 1], [1, 0, 0]])
TO_FIRST = np.array([[1.0, 0, 0], [1, 0, 0], [1, 0, 0]])


def layer(*heads):
  """[B=1, N, T, T] from per-head [T, T] matrices."""
  return np.stack(heads)[None]


def test_identity_attention_gives_identity():
  eye = np.broadcast_to(np.eye(5), (2, 3, 5, 5))
  np.testing.assert_array_equal(
    rl.attention_rollout([eye, eye, eye]), np.broadcast_to(np.eye(5), (2, 5, 5))
  )


def test_rows_sum_to_one():
  rng = np.random.default_rng(0)
  layers = [rng.dirichlet(np.ones(7), size=(3, 4, 7)).astype(np.float32) for _ in range(4)]
  got = rl.attention_rollout([jnp.asarray(w) for w in layers])
  assert got.shape == (3, 7, 7) and got.dtype == np.float64
  # float64 (eps64 = 2.2e-16): each layer's rows renormalised (sums of 7), 4 products of
  # row-stochastic 7 x 7 matrices (sums of 7 positive terms keep the row sums to <= 7 eps64
  # each), the final sum of 7: <= (4*(7 + 7) + 7)*eps64 = 1.4e-14 worst case. 2e-14.
  np.testing.assert_allclose(got.sum(axis=-1), 1.0, rtol=2e-14)
  # Rows that do not sum to 1 (e.g. weights with dropped entries) are renormalised.
  got = rl.attention_rollout([0.3 * w for w in layers])
  np.testing.assert_allclose(got.sum(axis=-1), 1.0, rtol=2e-14)


def test_two_layers_by_hand():
  # Â1 = (I + SHIFT)/2, Â2 = (I + TO_FIRST)/2; R = Â2 @ Â1 = (I + SHIFT + TO_FIRST + TO_FIRST
  # @ SHIFT)/4, where TO_FIRST @ SHIFT sends everyone to token 1.
  expected = np.array([[0.5, 0.5, 0], [0.25, 0.5, 0.25], [0.5, 0.25, 0.25]])
  got = rl.attention_rollout([layer(SHIFT), layer(TO_FIRST)])
  # Halves and quarters of 0/1 matrices: every step is exact in binary floating point.
  np.testing.assert_array_equal(got[0], expected)
  # The other order is a different matrix: (I + SHIFT)(I + TO_FIRST)/4, and SHIFT @ TO_FIRST
  # = TO_FIRST.
  reverse = rl.attention_rollout([layer(TO_FIRST), layer(SHIFT)])[0]
  np.testing.assert_array_equal(reverse, [[0.75, 0.25, 0], [0.5, 0.25, 0.25], [0.75, 0, 0.25]])
  # Heads are averaged: two heads SHIFT and TO_FIRST in one layer equal their mean as one head
  # (halves of 0/1 matrices again: exact).
  np.testing.assert_array_equal(
    rl.attention_rollout([layer(SHIFT, TO_FIRST)])[0],
    rl.attention_rollout([layer((SHIFT + TO_FIRST) / 2)])[0],
  )
  # residual=0 is the plain product of the attention matrices (0/1 entries: exact).
  np.testing.assert_array_equal(
    rl.attention_rollout([layer(SHIFT)] * 2, residual=0.0)[0], SHIFT @ SHIFT
  )


def class_row_rollout(grid, peak, num_prefix=1):
  """[1, T, T] identity rollout whose class-token row puts 0.6 on patch `peak` = (r, c)."""
  h, w = grid
  tokens = num_prefix + h * w
  rollout = np.eye(tokens)[None].copy()
  rollout[0, 0] = 0.4 / (tokens - 1)
  rollout[0, 0, num_prefix + peak[0] * w + peak[1]] += 0.6
  return rollout


def test_map_without_resize_or_blur_is_the_normalised_class_row():
  rollout = class_row_rollout((3, 4), (1, 2))
  got = rl.rollout_map(rollout, (3, 4), 1, (3, 4), blur_sigma=0)
  expected = rollout[0, 0, 1:].reshape(3, 4)
  # jax.image.resize to the same size runs in float32: the normalised map is rounded to
  # float32 once (its peak, 1, exactly), <= 2**-24 relative; the float64 divisions ~1e-16.
  # 2**-23.
  np.testing.assert_allclose(got[0], expected / expected.max(), rtol=2**-23)


def test_map_peaks_where_the_class_token_attends():
  grid, patch = (4, 4), 8
  rollout = class_row_rollout(grid, (2, 1))
  got = rl.rollout_map(rollout, grid, 1, 32, blur_sigma=1.5)
  assert got.shape == (1, 32, 32)
  assert got.min() >= 0 and got.max() == 1
  rows, cols = np.nonzero(got[0] == 1)
  assert np.all((rows // patch == 2) & (cols // patch == 1))
  # Far from the peak only the 0.4/16 floor remains: ~1/26 of the peak after normalising.
  assert got[0, :8, 24:].max() < 0.1


def test_gap_models_use_the_mean_of_all_rows():
  rng = np.random.default_rng(1)
  rollout = rl.attention_rollout([rng.dirichlet(np.ones(6), size=(2, 1, 6))])
  got = rl.rollout_map(rollout, (2, 3), 0, (2, 3), blur_sigma=0)
  mean = rollout.mean(axis=1).reshape(2, 2, 3)
  # As above: one float32 rounding in the resize (identity here), <= 2**-24. 2**-23.
  np.testing.assert_allclose(got, mean / mean.max(axis=(1, 2), keepdims=True), rtol=2**-23)


def test_blur_spreads_a_point_symmetrically():
  maps = np.zeros((1, 9, 9))
  maps[0, 4, 4] = 1.0
  blurred = rl._gaussian_blur(maps, 1.0)
  # float64 (eps64 = 2.2e-16): a 7-tap kernel normalised by its sum (7 terms), applied twice
  # to a point (products of two taps), summed over 81 pixels (positive terms):
  # <= (7 + 2 + 81)*eps64 = 2e-14 worst case. 5e-14. Nothing reaches the edges.
  np.testing.assert_allclose(blurred.sum(), 1.0, rtol=5e-14)
  # [i, j] and [j, i] are the same two taps multiplied (in the other order: still exact
  # products, but each sum of 7 shifted terms may round differently): <= 2*7*eps64 of values
  # <= 0.16. 1e-15.
  np.testing.assert_allclose(blurred[0], blurred[0].T, atol=1e-15)
  # The taps' ratio: exp of -0.5 (1 ulp) and two roundings: <= 3 eps64 = 7e-16. 1e-15.
  np.testing.assert_allclose(blurred[0, 4, 5] / blurred[0, 4, 4], np.exp(-0.5), rtol=1e-15)


def test_bad_inputs_are_explained():
  with pytest.raises(ValueError, match='at least one layer'):
    rl.attention_rollout([])
  with pytest.raises(ValueError, match=r'T = num_prefix \+ h\*w = 5'):
    rl.rollout_map(np.zeros((1, 4, 4)), (2, 2), 1, 8)
