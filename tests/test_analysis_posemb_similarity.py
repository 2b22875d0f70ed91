"""A2, position-embedding similarity: cosine similarities of constructed embeddings, and the
patch embeddings extracted from params equal what `AddPositionEmbs` adds to the tokens."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.analysis import posemb_similarity as ps
from vit_jax.models import posemb


def test_known_similarities_on_a_2x2_grid():
  # Patches (0,0), (0,1), (1,0), (1,1) with embeddings e, f, e+f, -2e (e, f orthonormal).
  embedding = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [-2.0, 0.0, 0.0]])
  sim = ps.position_similarity(jnp.asarray(embedding), (2, 2))
  assert sim.shape == (2, 2, 2, 2)
  r = 1 / np.sqrt(2)
  expected = np.array([[1, 0, r, -1], [0, 1, r, 0], [r, r, 1, -r], [-1, 0, -r, 1]])
  # float64 (eps64 = 2.2e-16): norms of 3 terms, a division, dots of 3 terms: <= ~8 eps64 =
  # 1.8e-15 worst case. 4e-15.
  np.testing.assert_allclose(sim.reshape(4, 4), expected, atol=4e-15)
  # Tile (0, 1) is patch (0, 1) against the whole grid.
  np.testing.assert_allclose(sim[0, 1], [[0, 1], [r, 0]], atol=4e-15)


def test_diagonal_is_one_and_matrix_symmetric():
  h, w = 3, 5
  embedding = np.random.default_rng(0).normal(size=(h * w, 8)) * np.arange(1, 16)[:, None]
  sim = ps.position_similarity(embedding, (h, w))
  flat = sim.reshape(h * w, h * w)
  # float64 cosines of 8-term vectors: the norm (8 terms, a sqrt), 8 divisions, a dot of 8:
  # <= ~(8/2 + 1 + 1 + 8)*eps64 = 14 eps64 = 3e-15 worst case each. The transpose pair are
  # the same products, possibly summed in another order (BLAS blocking): 2 x 8 eps64 = 3.6e-15.
  # 5e-15 for all three.
  np.testing.assert_allclose(np.diag(flat), 1.0, rtol=5e-15)
  np.testing.assert_allclose(flat, flat.T, atol=5e-15)
  assert np.all(np.abs(flat) <= 1 + 5e-15)


def test_position_similarity_rejects_class_token_row():
  with pytest.raises(ValueError, match='drop the class-token row'):
    ps.position_similarity(np.ones((5, 4)), (2, 2))


@pytest.mark.parametrize(
  'kind,num_prefix', [('learn', 1), ('learn', 0), ('learn_2d', 1), ('sincos2d', 1)]
)
def test_extraction_matches_what_the_model_adds(kind, num_prefix):
  h, w, dim = 2, 3, 8
  module = posemb.AddPositionEmbs(kind=kind, num_prefix=num_prefix)
  zeros = jnp.zeros((1, num_prefix + h * w, dim))
  variables = module.init(jax.random.key(0), zeros, (h, w))
  added = np.asarray(module.apply(variables, zeros, (h, w)))[0, num_prefix:]
  params = variables.get('params', {})  # Boxed (logical axes), as the model creates them.
  got = ps.patch_position_embedding(params, kind, (h, w), num_prefix, dim)
  assert got.shape == (h * w, dim) and got.dtype == np.float32
  np.testing.assert_array_equal(got, added)
  assert np.abs(got).max() > 0


def test_learn_2d_layout_row_half_first():
  row = np.arange(2 * 2, dtype=np.float32).reshape(1, 2, 2)  # h=2 rows, D/2=2.
  col = 10 + np.arange(3 * 2, dtype=np.float32).reshape(1, 3, 2)  # w=3 columns.
  got = ps.patch_position_embedding(
    {'pos_embedding_row': row, 'pos_embedding_col': col}, 'learn_2d', (2, 3), 1, 4
  )
  # Patch (1, 2) = token 5: row 1's half, then column 2's half.
  np.testing.assert_array_equal(got[5], [2, 3, 14, 15])


@pytest.mark.parametrize('kind', ['none', 'relative', 'relative_bias'])
def test_kinds_without_additive_embedding_raise(kind):
  with pytest.raises(ValueError, match='no additive embedding to show'):
    ps.patch_position_embedding({}, kind, (2, 2), 1, 8)


def test_shape_mismatch_names_the_param():
  params = {'pos_embedding': np.zeros((1, 5, 8))}
  with pytest.raises(ValueError, match=r'posembed_input/pos_embedding has shape \(1, 5, 8\)'):
    ps.patch_position_embedding(params, 'learn', (3, 3), 1, 8)
  with pytest.raises(ValueError, match="needs param 'pos_embedding_row'"):
    ps.patch_position_embedding(params, 'learn_2d', (2, 2), 1, 8)
