"""`predict` takes everything fine-tuning takes (vit_jax.weights.sources): one model's params
as a released `.npz`, a big_vision `.npz`, a timm file and folder, a Hugging Face folder and a
released name all give the same predictor and the same probabilities."""

import os

import flax
import jax
import numpy as np
import pytest

from vit_jax import models
from vit_jax.inference import predictor as predictor_lib
from vit_jax.weights import catalogue
from vit_jax.weights import released
from vit_jax.weights import spec
from vit_jax.weights import tree
from vit_jax.weights.formats import hf
from vit_jax.weights.formats import timm_hub

SIZE = 32  # `testing`: 16x16 patches, a 2x2 grid, class token, 2 heads of width 5.


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  """{kind: path} of one `testing` model (no pre-logits layer, 10 classes) in every format."""
  root = tmp_path_factory.mktemp('sources')
  model = models.get_model('testing', num_classes=10, representation_size=None)
  variables = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, SIZE, SIZE, 3)))
  rng = np.random.default_rng(0)  # nothing zero (the head), so every parameter matters.
  params = jax.tree.map(
    lambda x: rng.normal(0, 0.5, x.shape).astype(np.float32),
    flax.linen.meta.unbox(variables['params']),
  )
  flat = tree.flatten(params)
  paths = {'npz': str(root / 'released.npz')}
  released.save(paths['npz'], params)
  paths['big_vision'] = str(root / 'big_vision.npz')
  np.savez(paths['big_vision'], **{f'params/{k}': v for k, v in flat.items()}, opt=np.ones(3))
  vit = spec.infer(flat)
  paths['timm_folder'] = str(root / 'timm')
  timm_hub.export(flat, vit, paths['timm_folder'])
  paths['timm_file'] = str(root / 'timm.safetensors')
  timm_hub.export(flat, vit, paths['timm_file'])
  paths['hf_folder'] = str(root / 'hf')
  hf.export(flat, vit, paths['hf_folder'])
  return paths, params


@pytest.fixture(scope='module')
def reference(files):
  predictor = predictor_lib.load(files[0]['npz'], model_name='testing')
  images = np.random.default_rng(1).integers(0, 256, (3, SIZE, SIZE, 3), np.uint8)
  return predictor, images, predictor.probabilities(images)


@pytest.mark.parametrize('kind', ['big_vision', 'timm_file', 'timm_folder', 'hf_folder'])
def test_every_format_predicts_as_the_released_npz(files, reference, kind):
  expected, images, probabilities = reference
  predictor = predictor_lib.load(files[0][kind], model_name='testing')
  assert (predictor.image_size, predictor.num_classes) == (SIZE, 10)
  assert predictor.model.representation_size is None  # as the file: no pre-logits layer.
  assert predictor.about == {**expected.about, 'checkpoint': files[0][kind]}
  # The same float32 params in, the same jitted model: the same bits out.
  np.testing.assert_array_equal(predictor.probabilities(images), probabilities)


def test_a_file_of_another_codebase_needs_the_model(files):
  with pytest.raises(
    predictor_lib.PredictError,
    match=(r'^--checkpoint=.*hf is a Hugging Face folder: pass the model it holds with --model'),
  ):
    predictor_lib.load(files[0]['hf_folder'])


def test_a_released_name_brings_its_model(files, reference, tmp_path, monkeypatch):
  """A released name is read from the download cache (nothing is downloaded here)."""
  monkeypatch.setenv('VIT_JAX_CACHE', str(tmp_path))
  url = catalogue.resolve('i21k:ViT-B_16')
  cached = os.path.join(tmp_path, *url[len('gs://') :].split('/'))
  os.makedirs(os.path.dirname(cached))
  os.symlink(files[0]['npz'], cached)
  # The name says ViT-B_16: the tiny file does not fit it, which shows the name chose it.
  with pytest.raises(
    predictor_lib.PredictError,
    match=(
      r'^--model=ViT-B_16 at 32px does not match the checkpoint: '
      r'Transformer/encoder_norm/bias \(10,\) vs model \(768,\)'
    ),
  ):
    predictor_lib.load('i21k:ViT-B_16')
  # --model overrides the name's model.
  expected, images, probabilities = reference
  predictor = predictor_lib.load('i21k:ViT-B_16', model_name='testing')
  assert predictor.about == {**expected.about, 'checkpoint': 'i21k:ViT-B_16'}
  np.testing.assert_array_equal(predictor.probabilities(images), probabilities)
  with pytest.raises(predictor_lib.PredictError, match=r"'i21k:ViT-B_61' is not in the catalogue"):
    predictor_lib.load('i21k:ViT-B_61')


def test_a_path_under_home_as_the_shell_passes_it(files, reference, monkeypatch):
  # `--checkpoint=~/released.npz`: bash expands no `~` after `=`, so it arrives as typed.
  monkeypatch.setenv('HOME', os.path.dirname(files[0]['npz']))
  expected, images, probabilities = reference
  predictor = predictor_lib.load('~/released.npz', model_name='testing')
  np.testing.assert_array_equal(predictor.probabilities(images), probabilities)
