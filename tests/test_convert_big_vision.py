"""big_vision `.npz` trees load as the same params: prefixes, sub-models, posemb, MAP head."""

import numpy as np
import pytest

import convert_helpers as h
from vit_jax.models import layouts
from vit_jax.weights import fit
from vit_jax.weights import released
from vit_jax.weights import tree as tree_lib

LINEN = {
  'MultiHeadDotProductAttention_1': 'MultiHeadDotProductAttention_0',
  'LayerNorm_2': 'LayerNorm_1',
  'MlpBlock_3': 'MlpBlock_0',
}
POSEMB = 'Transformer/posembed_input/pos_embedding'


def big_vision_tree(flat, prefix='params/'):
  """Our flat params as big_vision writes them: scanned blocks with Linen numbering,
  top-level pos_embedding without the class token's row, under `params/`, optimizer beside."""
  scanned = tree_lib.flatten(layouts.to_scan(tree_lib.unflatten(flat)))
  out = {}
  for key, value in scanned.items():
    parts = key.split('/')
    if parts[:2] == ['Transformer', 'encoderblock']:
      parts[2] = LINEN.get(parts[2], parts[2])
    out[prefix + '/'.join(parts)] = value
  pe = out.pop(prefix + POSEMB)
  out[prefix + 'pos_embedding'] = pe[:, 1:] if 'cls' in flat else pe
  out['opt/0/mu/cls'] = np.zeros(3)  # optimizer state: not params.
  return out


def assert_same(got, want):
  assert sorted(got) == sorted(want)
  for key in want:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.parametrize('kw', [dict(classifier='token'), dict(classifier='map')])
def test_big_vision_checkpoint_loads_as_our_params(tmp_path, kw):
  flat = h.random_params(h.vit(**kw), (32, 32))
  if 'cls' in flat:  # big_vision's class token gets no position embedding: a zero row here.
    flat[POSEMB][:, 0] = 0.0
  np.savez(tmp_path / 'bv.npz', **big_vision_tree(flat))
  assert_same(tree_lib.flatten(released.load(tmp_path / 'bv.npz')), flat)


@pytest.mark.parametrize('image', [(16, 40), (40, 80)])  # grids 2x5 and 5x10: h*w - 1 square.
def test_a_non_square_class_token_file_loads_with_explicit_grids(tmp_path, image):
  # Its 10 (50) rows were taken for a square grid + a class row, and the grids the error
  # asked for then crashed in a reshape.
  grid = (image[0] // 8, image[1] // 8)
  model = h.vit(classifier='token')
  flat = h.random_params(model, image)
  flat[POSEMB][:, 0] = 0.0  # big_vision's class token has no position embedding.
  np.savez(tmp_path / 'bv.npz', **big_vision_tree(flat))
  init = tree_lib.unflatten(h.random_params(model, image))
  with pytest.raises(ValueError, match='pass grid=.* and pretrained_grid=.* explicitly'):
    fit.load_pretrained(tmp_path / 'bv.npz', init, keep_head=True)
  loaded = fit.load_pretrained(
    tmp_path / 'bv.npz', init, grid=grid, pretrained_grid=grid, keep_head=True
  )
  assert_same(tree_lib.flatten(loaded), flat)


def test_sub_model_of_a_two_tower_file(tmp_path):
  flat = h.random_params(h.vit(classifier='map'), (32, 32))
  tree = big_vision_tree(flat, prefix='params/img/')
  tree['params/txt/Encoder_0/kernel'] = np.ones((2, 2))
  tree['params/t'] = np.ones(1)
  np.savez(tmp_path / 'siglip.npz', **tree)
  path = f'{tmp_path}/siglip.npz:img'
  assert_same(tree_lib.flatten(released.load(path)), flat)
  # Fine-tuning straight from the image tower, into a new 3-class head.
  init = tree_lib.unflatten(h.random_params(h.vit(num_classes=3, classifier='map'), (32, 32)))
  tuned = tree_lib.flatten(fit.load_pretrained(path, init))
  np.testing.assert_array_equal(tuned['MAPHead_0/probe'], flat['MAPHead_0/probe'])
  assert tuned['head/kernel'].shape == (32, 3)
  with pytest.raises(ValueError, match=r"no subtree 'image'; its top-level entries are img, t, "):
    released.load(f'{tmp_path}/siglip.npz:image')


def test_older_big_vision_variants(tmp_path):
  flat = h.random_params(h.vit(classifier='map'), (32, 32))
  # Pre-2022: posemb inside the Transformer, Flax-optimizer prefix, MAP head inlined.
  old = {}
  for key, value in flat.items():
    key = 'Transformer/pos_embedding' if key == POSEMB else key
    old['opt/target/' + key.replace('MAPHead_0/', '')] = value
  np.savez(tmp_path / 'old.npz', **old)
  assert_same(tree_lib.flatten(released.load(tmp_path / 'old.npz')), flat)
  # A top-level posemb that still has the class token's row (square grid + 1) is kept as is.
  flat = h.random_params(h.vit(), (32, 32))
  top = {('pos_embedding' if k == POSEMB else k): v for k, v in flat.items()}
  np.savez(tmp_path / 'cls_row.npz', **top)
  assert_same(tree_lib.flatten(released.load(tmp_path / 'cls_row.npz')), flat)
