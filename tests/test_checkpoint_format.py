"""Released `.npz` format: exact round trip, both numberings, bfloat16, GroupNorm, bad files."""

import jax
import ml_dtypes
import numpy as np
import pytest

from vit_jax import models
from vit_jax.weights import released as released_lib
from vit_jax.weights import tree as tree_lib

IMAGES = np.zeros((1, 32, 32, 3), np.float32)


def tiny_params(seed=0, **kw):
  model = models.VisionTransformer(
    **{
      'num_classes': 4,
      'patch_size': (8, 8),
      'hidden_size': 12,
      'num_layers': 2,
      'num_heads': 3,
      'mlp_dim': 16,
      'representation_size': 6,
      **kw,
    }
  )
  params = jax.eval_shape(model.init, jax.random.key(seed), IMAGES)['params']
  # Non-trivial values everywhere (the zero-init head included) so that mix-ups show.
  leaves, tree = jax.tree.flatten(tree_lib.flatten(params))
  rng = np.random.default_rng(seed)
  return model, jax.tree.unflatten(tree, [rng.normal(size=x.shape).astype(x.dtype) for x in leaves])


def to_linen_numbering(flat):
  rename = {
    'MultiHeadDotProductAttention_1': 'MultiHeadDotProductAttention_0',
    'LayerNorm_2': 'LayerNorm_1',
    'MlpBlock_3': 'MlpBlock_0',
  }
  out = {}
  for key, value in flat.items():
    parts = key.split('/')
    out['/'.join(rename.get(p, p) if i == 2 else p for i, p in enumerate(parts))] = value
  return out


def test_save_load_round_trip_is_exact(tmp_path):
  model, flat = tiny_params()
  released_lib.save(tmp_path / 'a.npz', tree_lib.unflatten(flat))
  loaded = tree_lib.flatten(released_lib.load(tmp_path / 'a.npz'))
  assert sorted(loaded) == sorted(flat)
  for key in flat:
    assert loaded[key].dtype == flat[key].dtype
    np.testing.assert_array_equal(loaded[key], flat[key])
  # And the loaded tree drives the model.
  out = model.apply({'params': released_lib.load(tmp_path / 'a.npz')}, IMAGES)
  assert out.shape == (1, 4) and np.abs(out).max() > 0


def test_save_writes_released_numbering_and_boxed_params_work(tmp_path):
  model = models.get_model('testing', num_classes=3, representation_size=10)
  boxed = model.init(jax.random.key(0), IMAGES)['params']  # LogicallyPartitioned leaves.
  released_lib.save(tmp_path / 'b.npz', boxed)
  with np.load(tmp_path / 'b.npz') as npz:
    keys = set(npz.files)
  assert {
    'cls',
    'embedding/kernel',
    'Transformer/posembed_input/pos_embedding',
    'Transformer/encoderblock_0/LayerNorm_0/scale',
    'Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel',
    'Transformer/encoderblock_0/MultiHeadDotProductAttention_1/out/kernel',
    'Transformer/encoderblock_0/LayerNorm_2/bias',
    'Transformer/encoderblock_0/MlpBlock_3/Dense_1/kernel',
    'Transformer/encoder_norm/scale',
    'pre_logits/kernel',
    'head/bias',
  } <= keys
  assert not any('MlpBlock_0' in k or 'LayerNorm_1' in k for k in keys)


def test_linen_numbering_loads_the_same_and_saves_released(tmp_path):
  _, flat = tiny_params()
  np.savez(tmp_path / 'released.npz', **flat)
  np.savez(tmp_path / 'linen.npz', **to_linen_numbering(flat))
  with np.load(tmp_path / 'linen.npz') as npz:
    assert 'Transformer/encoderblock_1/MlpBlock_0/Dense_0/kernel' in npz.files
  released = tree_lib.flatten(released_lib.load(tmp_path / 'released.npz'))
  linen = tree_lib.flatten(released_lib.load(tmp_path / 'linen.npz'))
  assert sorted(released) == sorted(linen)
  for key in released:
    np.testing.assert_array_equal(released[key], linen[key])
  released_lib.save(tmp_path / 'again.npz', tree_lib.unflatten(to_linen_numbering(flat)))
  with np.load(tmp_path / 'again.npz') as npz:
    assert sorted(npz.files) == sorted(flat)


def test_bfloat16_arrays_survive(tmp_path):
  _, flat = tiny_params()
  flat_bf16 = {k: v.astype(ml_dtypes.bfloat16) for k, v in flat.items()}
  released_lib.save(tmp_path / 'bf16.npz', tree_lib.unflatten(flat_bf16))
  with np.load(tmp_path / 'bf16.npz') as npz:  # NumPy stores bfloat16 as 2-byte void.
    assert npz['cls'].dtype.kind == 'V'
  loaded = tree_lib.flatten(released_lib.load(tmp_path / 'bf16.npz'))
  for key, value in flat_bf16.items():
    assert loaded[key].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(loaded[key].astype(np.float32), value.astype(np.float32))


def test_groupnorm_scales_stored_4d_are_flattened(tmp_path):
  np.savez(
    tmp_path / 'gn.npz',
    **{
      'gn_root/scale': np.arange(8.0).reshape(1, 1, 1, 8),
      'block1/unit1/gn_proj/bias': np.ones((1, 1, 1, 8)),
      'conv_root/kernel': np.ones((7, 7, 3, 8)),
    },
  )
  loaded = released_lib.load(tmp_path / 'gn.npz')
  assert loaded['gn_root']['scale'].shape == (8,)
  assert loaded['block1']['unit1']['gn_proj']['bias'].shape == (8,)
  assert loaded['conv_root']['kernel'].shape == (7, 7, 3, 8)


@pytest.mark.parametrize(
  'content,message',
  [
    (b'', 'is not an .npz file (it is empty); released checkpoints are NumPy .npz files.'),
    (  # numpy read it as a pickle, and its error spoke of allow_pickle.
      b'hello, I am a text file',
      "is not an .npz file (it starts with b'hell', not a zip archive); released checkpoints "
      'are NumPy .npz files.',
    ),
    (
      b'PK\x03\x04truncated zip',
      'is not a readable .npz checkpoint (BadZipFile: File is not a zip file); released '
      'checkpoints are NumPy .npz files.',
    ),
  ],
)
def test_not_an_npz_is_a_clear_error(tmp_path, content, message):
  path = tmp_path / 'bad.npz'
  path.write_bytes(content)
  with pytest.raises(ValueError) as e:
    released_lib.load(path)
  assert str(e.value) == f'{path} {message}'


def test_pickled_or_empty_or_missing_files(tmp_path):
  np.savez(tmp_path / 'obj.npz', a=np.array([{'a': 1}], dtype=object))
  with pytest.raises(ValueError) as e:
    released_lib.load(tmp_path / 'obj.npz')
  assert str(e.value) == (  # numpy's own error, before: "... when allow_pickle=False".
    f'{tmp_path}/obj.npz holds pickled Python objects, which are not loaded (unpickling can '
    'run code); released checkpoints hold plain arrays only.'
  )
  np.savez(tmp_path / 'empty.npz')
  with pytest.raises(ValueError, match='holds no parameters'):
    released_lib.load(tmp_path / 'empty.npz')
  with pytest.raises(FileNotFoundError, match='does not exist'):
    released_lib.load(tmp_path / 'nope.npz')


def test_variables_dict_instead_of_params_is_explained():
  model = models.get_model('testing', num_classes=3)
  variables = model.init(jax.random.key(0), IMAGES)
  with pytest.raises(ValueError, match=r"pass variables\['params'\]"):
    tree_lib.flatten(variables)
