"""analysis.report on every kind of model: hybrids, GAP / MAP ViTs and Mixers get the analyses
that mean something for them, and a one-line NotApplicable for the others."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from vit_jax import models
from vit_jax.analysis import capture
from vit_jax.analysis import report

IMAGES = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)


def _model_and_params(name, **kw):
  model = models.get_model(name, num_classes=3, **kw)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), IMAGES[:1])['params'])
  return model, params


def test_hybrid_has_attention_analyses_but_no_pixel_filters():
  model, params = _model_and_params('R+ViT-Ti_16', num_layers=1)
  captured = capture.run(model, params, IMAGES)
  # ResNet root (4x) then 8x8 patches: a token every 32 pixels, a 2x2 grid.
  assert captured.geometry == capture.Geometry((2, 2), 32, 1)
  distance = report.attention_distance(captured).numbers
  assert np.shape(distance['distance']) == (1, 3) and distance['stride'] == 32
  # Every distance lies between 0 and the grid's diagonal, 32 * sqrt(2).
  assert 0 < np.min(distance['distance']) and np.max(distance['distance']) < 32 * 2**0.5
  with pytest.raises(report.NotApplicable, match='hybrid'):
    report.filters(model, params)
  assert report.posemb(model, params, 64).numbers['grid'] == [2, 2]


@pytest.mark.parametrize('classifier', ['gap', 'map'])
def test_gap_and_map_vits_get_rollout_and_fourier(classifier):
  model, params = _model_and_params('testing', classifier=classifier, num_layers=2)
  captured = capture.run(model, params, IMAGES)
  assert captured.geometry.num_prefix == 0
  maps = np.asarray(report.rollout(captured, IMAGES).numbers['token_maps'])
  assert maps.shape == (2, 4, 4)
  fourier = report.fourier(captured).numbers
  assert fourier['kinds'] == ['embedding', 'attention', 'mlp', 'attention', 'mlp']
  assert np.shape(fourier['delta_log_amplitude']) == (5, 2)


def test_mixer_gets_fourier_but_no_attention_analyses():
  model, params = _model_and_params(
    'Mixer-B_16', num_blocks=1, hidden_dim=8, tokens_mlp_dim=4, channels_mlp_dim=8
  )
  captured = capture.run(model, params, IMAGES)
  # Token mixing plays attention's part (spatial), channel mixing the MLP's.
  assert report.fourier(captured).numbers['kinds'] == ['embedding', 'attention', 'mlp']
  for analysis in (
    lambda: report.attention_distance(captured),
    lambda: report.rollout(captured, IMAGES),
    lambda: report.posemb(model, params, 64),
  ):
    with pytest.raises(report.NotApplicable, match='Mixer'):
      analysis()
