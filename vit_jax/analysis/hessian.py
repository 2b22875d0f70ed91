"""Top Hessian eigenvalues of a loss by power iteration (HDVW Fig. 1 and 4; analysis B3).

"How Do Vision Transformers Work?" (Park & Kim, ICLR 2022) compares models by the spectrum of
the Hessian H = ∇²L(θ) of the training loss, one mini-batch at a time: for each batch the k
(= 5) eigenvalues of largest magnitude, pooled over many batches into a histogram. Large
positive eigenvalues mean a sharp landscape, negative ones a non-convex one.

Definitions used here (PyHessian's conventions):
  * Hessian-vector product Hv = d/dε ∇L(θ + εv) |ε=0, forward-over-reverse (jvp of grad): one
    forward and one backward pass, the Hessian is never formed.
  * Power iteration on the flattened parameter vector θ ∈ R^n: v_0 ~ N(0, I), then
    v ← v - Σ_j (u_j·v) u_j (deflation against the eigenvectors u_j found so far),
    v ← v / ||v||,  λ = v·Hv (the Rayleigh quotient, signed),  v ← Hv; repeated until
    |λ_t - λ_{t-1}| / (|λ_{t-1}| + 1e-6) < tol or max_iter HVPs. The iteration converges to
    the remaining eigenvalue of largest |λ|, so a dominant negative eigenvalue is found with its
    sign. The last normalised v is stored as u_i.
  * `with_l2` adds (wd / 2)·||θ||² to the loss, which shifts every eigenvalue by exactly wd
    (the paper's loss is NLL + L2).

All vector work happens in float32 on the device inside one jitted step (HVP, Rayleigh quotient,
deflation, normalisation), compiled once per (loss function, params structure, batch shape)
and reused for every iteration, eigenvalue and batch; only the scalar λ comes to the host.
"""

import functools
from typing import Any, Callable, Iterable, NamedTuple

import flax.linen as nn
import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import tqdm

PyTree = Any


class Eigen(NamedTuple):
  """values: float64 [k], the signed eigenvalues in the order found (by |λ|, largest first, up
  to the tolerance).
  iterations: int [k], the HVPs spent on each."""

  values: np.ndarray
  iterations: np.ndarray


def hvp(loss_fn: Callable[[PyTree], jax.Array], params: PyTree, vector: PyTree) -> PyTree:
  """Hessian-vector product H(params)·vector of a scalar `loss_fn(params)`.

  Forward-over-reverse: jax.jvp of jax.grad(loss_fn) at `params` along `vector` (a pytree
  with the structure and shapes of `params`). Pure, so it can be jitted or vmapped.

  Returns:
    A pytree like `params`: Σ_j ∂²L/∂θ_i∂θ_j v_j for every parameter θ_i.
  """
  return jax.jvp(jax.grad(loss_fn), (params,), (vector,))[1]


def with_l2(loss_fn: Callable[..., jax.Array], weight_decay: float) -> Callable[..., jax.Array]:
  """loss_fn(params, *args) + weight_decay / 2 · Σ ||leaf||² over every params leaf.

  Every leaf counts (biases and norms too), so the Hessian becomes H + weight_decay·I and each
  eigenvalue moves by exactly weight_decay. Extra arguments (a batch) are passed through. Build
  the wrapped function once and reuse it: the jitted HVP is cached per function object.
  """

  def loss(params, *args, **kwargs):
    squares = sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(params))
    return loss_fn(params, *args, **kwargs) + 0.5 * weight_decay * squares

  return loss


def _as_float32(params: PyTree) -> PyTree:
  """Unboxed params in float32 (HVPs in bfloat16 are too coarse)."""

  def cast(path, x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(
        f'params leaf {jax.tree_util.keystr(path)} is {x.dtype}; the Hessian is '
        'taken over floating leaves only: pass the trainable params alone.'
      )
    return x.astype(jnp.float32)

  return jax.tree_util.tree_map_with_path(cast, nn.meta.unbox(params))


@functools.partial(jax.jit, static_argnums=0)
def _power_step(loss_fn, params, args, v, basis):
  """One deflated power-iteration step on the flattened parameters.

  Args:
    loss_fn: scalar loss_fn(params, *args) (static: one compilation per function object).
    params: the point θ (pytree).
    args: tuple of extra loss arguments (a batch; traced, so batches share the compilation).
    v: float32 [n], the current iterate (any norm).
    basis: float32 [k, n], the eigenvectors found so far as rows; zero rows are unused.

  Returns:
    (λ float32 [], the Rayleigh quotient of the deflated, normalised v;
     v float32 [n], that unit vector; hv float32 [n], H·v, the next iterate).
  """
  v = v - basis.T @ (basis @ v)
  norm = jnp.linalg.norm(v)
  v = jnp.where(norm > 0, v / jnp.where(norm > 0, norm, 1.0), v)  # H = 0 on the rest: stays 0
  _, unravel = ravel_pytree(params)
  hv_tree = hvp(lambda p: loss_fn(p, *args), params, unravel(v))
  hv = ravel_pytree(hv_tree)[0].astype(jnp.float32)
  return jnp.vdot(v, hv), v, hv


def _top_eigen(loss_fn, params, args, k, key, tol, max_iter) -> Eigen:
  """Power iteration with deflation for the k largest-|λ| eigenvalues (see module doc)."""
  if k < 1 or max_iter < 1:
    raise ValueError(f'k and max_iter must be >= 1, got k={k}, max_iter={max_iter}.')
  n = sum(x.size for x in jax.tree.leaves(params))
  if k > n:
    raise ValueError(f'k={k} eigenvalues asked of a Hessian of size {n}; use k <= {n}.')
  basis = jnp.zeros((k, n), jnp.float32)
  values, iterations = np.zeros(k, np.float64), np.zeros(k, np.int64)
  for i in range(k):
    v = jax.random.normal(jax.random.fold_in(key, i), (n,), jnp.float32)
    lam_old = None
    for t in range(1, max_iter + 1):
      lam, unit, v = _power_step(loss_fn, params, args, v, basis)
      lam = float(lam)
      if lam_old is not None and abs(lam - lam_old) / (abs(lam_old) + 1e-6) < tol:
        break
      lam_old = lam
    values[i], iterations[i] = lam, t
    basis = basis.at[i].set(unit)
  return Eigen(values, iterations)


def top_eigenvalues(
  loss_fn: Callable[[PyTree], jax.Array],
  params: PyTree,
  k: int = 5,
  *,
  seed: int = 0,
  tol: float = 1e-3,
  max_iter: int = 100,
) -> Eigen:
  """The k Hessian eigenvalues of largest magnitude of a scalar `loss_fn(params)`.

  Power iteration with HVPs and deflation on the flattened params (module doc); each eigenvalue
  stops when |λ_t - λ_{t-1}| / (|λ_{t-1}| + 1e-6) < tol, or after max_iter HVPs. Params may
  hold flax partitioning boxes (unboxed here); every leaf must be floating and is cast to float32.

  Args:
    loss_fn: params -> float32 [] (a fixed mini-batch closed over). Reuse the same function
      object across calls to reuse the compiled HVP.
    params: pytree of arrays, the point θ.
    k: number of eigenvalues.
    seed: PRNG seed of the starting vectors (eigenvalue i starts from fold_in(key(seed), i)).
    tol: relative-change tolerance on the Rayleigh quotient.
    max_iter: most HVPs per eigenvalue.

  Returns:
    Eigen(values float64 [k], iterations int [k]).
  """
  return _top_eigen(loss_fn, _as_float32(params), (), k, jax.random.key(seed), tol, max_iter)


def spectrum_summary(values: np.ndarray) -> dict[str, float]:
  """Summary of pooled eigenvalues (any shape, e.g. batch_spectra's [num_batches, k]).

  Returns:
    dict(num: int, the number of eigenvalues; negative_fraction: share of λ < 0;
    mean_positive: mean of the λ > 0 (nan when none); max, min: extremes).
  """
  values = np.asarray(values, np.float64).ravel()
  if not values.size:
    raise ValueError('spectrum_summary needs at least one eigenvalue.')
  positive = values[values > 0]
  return dict(
    num=int(values.size),
    negative_fraction=float(np.mean(values < 0)),
    mean_positive=float(positive.mean()) if positive.size else float('nan'),
    max=float(values.max()),
    min=float(values.min()),
  )


def batch_spectra(
  loss_for_batch: Callable[[PyTree, Any], jax.Array],
  params: PyTree,
  batches: Iterable[Any],
  k: int = 5,
  *,
  seed: int = 0,
  tol: float = 1e-3,
  max_iter: int = 100,
  progress: bool = True,
) -> np.ndarray:
  """Top-k Hessian eigenvalues for each mini-batch (HDVW Fig. 1/4 pools these).

  The batch is an argument of the jitted step, so batches of one shape share one compilation.

  Args:
    loss_for_batch: (params, batch) -> float32 [], e.g. with_l2(NLL, wd) on a training batch.
    params: pytree, the point θ.
    batches: iterable of batches (any pytree of arrays; same shapes to avoid recompiling).
    k, tol, max_iter: as in top_eigenvalues.
    seed: batch b, eigenvalue i starts from fold_in(fold_in(key(seed), b), i).
    progress: show a tqdm bar over batches.

  Returns:
    float64 [num_batches, k], row b = the top-k eigenvalues on batch b, as top_eigenvalues.
  """
  params = _as_float32(params)
  key = jax.random.key(seed)
  rows = []
  for b, batch in enumerate(tqdm.tqdm(batches, desc='Hessian spectra', disable=not progress)):
    eig = _top_eigen(loss_for_batch, params, (batch,), k, jax.random.fold_in(key, b), tol, max_iter)
    rows.append(eig.values)
  return np.stack(rows) if rows else np.zeros((0, k), np.float64)
