"""Principal components of the patch-embedding filters (ViT paper, Fig. 7 left; analysis A1).

The patch embedding is a P x P convolution with stride P whose kernel [P, P, C, D] holds D
filters. Each filter, flattened, is a point in R^(P*P*C); the paper centres the D points
(subtracts the mean filter) and shows the top 28 principal components, each reshaped to
[P, P, C] and min-max scaled to an image. They resemble plausible basis functions for a
low-dimensional representation of the fine structure within each patch.
"""

from typing import NamedTuple

import numpy as np


class FilterPCA(NamedTuple):
  """Principal components of D filters of shape [P, P, C] (float64 numpy arrays).

  components: [k, P, P, C], orthonormal as flattened vectors, sign chosen so that the entry
    of largest magnitude of each component is positive (SVD signs are otherwise arbitrary).
  explained_variance: [k], variance of the filters along each component (ddof=1), in
    non-increasing order.
  explained_variance_ratio: [k], explained_variance over the total variance of the filters.
  """

  components: np.ndarray
  explained_variance: np.ndarray
  explained_variance_ratio: np.ndarray


def patch_filter_pca(kernel, num_components: int = 28) -> FilterPCA:
  """PCA of the patch-embedding filters.

  Args:
    kernel: the `embedding` conv kernel [P, P, C, D] (numpy or jax array, any float dtype).
    num_components: how many leading components to return (the paper shows 28).

  Returns:
    FilterPCA with k = min(num_components, P*P*C, D - 1) components: D centred points span at
    most D - 1 dimensions, so further components would be arbitrary.
  """
  kernel = np.asarray(kernel, np.float64)
  if kernel.ndim != 4:
    raise ValueError(
      f'kernel must be the [P, P, C, D] patch-embedding kernel, got shape {kernel.shape}.'
    )
  *filter_shape, num_filters = kernel.shape
  if num_filters < 2:
    raise ValueError(f'PCA needs at least 2 filters (last axis of the kernel), got {num_filters}.')
  if num_components < 1:
    raise ValueError(f'num_components must be >= 1, got {num_components}.')
  points = kernel.reshape(-1, num_filters).T  # [D, P*P*C]: one row per filter.
  points = points - points.mean(axis=0, keepdims=True)
  _, singular, vt = np.linalg.svd(points, full_matrices=False)
  k = min(num_components, points.shape[1], num_filters - 1)
  components = vt[:k]
  # Deterministic signs: the largest-magnitude entry of every component is positive.
  largest = components[np.arange(k), np.abs(components).argmax(axis=1)]
  components = components * np.where(largest < 0, -1.0, 1.0)[:, None]
  variance = singular**2 / (num_filters - 1)
  total = variance.sum()
  ratio = variance[:k] / total if total > 0 else np.zeros(k)
  return FilterPCA(components.reshape(k, *filter_shape), variance[:k], ratio)


def filter_images(components) -> np.ndarray:
  """Each component [P, P, C] min-max scaled to [0, 1] for display: [k, P, P, C] float64.

  A constant component (max == min) becomes 0.5 everywhere (mid-grey).
  """
  components = np.asarray(components, np.float64)
  axes = tuple(range(1, components.ndim))
  low = components.min(axis=axes, keepdims=True)
  span = components.max(axis=axes, keepdims=True) - low
  scaled = (components - low) / np.where(span > 0, span, 1.0)
  return np.where(span > 0, scaled, 0.5)
