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


def test_hub_configs_of_exact_gelu_import_exactly_and_export_it(tmp_path, caplog):
  # hidden_act='gelu' (transformers' default, the Hub's Google ViTs) is exact (erf) GELU.
  config = hf_config(num_labels=5)
  config.hidden_act = 'gelu'
  source = h.randomize_torch(transformers.ViTForImageClassification(config))
  source.save_pretrained(tmp_path / 'hf')
  x = h.images(SIZE)
  want = run_hf(source, x)
  assert sources.read(str(tmp_path / 'hf')).exact_gelu is True
  model = h.vit(exact_gelu=True)
  init = tree.unflatten(h.random_params(model, SIZE))
  loaded = fit.load_pretrained(str(tmp_path / 'hf'), init, keep_head=True, exact_gelu=True)
  assert h.relative_error(h.logits(model, tree.flatten(loaded), x), want) <= h.PARITY
  export.export(str(tmp_path / 'hf'), 'hf', str(tmp_path / 'again'))  # config.json: 32x48.
  again = transformers.ViTForImageClassification.from_pretrained(tmp_path / 'again')
  assert again.config.hidden_act == 'gelu'
  assert h.relative_error(run_hf(again, x), want) <= h.PARITY
  assert not [r for r in caplog.records if r.levelname == 'WARNING']
  # Other activations are refused in one line.
  config = json.loads((tmp_path / 'hf' / 'config.json').read_text())
  (tmp_path / 'hf' / 'config.json').write_text(json.dumps({**config, 'hidden_act': 'relu'}))
  with pytest.raises(ValueError) as e:
    sources.read(str(tmp_path / 'hf'))
  assert str(e.value) == (
    f"{tmp_path / 'hf'}: hidden_act='relu'; vit_jax's ViT computes GELU only "
    '(gelu, gelu_python, gelu_pytorch_tanh, gelu_new, gelu_fast).'
  )


def test_the_hubs_layer_norm_eps_imports_as_the_same_function(tmp_path, caplog):
  # The Hub's converted Google ViTs say layer_norm_eps=1e-12; ours is 1e-6: below float32
  # rounding for these tokens, so no warning. A larger eps changes outputs: a warning.
  for eps, quiet in ((1e-12, True), (1e-3, False)):
    config = hf_config(num_labels=5)
    config.layer_norm_eps = eps
    source = h.randomize_torch(transformers.ViTForImageClassification(config))
    source.save_pretrained(tmp_path / f'{eps}')
    model = h.vit()
    init = tree.unflatten(h.random_params(model, SIZE))
    loaded = fit.load_pretrained(str(tmp_path / f'{eps}'), init, keep_head=True)
    x = h.images(SIZE)
    error = h.relative_error(h.logits(model, tree.flatten(loaded), x), run_hf(source, x))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
    caplog.clear()
    if quiet:
      assert error <= h.PARITY and warnings == []
    else:
      assert error > h.PARITY and warnings == [
        f'{tmp_path / f"{eps}"} uses layer_norm_eps=0.001; vit_jax normalises with eps 1e-6, '
        'so outputs differ slightly from the source.'
      ]
