"""Hessian spectra (analysis B3): exact answers on quadratics with a known spectrum."""

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.analysis import hessian

# Dominant eigenvalue negative: power iteration must return it with its sign. The remaining
# 14 of the 20 dimensions have eigenvalue 0.
SPECTRUM = np.array([-10.0, 7.0, 5.0, 3.0, 1.0, 0.5])
SHAPES = {'w': (3, 4), 'b': (8,)}  # 20 parameters in two leaves: flattening is exercised.
N = 20


def _matrix(spectrum, seed=0):
  """A = Q diag(spectrum, 0...) Qᵀ with Q a random orthonormal basis of R^N."""
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(N, N)))
  full = np.zeros(N)
  full[: len(spectrum)] = spectrum
  return (q * full) @ q.T


# Power iteration stops when the Rayleigh quotient changes by < tol relative. With the next
# eigenvalue at ratio r, what is left is ~tol * r²/(1 - r²) <= 1.04 tol here (r <= 5/7), and
# deflating against the previous eigenvector (itself off by its own error) shifts the next
# eigenvalue by up to that error, |δλ_prev| / |λ|: ≲ 4 tol in all for this spectrum. float32
# Rayleigh quotients of 20 dimensions add ~20*eps*|λ_max| / |λ| = 2e-5 for λ = 1.25 (eps =
# 2**-23).


def _flat(params):
  return jnp.concatenate([params['b'].ravel(), params['w'].ravel()])  # dict leaves sorted


def _params(seed=1):
  rng = np.random.default_rng(seed)
  return {name: jnp.asarray(rng.normal(size=shape), jnp.float32) for name, shape in SHAPES.items()}


def _quadratic(a, counter=None):
  a = jnp.asarray(a, jnp.float32)

  def loss(params, batch=None):
    if counter is not None:
      counter.append(1)  # runs once per trace, not per call of the compiled function
    x = _flat(params) if batch is None else _flat(params) - batch
    return 0.5 * x @ a @ x

  return loss


def test_top_eigenvalues_recovers_signed_spectrum_and_compiles_once():
  traces = []
  eig = hessian.top_eigenvalues(_quadratic(_matrix(SPECTRUM), traces), _params(), k=5)
  assert eig.values.dtype == np.float64 and eig.values.shape == (5,)
  # Default tol 1e-3 (see the note above _flat): ≲ 4e-3. 1e-2.
  np.testing.assert_allclose(eig.values, SPECTRUM[:5], rtol=1e-2)
  assert eig.values[0] < 0
  assert eig.iterations.shape == (5,) and np.all(eig.iterations >= 2)
  assert np.all(eig.iterations < 100)  # converged by tolerance, not by max_iter
  assert len(traces) == 1  # one trace for every iteration of every eigenvalue


def test_max_iter_caps_the_iterations():
  eig = hessian.top_eigenvalues(_quadratic(_matrix(SPECTRUM)), _params(), k=2, max_iter=3)
  np.testing.assert_array_equal(eig.iterations, [3, 3])


def test_with_l2_shifts_every_eigenvalue_by_weight_decay():
  wd = 0.25
  base = _quadratic(_matrix(SPECTRUM))
  eig = hessian.top_eigenvalues(hessian.with_l2(base, wd), _params(), k=5, tol=1e-5)
  # tol 1e-5 (see the note above _flat): ≲ 4e-5, plus float32 rounding ≲ 2e-5. 2e-4.
  np.testing.assert_allclose(eig.values, SPECTRUM[:5] + wd, rtol=2e-4)
  # And the loss itself: + wd/2 ||θ||². The same quadratic on both sides; the L2 term's 20
  # squares are summed per leaf on one side, at once on the other: <= 20*eps of it (0.84 of
  # a loss of 3.6) and one rounding of the sum: ~7e-7 worst case. 1e-6.
  params = _params()
  expected = base(params) + 0.5 * wd * jnp.sum(_flat(params) ** 2)
  np.testing.assert_allclose(hessian.with_l2(base, wd)(params), expected, rtol=1e-6)


def test_hvp_matches_explicit_hessian():
  def loss(params):
    return jnp.sum(jnp.tanh(params['w'] @ params['v']) ** 2) + jnp.sum(jnp.sin(params['w']))

  rng = np.random.default_rng(0)
  params = {
    'w': jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
    'v': jnp.asarray(rng.normal(size=(2,)), jnp.float32),
  }
  vector = {
    'w': jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
    'v': jnp.asarray(rng.normal(size=(2,)), jnp.float32),
  }
  flat_params, unravel = ravel_pytree(params)
  flat_vector = ravel_pytree(vector)[0]
  explicit = jax.hessian(lambda x: loss(unravel(x)))(flat_params) @ flat_vector
  got = jax.jit(hessian.hvp, static_argnums=0)(loss, params, vector)
  # Two float32 programs: the explicit Hessian (entries <= 3.3, ~10 roundings each through
  # tanh and sin) times v is a sum of 8 terms with sum |H v| <= 8.2: ~sqrt(8 + 10)*eps*8.2 =
  # 4e-6 typical, (8 + 10)*eps*8.2 = 1.8e-5 worst case. atol 1e-5 (+ rtol 1e-5).
  np.testing.assert_allclose(ravel_pytree(got)[0], explicit, rtol=1e-5, atol=1e-5)


def test_batch_spectra_one_compile_for_all_batches():
  traces = []
  loss = _quadratic(_matrix(SPECTRUM), traces)
  rng = np.random.default_rng(2)
  batches = [rng.normal(size=N).astype(np.float32) for _ in range(3)]
  spectra = hessian.batch_spectra(loss, _params(), batches, k=3, progress=False)
  assert spectra.shape == (3, 3) and spectra.dtype == np.float64
  # The Hessian of a quadratic is the same at every batch. Default tol 1e-3: ≲ 4e-3. 1e-2.
  np.testing.assert_allclose(spectra, np.tile(SPECTRUM[:3], (3, 1)), rtol=1e-2)
  assert len(traces) == 1


def test_spectrum_summary_numbers():
  values = np.array([[-2.0, 1.0, 3.0], [4.0, -1.0, 0.0]])
  summary = hessian.spectrum_summary(values)
  assert summary == dict(  # float64: a count's ratio and a mean of 2 (<= 2 eps64 each).
    num=6,
    negative_fraction=pytest.approx(2 / 6, rel=1e-15),
    mean_positive=pytest.approx(8 / 3, rel=1e-15),
    max=4.0,
    min=-2.0,
  )
  assert np.isnan(hessian.spectrum_summary(np.array([-1.0, 0.0]))['mean_positive'])


def test_rejects_more_eigenvalues_than_parameters():
  with pytest.raises(ValueError, match='k <= 20'):
    hessian.top_eigenvalues(_quadratic(_matrix(SPECTRUM)), _params(), k=21)
