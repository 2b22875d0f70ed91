"""A1, PCA of the patch-embedding filters: orthonormal components in order of variance, and a
planted basis with planted variances is recovered exactly."""

import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.analysis import filters

P, C = 4, 3
FEATURES = P * P * C  # 48


def planted_kernel(variances, num_filters=64, noise=0.0, seed=0):
  """Kernel [P, P, C, D] whose centred filters are sum_i c_i * basis_i, with the sample
  variance (ddof=1) of the coefficients c_i exactly `variances[i]`; returns (kernel, basis)."""
  rng = np.random.default_rng(seed)
  r = len(variances)
  basis = np.linalg.qr(rng.normal(size=(FEATURES, r)))[0].T  # [r, F], orthonormal rows.
  coeffs = rng.normal(size=(num_filters, r))
  coeffs -= coeffs.mean(axis=0)
  coeffs = np.linalg.qr(coeffs)[0]  # Orthonormal columns, still centred.
  coeffs *= np.sqrt(np.asarray(variances) * (num_filters - 1))
  mean_filter = rng.normal(size=FEATURES)  # Removed by the centring.
  points = mean_filter + coeffs @ basis + noise * rng.normal(size=(num_filters, FEATURES))
  return points.T.reshape(P, P, C, num_filters), basis


def test_planted_basis_and_variances_are_recovered():
  variances = [9.0, 4.0, 1.0]
  kernel, basis = planted_kernel(variances)
  pca = filters.patch_filter_pca(kernel, num_components=3)
  assert pca.components.shape == (3, P, P, C)
  flat = pca.components.reshape(3, -1)
  # Distinct variances: each component is the planted basis vector itself, up to sign.
  # float64 (eps64 = 2.2e-16) SVD of a 64 x 48 matrix, backward error ~48*eps64*sigma_1 with
  # sigma_1/sigma_3 = 3: singular values within ~3e-14 relative (variances twice that), the
  # vectors' angle errors enter |cos| squared, plus a 48-term dot (48 eps64 = 1e-14). 1e-13;
  # the ratio also divides by a sum of 48 variances: 2e-13.
  np.testing.assert_allclose(np.abs(np.sum(flat * basis, axis=1)), 1.0, atol=1e-13)
  np.testing.assert_allclose(pca.explained_variance, variances, rtol=1e-13)
  np.testing.assert_allclose(pca.explained_variance_ratio, np.array(variances) / 14, rtol=2e-13)


def test_planted_subspace_is_recovered_with_noise():
  # Equal variances: only the subspace is defined. Noise of std 0.01 per entry against signal
  # variance 1 tilts it by ~0.01 rad, so the cosines of the principal angles stay > 0.999.
  kernel, basis = planted_kernel([1.0] * 5, noise=0.01, seed=1)
  pca = filters.patch_filter_pca(kernel, num_components=5)
  cosines = np.linalg.svd(pca.components.reshape(5, -1) @ basis.T, compute_uv=False)
  assert cosines.min() > 0.999


def test_components_orthonormal_and_variance_non_increasing():
  kernel = np.random.default_rng(2).normal(size=(P, P, C, 100)).astype(np.float32)
  pca = filters.patch_filter_pca(jnp.asarray(kernel))  # jax input works too.
  assert pca.components.shape == (28, P, P, C)
  flat = pca.components.reshape(28, -1)
  # Rows of the SVD's V^T are orthonormal to ~48*eps64 = 1e-14, and the test's 48-term dots
  # add as much: 5e-14.
  np.testing.assert_allclose(flat @ flat.T, np.eye(28), atol=5e-14)
  assert np.all(np.diff(pca.explained_variance) <= 0)
  assert np.all(pca.explained_variance > 0)
  # The ratio is relative to the total variance of all 48 directions, so 28 explain < 1.
  assert 0.5 < pca.explained_variance_ratio.sum() < 1.0
  # Signs are deterministic: the largest-magnitude entry of each component is positive.
  assert np.all(flat[np.arange(28), np.abs(flat).argmax(axis=1)] > 0)


def test_number_of_components_is_bounded_by_rank():
  # D = 6 centred filters span at most 5 dimensions.
  kernel = np.random.default_rng(3).normal(size=(P, P, C, 6))
  pca = filters.patch_filter_pca(kernel, num_components=28)
  assert pca.components.shape == (5, P, P, C)
  # 5 ratios of a total over 48 variances (the rest ~0): (48 + 5)*eps64 = 1.2e-14. 2e-14.
  np.testing.assert_allclose(pca.explained_variance_ratio.sum(), 1.0, rtol=2e-14)
  # Variances agree with numpy's covariance (ddof=1) of the filters. Both float64 LAPACK
  # (SVD; eigvalsh of the 48 x 48 covariance): errors ~48*eps64 of the largest (13.5), i.e.
  # ~3e-14 relative to the smallest compared (5.5), each: 1e-13.
  cov_eigs = np.linalg.eigvalsh(np.cov(kernel.reshape(-1, 6)))[::-1][:5]
  np.testing.assert_allclose(pca.explained_variance, cov_eigs, rtol=1e-13)


def test_bad_kernels_are_rejected():
  with pytest.raises(ValueError, match=r'\[P, P, C, D\]'):
    filters.patch_filter_pca(np.zeros((4, 4, 3)))
  with pytest.raises(ValueError, match='at least 2 filters'):
    filters.patch_filter_pca(np.zeros((4, 4, 3, 1)))


def test_filter_images_are_min_max_scaled():
  comps = np.stack([np.arange(12.0).reshape(2, 2, 3) - 5, np.full((2, 2, 3), 7.0)])
  images = filters.filter_images(comps)
  assert images.shape == (2, 2, 2, 3)
  # float64: (x - min) / (max - min) of small integers, one rounding (eps64 / 2). 1e-15.
  np.testing.assert_allclose(images[0], (np.arange(12.0) / 11).reshape(2, 2, 3), rtol=1e-15)
  np.testing.assert_array_equal(images[1], 0.5)  # A constant component is exactly mid-grey.
