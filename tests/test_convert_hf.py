"""Hugging Face parity, both ways: exported folders run by transformers, HF folders run by us.

Logits (or, with a pre-logits layer, the pooled features) agree to 2e-5 relative (float32
rounding in both, see convert_helpers.PARITY); HF is configured with our GELU
(gelu_pytorch_tanh) and LayerNorm eps (1e-6), which export writes.
"""

import json

import numpy as np
import pytest
import torch
import transformers

import convert_helpers as h
from vit_jax import export
from vit_jax.weights import fit
from vit_jax.weights import released
from vit_jax.weights import sources
from vit_jax.weights import tree
from vit_jax.weights.formats import tensor_files

SIZE = (32, 48)  # non-square: HF's image_size and patch grid as [h, w].


def hf_config(**kw):
  return transformers.ViTConfig(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    image_size=list(SIZE),
    patch_size=8,
    hidden_act='gelu_pytorch_tanh',
    layer_norm_eps=1e-6,
    **kw,
  )


def run_hf(model, x):
  with torch.no_grad():
    out = model.eval()(pixel_values=h.nchw(x))
  return (out.logits if hasattr(out, 'logits') else out.pooler_output).numpy()


def features_model(**kw):
  return h.vit(num_classes=0, **kw)


def test_export_then_transformers_gives_our_logits(tmp_path):
  model = h.vit()
  flat = h.random_params(model, SIZE)
  x = h.images(SIZE)
  released.save(tmp_path / 'ours.npz', tree.unflatten(flat))
  out = str(tmp_path / 'hf')
  how = export.export(str(tmp_path / 'ours.npz'), 'hf', out, image_size=SIZE)
  assert how == f'transformers.ViTForImageClassification.from_pretrained({out!r})'
  loaded, info = transformers.ViTForImageClassification.from_pretrained(
    out, output_loading_info=True
  )
  assert not any(info.values()), info  # no missing, unexpected or mismatched weights.
  assert h.relative_error(run_hf(loaded, x), h.logits(model, flat, x)) <= h.PARITY
  back = sources.load(out)
  assert sorted(back) == sorted(flat)
  for key, value in flat.items():
    np.testing.assert_array_equal(back[key], value)
  with open(f'{out}/preprocessor_config.json', encoding='utf-8') as f:
    pre = json.load(f)
  assert pre['size'] == {'height': 32, 'width': 48} and pre['image_mean'] == [0.5] * 3


def test_pre_logits_export_as_vit_model_whose_pooler_is_pre_logits(tmp_path):
  model = h.vit(representation_size=24)
  flat = h.random_params(model, SIZE, seed=2)
  x = h.images(SIZE)
  features = h.logits(
    features_model(representation_size=24),
    {k: v for k, v in flat.items() if not k.startswith('head/')},
    x,
  )
  released.save(tmp_path / 'ours.npz', tree.unflatten(flat))
  how = export.export(str(tmp_path / 'ours.npz'), 'hf', str(tmp_path / 'hf'), image_size=SIZE)
  assert how.startswith('transformers.ViTModel.from_pretrained(')
  loaded, info = transformers.ViTModel.from_pretrained(tmp_path / 'hf', output_loading_info=True)
  assert not any(info.values()), info
  assert loaded.config.pooler_output_size == 24
  assert h.relative_error(run_hf(loaded, x), features) <= h.PARITY


def test_hf_classifier_folder_imports_with_its_logits(tmp_path):
  source = h.randomize_torch(transformers.ViTForImageClassification(hf_config(num_labels=5)))
  x = h.images(SIZE)
  source.save_pretrained(tmp_path / 'hf')
  model = h.vit()
  init = tree.unflatten(h.random_params(model, SIZE))
  loaded = fit.load_pretrained(str(tmp_path / 'hf'), init, keep_head=True)
  assert h.relative_error(h.logits(model, tree.flatten(loaded), x), run_hf(source, x)) <= h.PARITY


def test_hf_model_with_pooler_imports_as_pre_logits_and_v5_names_read(tmp_path):
  source = h.randomize_torch(transformers.ViTModel(hf_config(pooler_output_size=24)))
  x = h.images(SIZE)
  source.config.save_pretrained(tmp_path / 'hf')
  # The in-memory names of transformers v5 (layers.N.attention.q_proj, mlp.fc1, ...), as a
  # torch.save of model.state_dict() would have them.
  state = {k: v.numpy() for k, v in source.state_dict().items()}
  assert any('q_proj' in k for k in state) or any('attention.attention' in k for k in state)
  tensor_files.write(tmp_path / 'hf' / 'model.safetensors', state)
  model = features_model(representation_size=24)
  init = tree.unflatten(h.random_params(model, SIZE))
  loaded = fit.load_pretrained(str(tmp_path / 'hf' / 'model.safetensors'), init, keep_head=True)
  assert h.relative_error(h.logits(model, tree.flatten(loaded), x), run_hf(source, x)) <= h.PARITY


def test_features_only_export_loads_without_pooler(tmp_path):
  model = features_model()
  flat = h.random_params(model, SIZE, seed=4)
  x = h.images(SIZE)
  released.save(tmp_path / 'f.npz', tree.unflatten(flat))
  out = str(tmp_path / 'hf')
  how = export.export(str(tmp_path / 'f.npz'), 'hf', out, image_size=SIZE)
  assert how == f'transformers.ViTModel.from_pretrained({out!r}, add_pooling_layer=False)'
  loaded, info = transformers.ViTModel.from_pretrained(
    out, add_pooling_layer=False, output_loading_info=True
  )
  assert not any(info.values()), info
  with torch.no_grad():
    tokens = loaded.eval()(pixel_values=h.nchw(x)).last_hidden_state.numpy()
  assert h.relative_error(tokens[:, 0], h.logits(model, flat, x)) <= h.PARITY  # class token.


def test_what_hf_cannot_hold_is_a_clear_error(tmp_path):
  flat = h.random_params(h.vit(classifier='gap'), (32, 32))
  released.save(tmp_path / 'gap.npz', tree.unflatten(flat))
  with pytest.raises(ValueError, match=r"classifier 'gap'.*export --to=timm"):
    export.export(str(tmp_path / 'gap.npz'), 'hf', str(tmp_path / 'out'))
  with pytest.raises(ValueError, match='a Hugging Face checkpoint is a folder'):
    export.export(str(tmp_path / 'gap.npz'), 'hf', str(tmp_path / 'x.safetensors'))
