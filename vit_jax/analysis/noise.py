"""Robustness to frequency-band noise ("How Do Vision Transformers Work?", Fig. 2b; analysis B2).

Noise eps * sign(N(0, 1)) per pixel and channel is band-pass filtered in the 2-D Fourier domain
to a ring of radial frequencies around a centre f in [0, π] (width ~0.1π), its phase kept; the
real part of the inverse FFT is added to the image. The metric is clean accuracy - noisy
accuracy as a function of f. The paper's finding: CNNs are hurt most by high-frequency noise,
ViTs are robust to it and more hurt by low-frequency noise.

Frequency convention (used by `band_mask`): the mask is in the *unshifted* layout of
`np.fft.fft2` (index 0 is frequency 0; `np.fft.fftshift(mask)` gives the centred picture).
Along each axis of length n the angular frequency of index i is 2π * |fftfreq(n)[i]|, in
[0, π]; the radial frequency is r = sqrt(r_y² + r_x²), up to π√2 in the corners. A band is
the half-open ring centre - width/2 <= r < centre + width/2, so bands whose centres are one
width apart partition the frequencies (edges are compared after rounding to 1e-9, so that
centre + width/2 and next_centre - width/2 agree exactly).
"""

from collections.abc import Callable
from collections.abc import Sequence
import functools

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_WIDTH = 0.1 * np.pi


def _radial_frequency(h: int, w: int) -> np.ndarray:
  fy = 2 * np.pi * np.abs(np.fft.fftfreq(h))
  fx = 2 * np.pi * np.abs(np.fft.fftfreq(w))
  return np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def band_mask(h: int, w: int, centre: float, width: float = DEFAULT_WIDTH) -> np.ndarray:
  """Ring of radial frequencies: bool [h, w] in the unshifted FFT layout (see module doc).

  Args:
    h, w: the image size.
    centre: centre of the ring in radians per pixel, in [0, π].
    width: width of the ring in radians per pixel.
  """
  if width <= 0:
    raise ValueError(f'band width must be > 0 radians per pixel, got {width}.')
  radius = np.round(_radial_frequency(h, w), 9)
  return (radius >= np.round(centre - width / 2, 9)) & (radius < np.round(centre + width / 2, 9))


def band_noise(
  key_or_seed, shape: Sequence[int], eps: float, centre: float, width: float = DEFAULT_WIDTH
) -> np.ndarray:
  """Band-limited sign noise for images [B, H, W, C].

  Args:
    key_or_seed: a jax PRNG key or an int seed.
    shape: (B, H, W, C).
    eps: amplitude of the sign noise before filtering.
    centre: centre frequency of the band in [0, π]; width: its width (see `band_mask`).

  Returns:
    float32 [B, H, W, C]: Re(IFFT2(mask * FFT2(eps * sign(N(0, 1))))) over H and W. The mask
    is symmetric (it depends on |frequency|), so the imaginary part is only rounding error.
  """
  if len(shape) != 4:
    raise ValueError(f'noise shape must be [B, H, W, C], got {tuple(shape)}.')
  if isinstance(key_or_seed, (int, np.integer)):
    key_or_seed = jax.random.key(int(key_or_seed))
  _, h, w, _ = shape
  mask = band_mask(h, w, centre, width)
  return np.asarray(_filtered_sign_noise(key_or_seed, tuple(shape), eps, mask), np.float32)


@functools.partial(jax.jit, static_argnums=1)
def _filtered_sign_noise(key, shape, eps, mask):
  signs = eps * jnp.sign(jax.random.normal(key, shape, jnp.float32))
  spectrum = jnp.fft.fft2(signs, axes=(1, 2)) * mask[None, :, :, None]
  return jnp.fft.ifft2(spectrum, axes=(1, 2)).real


def _num_correct(predict_fn, images, labels) -> int:
  predictions = np.asarray(predict_fn(images)).argmax(axis=-1)
  return int(np.sum(predictions == labels))


def noise_robustness(
  predict_fn: Callable,
  images,
  labels,
  centres: Sequence[float],
  eps: float,
  seed: int = 0,
  batch_size: int = 128,
  width: float = DEFAULT_WIDTH,
) -> dict[str, np.ndarray | float]:
  """Accuracy drop under band noise at each centre frequency.

  Args:
    predict_fn: images [b, H, W, C] float32 -> logits [b, K] (numpy or jax).
    images: [B, H, W, C] in the model's input range; the noise is added without clipping.
    labels: [B] int class ids, or [B, K] one-hot / soft labels (argmax taken).
    centres: F centre frequencies in [0, π].
    eps: amplitude of the sign noise before band filtering.
    seed: noise seed; batch i at centre index f uses key fold_in(fold_in(key(seed), f), i).
    batch_size: images per predict_fn call.
    width: band width in radians per pixel.

  Returns:
    dict with 'frequencies' float64 [F] (the centres), 'clean_accuracy' float,
    'noisy_accuracy' float64 [F] and 'accuracy_drop' float64 [F] = clean - noisy.
  """
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels)
  if labels.ndim == 2:
    labels = labels.argmax(axis=-1)
  if images.ndim != 4 or labels.shape != images.shape[:1]:
    raise ValueError(
      f'images must be [B, H, W, C] with labels [B] (or [B, K]), got '
      f'{images.shape} and {labels.shape}.'
    )
  count = len(images)
  starts = range(0, count, batch_size)
  clean = (
    sum(
      _num_correct(predict_fn, images[s : s + batch_size], labels[s : s + batch_size])
      for s in starts
    )
    / count
  )
  root = jax.random.key(seed)
  noisy = np.zeros(len(centres))
  for f, centre in enumerate(centres):
    correct = 0
    for i, s in enumerate(starts):
      batch = images[s : s + batch_size]
      key = jax.random.fold_in(jax.random.fold_in(root, f), i)
      noise = band_noise(key, batch.shape, eps, centre, width)
      correct += _num_correct(predict_fn, batch + noise, labels[s : s + batch_size])
    noisy[f] = correct / count
  return {
    'frequencies': np.asarray(centres, np.float64),
    'clean_accuracy': clean,
    'noisy_accuracy': noisy,
    'accuracy_drop': clean - noisy,
  }
