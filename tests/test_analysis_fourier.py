"""B1, Fourier analysis of feature maps: parity with a full FFT, known values for a planted
cosine, white noise flat, blurring and uniform token mixing lower the highest frequency."""

import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.analysis import fourier

H = 8  # 8x8 grid: frequencies 0, π/4, π/2, 3π/4.


def as_tokens(maps, num_prefix=1, seed=0):
  """maps [B, C, h, w] -> tokens [B, num_prefix + h*w, C], prefix tokens random (ignored)."""
  b, c, h, w = maps.shape
  prefix = np.random.default_rng(seed).normal(size=(b, num_prefix, c)) * 100
  return np.concatenate([prefix, maps.transpose(0, 2, 3, 1).reshape(b, h * w, c)], axis=1)


def fft_reference(maps):
  """The paper's recipe with a full FFT: log(|FFT2| + 1e-6), fftshift, mean, half diagonal."""
  h = maps.shape[-1]
  spectrum = np.fft.fftshift(np.log(np.abs(np.fft.fft2(maps)) + 1e-6), axes=(-2, -1))
  diagonal = np.diagonal(spectrum.mean(axis=(0, 1)))[h // 2 :]
  return diagonal - diagonal[0]


def white_noise(b, c, seed=0):
  return np.random.default_rng(seed).normal(size=(b, c, H, H))


def box_blur(maps):
  """3x3 circular box blur of maps [..., h, w]."""
  return sum(np.roll(maps, (dy, dx), axis=(-2, -1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9


def test_tokens_to_maps_layout():
  tokens = np.arange(2 * 7 * 3, dtype=np.float32).reshape(2, 7, 3)  # 1 prefix + 2x3 grid.
  maps = fourier.tokens_to_maps(jnp.asarray(tokens), (2, 3), 1)
  assert maps.shape == (2, 3, 2, 3) and maps.dtype == np.float32
  # Patch (1, 2) is token 1 + 1*3 + 2 = 6; channel 2 of image 1.
  assert maps[1, 2, 1, 2] == tokens[1, 6, 2]


def test_frequencies():
  # float64: k * 2 * pi / 8 and pi * k / 4, 2 roundings each: <= 2 eps64 = 4.4e-16. 1e-15.
  np.testing.assert_allclose(
    fourier.frequencies(8), np.pi * np.array([0, 0.25, 0.5, 0.75]), rtol=1e-15
  )
  assert np.isclose(fourier.frequencies(14)[-1], (1 - 2 / 14) * np.pi, rtol=1e-15, atol=0)
  assert len(fourier.frequencies(7)) == 3


@pytest.mark.parametrize('h', [8, 7])
def test_matches_the_full_fft_recipe(h):
  rng = np.random.default_rng(1)
  maps = rng.normal(size=(3, 5, h, h)) + rng.normal(size=(3, 5, 1, 1))  # Non-white: DC offsets.
  got = fourier.relative_log_amplitude(as_tokens(maps, num_prefix=2), (h, h), 2)
  assert got.shape == (h // 2,) and got[0] == 0
  # float64 (eps64 = 2.2e-16) on both sides, the same 1e-6 floor: a DFT sum of h*h <= 64 terms
  # of |f| <= ~4 is off by <= 64*eps64*256 = 4e-12, the FFT by less; the log turns that into
  # 4e-12 / |F|, and the smallest |F| on these diagonals is ~0.7: <= ~6e-12 per map, twice
  # for L(k) - L(0). 1e-10.
  np.testing.assert_allclose(got, fft_reference(maps)[: h // 2], atol=1e-10)


def test_planted_cosine():
  # f = c + a cos(2π k0 (y + x)/h): F(0,0) = c h², F(k0,k0) = a h²/2, the others on the
  # diagonal 0, so Δ(k0) = log(a / 2c) and the rest sit at log(1e-6) - log(c h²).
  c, a, k0 = 3.0, 0.5, 2
  yx = np.arange(H)[:, None] + np.arange(H)
  maps = (c + a * np.cos(2 * np.pi * k0 * yx / H))[None, None]
  got = fourier.relative_log_amplitude(as_tokens(maps), (H, H), 1)
  # The 1e-6 floor shifts Δ(k0) by 1e-6 / 16 - 1e-6 / 192 = 5.7e-8 (float64 rounding ~1e-14).
  # 1e-7.
  np.testing.assert_allclose(got[k0], np.log(a / (2 * c)), atol=1e-7)
  # F(1, 1) and F(3, 3) are float64 rounding, <= 64*eps64*224 ~ 3e-12, far below the floor:
  # they sit at log(1e-6 / (c h²)); the bound allows |F| up to 9e-6.
  assert np.all(got[[1, 3]] < np.log(1e-5 / (c * H * H)))


def test_white_noise_is_flat_at_half_log_two():
  # B*C = 4096 maps: the std of the mean of log|F| is ~1.11/64 = 0.017 at k = 0 (half-normal)
  # and ~0.64/64 = 0.010 elsewhere (Rayleigh), so 0.07 is over 3 standard deviations.
  got = fourier.relative_log_amplitude(as_tokens(white_noise(64, 64), num_prefix=0), (H, H), 0)
  np.testing.assert_allclose(got[1:], np.log(2) / 2, atol=0.07)
  assert np.ptp(got[1:]) < 0.05


def test_box_blur_and_uniform_mixing_lower_the_highest_frequency():
  noise = white_noise(16, 32)
  base = fourier.relative_log_amplitude(as_tokens(noise), (H, H), 1)
  # The 3x3 box passes (1 + 2 cos(3π/4))² / 9 = 0.019 of the amplitude at (3, 3): log -3.9.
  blurred = fourier.relative_log_amplitude(as_tokens(box_blur(noise)), (H, H), 1)
  assert blurred[-1] < base[-1] - 3
  # Uniform attention (every token the mean of all): a constant map, nothing but F(0, 0).
  uniform = np.broadcast_to(noise.mean(axis=(2, 3), keepdims=True), noise.shape)
  mixed = fourier.relative_log_amplitude(as_tokens(uniform), (H, H), 1)
  assert mixed[-1] < -10
  # With the residual, x + mean(x) only raises F(0, 0): the whole curve drops.
  residual = fourier.relative_log_amplitude(as_tokens(noise + uniform), (H, H), 1)
  assert np.all(residual[1:] < base[1:])


def test_identity_and_scaling_leave_it_unchanged():
  noise = white_noise(4, 8)
  base = fourier.relative_log_amplitude(as_tokens(noise), (H, H), 1)
  # Other prefix tokens, dropped before any arithmetic: the same computation on the same values.
  np.testing.assert_array_equal(
    fourier.relative_log_amplitude(as_tokens(noise + 0.0, seed=5), (H, H), 1), base
  )
  # The 1e-6 floor is not scale-invariant: each map's log moves by 1e-6 * (1 - 1/7) / |F|, and
  # the smallest of these 32 maps' |F| is 0.045: <= ~1e-6 in the mean of 32 (the others add
  # ~1e-7); float64 rounding ~1e-14. 2e-6.
  np.testing.assert_allclose(
    fourier.relative_log_amplitude(as_tokens(7.0 * noise), (H, H), 1), base, atol=2e-6
  )


def test_feature_map_variance():
  constant = np.broadcast_to(np.arange(6.0).reshape(2, 3, 1, 1), (2, 3, 4, 4))
  assert fourier.feature_map_variance(as_tokens(constant), (4, 4), 1) == 0
  checkerboard = np.where((np.arange(4)[:, None] + np.arange(4)) % 2, 1.0, -1.0)
  maps = np.stack([checkerboard * 2, checkerboard + 5])[:, None]  # Variances 4 and 1.
  # float64 variances of 16 values (mean, deviations, sum of 16 squares) and a mean of 2:
  # <= ~(16 + 16 + 4)*eps64 = 8e-15 worst case. 1e-14.
  assert fourier.feature_map_variance(as_tokens(maps), (4, 4), 1) == pytest.approx(2.5, rel=1e-14)
  # Attention-like mixing lowers it: the 3x3 box blur keeps 1/9 of a checkerboard's amplitude
  # (the blur adds 9 terms and a division per value: 2e-14).
  assert fourier.feature_map_variance(as_tokens(box_blur(maps)), (4, 4), 1) == pytest.approx(
    2.5 / 81, rel=2e-14
  )


def test_bad_inputs_are_explained():
  with pytest.raises(ValueError, match='square patch grid'):
    fourier.relative_log_amplitude(np.zeros((1, 6, 2)), (2, 3), 0)
  with pytest.raises(ValueError, match=r'T = num_prefix \+ h\*w = 5'):
    fourier.tokens_to_maps(np.zeros((1, 4, 2)), (2, 2), 1)
