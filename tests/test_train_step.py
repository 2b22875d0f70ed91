"""Train/eval step details: mixup, label smoothing, masked top-1/top-5, bf16 compute."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vit_jax import models
from vit_jax.models import layers
from vit_jax.train import config as config_lib
from vit_jax.train import optim
from vit_jax.train import state as state_lib
from vit_jax.train import step as step_lib


class FixedLogits(nn.Module):
  """'Model' whose logits are the first C pixels of each image: eval math by hand."""

  num_classes: int

  @nn.compact
  def __call__(self, images, train=False):
    self.param('unused', nn.initializers.zeros, (1,))
    return images.reshape(images.shape[0], -1)[:, : self.num_classes]


def test_eval_step_counts_masked_top1_top5_and_loss():
  logits = np.array(
    [
      [9, 1, 2, 3, 4, 5, 6],  # label 0: top-1.
      [1, 9, 8, 7, 6, 5, 4],  # label 3: rank 3 -> top-5 only.
      [0, 1, 2, 3, 4, 5, 6],  # label 0: rank 7 -> neither.
      [5, 5, 5, 5, 5, 5, 5],  # padding row (mask 0): must not count.
    ],
    np.float32,
  )
  images = np.zeros((4, 1, 7, 1), np.float32)
  images[:, 0, :, 0] = logits
  batch = {'image': images, 'label': np.array([0, 3, 0, 1]), 'mask': np.array([1, 1, 1, 0.0])}
  model = FixedLogits(7)
  sums = step_lib.make_eval_step(model, 7)({'unused': jnp.zeros(1)}, batch)
  assert float(sums['count']) == 3
  assert float(sums['correct_top1']) == 1
  assert float(sums['correct_top5']) == 2
  expected_loss = sum(
    float(optax.softmax_cross_entropy_with_integer_labels(logits[i], batch['label'][i]))
    for i in range(3)
  )
  # float32 near 9 (ulp 2**-20 = 9.5e-7): each example's logsumexp and the masked sum of 3
  # round to ~1 ulp in either program: <= ~5 ulps each side ~ 1e-5 / 9 = 1e-6.
  assert float(sums['loss']) == pytest.approx(expected_loss, rel=1e-6)


def test_top5_with_fewer_than_five_classes_is_always_right():
  images = np.random.default_rng(0).normal(size=(5, 1, 3, 1)).astype(np.float32)
  batch = {'image': images, 'label': np.array([0, 1, 2, 0, 1]), 'mask': np.ones(5)}
  sums = step_lib.make_eval_step(FixedLogits(3), 3)({'unused': jnp.zeros(1)}, batch)
  assert float(sums['correct_top5']) == 5


def test_mixup_mixes_neighbours_with_one_ratio():
  images = jnp.arange(4, dtype=jnp.float32).reshape(4, 1) * 10
  labels = jax.nn.one_hot(jnp.arange(4), 4)
  mixed_images, mixed_labels = step_lib.mixup(jax.random.key(0), images, labels, alpha=0.2)
  lam = float(mixed_labels[1, 1])
  assert 0 < lam < 1
  # Each side is lam * a + (1 - lam) * b in float32 (2 products and a sum of positive terms:
  # <= 3 roundings of 2**-24 = 1.5 eps, eps = 2**-23), possibly fused differently: 3 eps
  # = 3.6e-7 worst case. 5e-7.
  np.testing.assert_allclose(
    mixed_images[:, 0], lam * images[:, 0] + (1 - lam) * jnp.roll(images[:, 0], 1), rtol=5e-7
  )
  # One-hot rows: lam + (1 - lam) and 1 - lam, one rounding each at most: eps.
  np.testing.assert_allclose(mixed_labels.sum(-1), 1.0, rtol=2**-23)
  np.testing.assert_allclose(mixed_labels[1, 0], 1 - lam, rtol=2**-23)


def _one_step(label_smoothing=0.0, dtype=jnp.float32, images=None):
  model = models.VisionTransformer(
    num_classes=4,
    patch_size=(4, 4),
    hidden_size=16,
    num_layers=1,
    num_heads=2,
    mlp_dim=16,
    dtype=dtype,
  )
  c = config_lib.base_config()
  schedule = optim.make_schedule(0.1, 10, 1, 'cosine')
  tx = optim.make_optimizer(c, schedule)
  state = jax.jit(lambda r: nn.meta.unbox(state_lib.init_fn(model, tx, (1, 8, 8, 3))(r)))(
    jax.random.key(0)
  )
  train_step = jax.jit(
    step_lib.make_train_step(model, tx, schedule, num_classes=4, label_smoothing=label_smoothing)
  )
  images = np.ones((2, 8, 8, 3), np.float32) if images is None else images
  return train_step(state, {'image': images, 'label': np.array([0, 1])})


def test_label_smoothing_changes_the_loss_as_expected():
  # The head starts at zero, so logits are uniform: the loss is log(4) whatever the targets...
  _, plain = _one_step()
  _, smooth = _one_step(label_smoothing=0.1)
  # float32: log(4) from logsumexp of equal logits (log and exp to ~1 ulp each), the targets'
  # sum (0.925 + 3 * 0.025) and the mean of 2: ~4 roundings, 2 eps = 2.4e-7 worst. 5e-7.
  assert float(plain['loss']) == pytest.approx(np.log(4), rel=5e-7)
  assert float(smooth['loss']) == pytest.approx(np.log(4), rel=5e-7)
  # ...but the gradient differs: smoothed targets pull the head less.
  assert float(smooth['grad_norm']) < float(plain['grad_norm'])
  # 0.1 rounded to float32: <= 2**-24 relative.
  assert float(plain['learning_rate']) == pytest.approx(0.1, rel=2**-23)


def test_bfloat16_compute_trains_float32_params():
  state, metrics = _one_step(dtype=jnp.bfloat16)
  assert np.isfinite(float(metrics['loss']))
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
  assert int(state.step) == 1


def test_uint8_images_are_mapped_to_minus_one_one_on_the_device():
  """The trainer hands over uint8 pixels; steps see value_range's float32 images (to a few
  ulps: XLA divides by multiplying with the reciprocal)."""
  pixels = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
  pixels[0, 0, 0] = [0, 128, 255]
  floats = pixels.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
  mapped = np.asarray(jax.jit(layers.model_input)(pixels))
  assert mapped.dtype == np.float32
  # x / 127.5 in [0, 2] then - 1: the division rounds by <= 2**-24 * 2; x * fl(1 / 127.5) adds
  # the reciprocal's rounding and the product's (or, fused, the result's, <= 2**-24 * 1): each
  # side within 2 * 2**-23 of the exact value, the two within 3 * 2**-23 = 3.6e-7 worst case.
  # 4 * 2**-23.
  np.testing.assert_allclose(mapped[0, 0, 0], [-1.0, 1 / 255, 1.0], rtol=0, atol=4 * 2**-23)
  np.testing.assert_allclose(mapped, floats, rtol=0, atol=4 * 2**-23)
  assert layers.model_input(floats) is floats
  state_u, metrics_u = _one_step(images=pixels)
  state_f, metrics_f = _one_step(images=floats)
  assert float(metrics_u['grad_norm']) > 0
  # Inputs that differ by a few ulps round every later sum anew, as two float32 programs:
  # forward and backward of 1 block, reductions of <= 48 terms: ~sqrt(48)*2*eps*sqrt(2) =
  # 2.3e-6 of the gradients typical, worst ~5e-5. 1e-5.
  np.testing.assert_allclose(
    float(metrics_u['grad_norm']), float(metrics_f['grad_norm']), rtol=1e-5
  )
  # One SGD step of lr 0.1 on the clipped gradient (entries <= 1): params differ by <= 0.1 *
  # 1e-5 from the gradient plus one rounding of p - lr * u (2**-24 relative): atol 1e-6,
  # rtol eps.
  for a, b in zip(jax.tree.leaves(state_u.params), jax.tree.leaves(state_f.params)):
    np.testing.assert_allclose(a, b, rtol=2**-23, atol=1e-6)
  eval_step = step_lib.make_eval_step(FixedLogits(num_classes=3), 3)
  batch = {
    'image': np.array([[[[10], [200], [30]]]], np.uint8),
    'label': np.array([1]),
    'mask': np.ones(1, np.float32),
  }
  sums = eval_step({'unused': jnp.zeros(1)}, batch)
  logits = np.array([10, 200, 30], np.float32) / 127.5 - 1.0  # Not the raw pixel values.
  assert float(sums['correct_top1']) == 1
  # Logits off by <= 3 eps (above); a 3-term logsumexp (~1) to a few ulps, minus logit 1:
  # ~(3 + 3 + 3)*eps = 1.1e-6 absolute on a loss of 0.4, 2.7e-6 relative worst case. 5e-6.
  assert float(sums['loss']) == pytest.approx(
    float(optax.softmax_cross_entropy_with_integer_labels(logits, 1)), rel=5e-6
  )
