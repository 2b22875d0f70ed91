"""A3, mean attention distance: 0 for identity attention, P*sqrt(dx²+dy²) for attention one
patch away at (dx, dy), P*(2+sqrt2)/4 for uniform attention on a 2x2 grid; prefix ignored."""

import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.analysis import attention_distance as ad

P = 16


def offset_attention(grid, offset, num_prefix):
  """[T, T] attention: each patch query attends one-hot to the patch at (row + dy, col + dx).

  A query whose target is off the grid attends to the first prefix token instead (dropped),
  or to itself without prefix tokens: either way it adds distance 0.
  Returns (weights, number of in-grid queries).
  """
  h, w = grid
  dx, dy = offset
  tokens = num_prefix + h * w
  weights = np.zeros((tokens, tokens))
  weights[:num_prefix, 0] = 1.0
  inside = 0
  for r in range(h):
    for c in range(w):
      query = num_prefix + r * w + c
      if 0 <= r + dy < h and 0 <= c + dx < w:
        weights[query, num_prefix + (r + dy) * w + c + dx] = 1.0
        inside += 1
      else:
        weights[query, 0 if num_prefix else query] = 1.0
  return weights, inside


def test_token_positions():
  np.testing.assert_array_equal(
    ad.token_positions((2, 3), 16), [[0, 0], [0, 16], [0, 32], [16, 0], [16, 16], [16, 32]]
  )
  np.testing.assert_array_equal(ad.token_positions((2, 1), (8, 4)), [[0, 0], [8, 0]])


@pytest.mark.parametrize('num_prefix', [0, 1])
def test_identity_attention_has_distance_zero(num_prefix):
  tokens = num_prefix + 12
  weights = np.broadcast_to(np.eye(tokens), (2, 3, tokens, tokens))
  np.testing.assert_array_equal(
    ad.mean_attention_distance(weights, (3, 4), P, num_prefix), np.zeros(3)
  )


def test_one_hot_offsets_give_patch_size_times_offset_length():
  grid, num_prefix = (5, 6), 1
  # One head per offset; queries whose target is off the grid attend to the class token, which
  # is dropped without renormalisation, so the mean is scaled by the in-grid fraction.
  offsets = [(1, 0), (0, 1), (2, 1), (-1, -3)]
  heads, expected = [], []
  for dx, dy in offsets:
    weights, inside = offset_attention(grid, (dx, dy), num_prefix)
    heads.append(weights)
    expected.append(P * np.hypot(dx, dy) * inside / 30)
  weights = np.stack([np.stack(heads)] * 2)  # [B=2, N=4, T, T]
  got = ad.mean_attention_distance(weights, grid, P, num_prefix)
  # float64 (eps64 = 2.2e-16): one-hot weights, so <= 30 non-zero terms per head and image,
  # hypot and the mean over 2 images: <= ~35 eps64 = 8e-15 worst case. 1e-14 (and below).
  np.testing.assert_allclose(got, expected, rtol=1e-14)
  # Per query, with every query in the grid: a 1-row grid, offset (1, 0), all but the last.
  weights, inside = offset_attention((1, 9), (1, 0), 0)
  assert inside == 8
  got = ad.mean_attention_distance(weights[None, None], (1, 9), P, 0)
  np.testing.assert_allclose(got, [P * 8 / 9], rtol=1e-14)


def test_non_square_stride():
  # Offset (dx, dy) = (1, 1) with patches 8 high and 4 wide: sqrt(8² + 4²) for in-grid queries.
  weights, inside = offset_attention((3, 3), (1, 1), 0)
  got = ad.mean_attention_distance(weights[None, None], (3, 3), (8, 4), 0)
  np.testing.assert_allclose(got, [np.hypot(8, 4) * inside / 9], rtol=1e-14)  # as above.


def test_uniform_attention_on_2x2_grid():
  weights = np.full((3, 2, 4, 4), 0.25, np.float32)
  got = ad.mean_attention_distance(jnp.asarray(weights), (2, 2), P, 0)
  # float32 work (eps = 2**-23): distances rounded (eps/2) and a sum of 16 positive terms
  # (<= 15 eps/2): 8 eps = 9.5e-7 worst case, sqrt(16)*eps = 4.8e-7 typical. 1e-6.
  np.testing.assert_allclose(got, [P * (2 + np.sqrt(2)) / 4] * 2, rtol=1e-6)
  # With a class token, uniform over 5 tokens: no renormalisation, so 4/5 of the mass counts.
  weights = np.full((1, 1, 5, 5), 0.2)
  got = ad.mean_attention_distance(weights, (2, 2), P, 1)
  # float64 again: 16 terms, ~20 eps64 = 4.4e-15 worst case. 1e-14.
  np.testing.assert_allclose(got, [P * (2 + np.sqrt(2)) / 5], rtol=1e-14)


def test_prefix_rows_and_columns_are_ignored():
  rng = np.random.default_rng(0)
  weights = rng.dirichlet(np.ones(11), size=(2, 3, 11))  # [B, N, T, T], 2 prefix + 3x3 grid.
  base = ad.mean_attention_distance(weights, (3, 3), P, 2)
  changed = weights.copy()
  changed[:, :, :2, :] = rng.uniform(size=(2, 3, 2, 11))  # Prefix query rows.
  # The same float64 sums of 81 positive terms per image and head, possibly vectorised
  # differently for another array: 2 * 81 eps64 = 3.6e-14 worst case. 5e-14.
  np.testing.assert_allclose(ad.mean_attention_distance(changed, (3, 3), P, 2), base, rtol=5e-14)
  # Independent reference: explicit loops over images, heads, queries, keys.
  pos = ad.token_positions((3, 3), P)
  ref = np.zeros(3)
  for b in range(2):
    for n in range(3):
      for i in range(9):
        for j in range(9):
          ref[n] += weights[b, n, 2 + i, 2 + j] * np.linalg.norm(pos[i] - pos[j]) / 18
  # float64 sums of positive terms: 81 (+ the mean over 2 images) against the loops' 162:
  # <= (83 + 162)*eps64 = 5.4e-14 worst case. 1e-13.
  np.testing.assert_allclose(base, ref, rtol=1e-13)


def test_attention_distances_stacks_layers_and_accepts_bfloat16():
  identity = np.broadcast_to(np.eye(5), (1, 2, 5, 5))
  uniform = jnp.full((1, 2, 5, 5), 0.2, jnp.bfloat16)
  got = ad.attention_distances([identity, uniform], (2, 2), P, 1)
  assert got.shape == (2, 2) and got.dtype == np.float64
  # 0.2 in bfloat16 is off by <= 2**-8 = 3.9e-3 relative (all weights alike); the float32
  # work adds ~1e-6: 4e-3.
  np.testing.assert_allclose(got, [[0, 0], [P * (2 + np.sqrt(2)) / 5] * 2], rtol=4e-3)


def test_wrong_token_count_is_explained():
  with pytest.raises(ValueError, match=r'T = num_prefix \+ h\*w = 1 \+ 4 = 5'):
    ad.mean_attention_distance(np.zeros((1, 1, 4, 4)), (2, 2), P, 1)
