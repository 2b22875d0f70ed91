"""B2, frequency-band noise: masks partition the frequencies, the noise's spectrum lies in its
band, and a low-pass classifier is hurt by low-frequency noise only."""

import jax
import numpy as np
import pytest

from vit_jax.analysis import noise

WIDTH = 0.1 * np.pi
# Centres one width apart from 0: bands [-0.05π, 0.05π), [0.05π, 0.15π), ... up to 1.45π > π√2.
CENTRES = np.arange(15) * WIDTH


@pytest.mark.parametrize('h,w', [(30, 30), (224, 224), (16, 24)])
def test_adjacent_bands_partition_the_frequencies(h, w):
  # 224 has frequencies exactly on band edges (e.g. r = 0.25π at index (28, 0)); the edges are
  # compared after rounding, so each frequency still lands in exactly one band.
  masks = np.stack([noise.band_mask(h, w, c, WIDTH) for c in CENTRES])
  np.testing.assert_array_equal(masks.sum(axis=0), 1)
  assert np.all(masks.any(axis=(1, 2))[:5])  # The low bands are all non-empty.


def test_band_mask_convention():
  # Unshifted layout: index 0 is frequency 0; along an axis of 8 the frequencies are k*π/4.
  mask = noise.band_mask(8, 8, 0.0)
  assert mask.sum() == 1 and mask[0, 0]  # Only the DC term is within 0.05π of 0.
  mask = noise.band_mask(8, 8, 0.25 * np.pi)
  np.testing.assert_array_equal(np.argwhere(mask), [[0, 1], [0, 7], [1, 0], [7, 0]])
  # [0.95π, 1.05π): the Nyquist frequencies (index 4), r = π, and r = sqrt(π² + (π/4)²).
  mask = noise.band_mask(8, 8, np.pi)
  np.testing.assert_array_equal(np.argwhere(mask), [[0, 4], [1, 4], [4, 0], [4, 1], [4, 7], [7, 4]])
  # Symmetric under k -> -k, so the filtered noise of a real image is real.
  mask = noise.band_mask(12, 10, 0.4 * np.pi, 0.2 * np.pi)
  np.testing.assert_array_equal(mask, np.roll(mask[::-1, ::-1], (1, 1), axis=(0, 1)))
  with pytest.raises(ValueError, match='width must be > 0'):
    noise.band_mask(8, 8, 0.5, 0.0)


def test_noise_spectrum_lies_in_the_band():
  centre = 0.5 * np.pi
  got = noise.band_noise(0, (3, 32, 32, 2), 0.1, centre)
  assert got.shape == (3, 32, 32, 2) and got.dtype == np.float32
  spectrum = np.abs(np.fft.fft2(got.astype(np.float64), axes=(1, 2)))
  mask = noise.band_mask(32, 32, centre)[None, :, :, None]
  inside = np.broadcast_to(mask, spectrum.shape)
  # Out of band there is only the float32 rounding of the FFT round trip (eps = 2**-23):
  # ~sqrt(2*log2(1024))*eps/2 per pixel, white: ~1e-7 of the in-band peak typical; at worst
  # its norm, ~2*log2(1024)*eps*||F|| with ||F|| ~ sqrt(80 in-band terms) * 3.3, all in one
  # frequency: ~1e-5 of the peak (7.5). 1e-5.
  assert spectrum[~inside].max() < 1e-5 * spectrum[inside].max()
  # In the band it is the spectrum of the ±0.1 sign noise: |F| ~ 0.1 * 32 on average.
  assert 1.5 < spectrum[inside].mean() < 5


def test_noise_is_the_filtered_sign_noise_and_reproducible():
  key = jax.random.key(3)
  got = noise.band_noise(key, (2, 8, 8, 3), 0.5, 0.0)
  signs = 0.5 * np.sign(np.asarray(jax.random.normal(key, (2, 8, 8, 3))))
  # Centre 0 on an 8x8 image keeps only the DC term: each image/channel is constant, its mean.
  # float32 FFT round trip of values 0.5 in magnitude: ~sqrt(2*log2(64))*eps*0.5 = 2e-7
  # typical, 2*log2(64)*eps*||x|| (= 4) = 6e-6 worst case. 1e-6.
  np.testing.assert_allclose(
    got, np.broadcast_to(signs.mean(axis=(1, 2), keepdims=True), got.shape), atol=1e-6
  )
  np.testing.assert_array_equal(noise.band_noise(3, (2, 8, 8, 3), 0.5, 0.0), got)
  assert not np.array_equal(noise.band_noise(4, (2, 8, 8, 3), 0.5, 0.0), got)


def test_low_pass_classifier_is_hurt_by_low_frequencies_only():
  # Labels are the sign of the projection on cos(2π x / 16), radial frequency 0.125π (inside
  # the band centred at 0.1π). The noise's projection on that unit vector is ~N(0, eps²);
  # the images' is 0.5 eps, so in-band noise flips ~31% of them. Other bands are orthogonal.
  size, eps, count = 16, 1.0, 200
  pattern = np.cos(2 * np.pi * np.arange(size) / size)[None, :] * np.ones((size, 1))
  unit = pattern / np.linalg.norm(pattern)
  labels = np.random.default_rng(0).integers(0, 2, count)
  images = (2 * labels - 1)[:, None, None, None] * 0.5 * eps * unit[None, :, :, None]
  calls = []

  def predict_fn(batch):
    calls.append(len(batch))
    projection = np.einsum('bhwc,hw->b', batch, unit)
    return np.stack([-projection, projection], axis=1)

  result = noise.noise_robustness(
    predict_fn, images, labels, [0.0, 0.1 * np.pi, 0.8 * np.pi], eps, seed=0, batch_size=64
  )
  assert calls[:4] == [64, 64, 64, 8]  # Batched, the remainder last.
  assert result['clean_accuracy'] == 1.0
  np.testing.assert_array_equal(result['frequencies'], [0.0, 0.1 * np.pi, 0.8 * np.pi])  # given.
  drop = result['accuracy_drop']
  assert drop[0] == 0 and drop[2] == 0
  assert 0.2 < drop[1] < 0.45
  # float64: drop = clean - noisy accuracy, 1 - drop recovers noisy to ~2 eps64. 1e-15.
  np.testing.assert_allclose(result['noisy_accuracy'], 1.0 - drop, rtol=1e-15)
  # One-hot labels give the same numbers (same seed, centre index and batches: same noise).
  again = noise.noise_robustness(
    predict_fn, images, np.eye(2)[labels], [0.0, 0.1 * np.pi], eps, seed=0, batch_size=64
  )
  np.testing.assert_array_equal(again['accuracy_drop'], drop[:2])
