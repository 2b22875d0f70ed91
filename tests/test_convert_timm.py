"""timm parity, both ways: our params exported and run by timm, timm's state_dicts run by us.

Logits must agree to 2e-5 relative (max |diff| / max |logit|; float32 rounding in both, see
convert_helpers.PARITY) on tiny models with random params everywhere: class token, GAP on a
non-square image, MAP pooling. timm runs the original's tanh-GELU (act_layer='gelu_tanh'), or
its default exact GELU against our `exact_gelu=True`; LayerNorm eps is 1e-6 in both.
"""

import json

import ml_dtypes
import numpy as np
import pytest
from safetensors import torch as safetensors_torch
import timm
import torch

import convert_helpers as h
from helpers import load_config
from vit_jax import export
from vit_jax.inference import predictor as predictor_lib
from vit_jax.system import quiet_logs
from vit_jax.train import setup_run
from vit_jax.weights import fit
from vit_jax.weights import released
from vit_jax.weights import sources
from vit_jax.weights import spec as spec_lib
from vit_jax.weights import tree
from vit_jax.weights.formats import tensor_files
from vit_jax.weights.formats import timm as timm_convert
from vit_jax.weights.formats import timm_hub

ARCHS = {
  'token': (dict(classifier='token'), (32, 32)),
  'gap-nonsquare': (dict(classifier='gap'), (32, 48)),
  'map': (dict(classifier='map'), (32, 32)),
}
# timm-only layouts that import as one of ARCHS: DeiT-3's class token without a position
# (no_embed_class; it loaded wrongly or failed on its grid, before).
IMPORTS = {**ARCHS, 'token-no-embed-class': (dict(classifier='token'), (32, 32))}


def tiny_timm(**kwargs):
  """A one-block timm ViT at 32px (8px patches, width 32, 4 heads, 5 classes), random init."""
  return timm.create_model(
    timm_hub.ARCHITECTURE,
    img_size=32,
    patch_size=8,
    embed_dim=32,
    depth=1,
    num_heads=4,
    num_classes=5,
    **kwargs,
  )


def timm_logits(model, x):
  with torch.no_grad():
    return model.eval()(h.nchw(x)).numpy()


@pytest.mark.parametrize('arch', ARCHS)
def test_export_then_timm_gives_our_logits(tmp_path, arch):
  kw, size = ARCHS[arch]
  model = h.vit(**kw)
  flat = h.random_params(model, size)
  x = h.images(size)
  ours = h.logits(model, flat, x)
  how = export.export(_saved(tmp_path, flat), 'timm', str(tmp_path / 'out'), image_size=size)
  assert how == f"timm.create_model('local-dir:{tmp_path / 'out'}', pretrained=True)"
  theirs = timm_logits(timm.create_model(f'local-dir:{tmp_path / "out"}', pretrained=True), x)
  assert h.relative_error(theirs, ours) <= h.PARITY
  # The folder imports back bit for bit.
  back = sources.load(tmp_path / 'out')
  assert sorted(back) == sorted(flat)
  for key, value in flat.items():
    np.testing.assert_array_equal(back[key], value)


@pytest.mark.parametrize('suffix', ['.safetensors', '.pth'])
def test_single_state_dict_file_loads_with_pretrained_cfg_overlay(tmp_path, suffix):
  kw, size = ARCHS['gap-nonsquare']
  model = h.vit(**kw)
  flat = h.random_params(model, size, seed=3)
  x = h.images(size)
  out = str(tmp_path / f'vit{suffix}')
  how = export.export(_saved(tmp_path, flat), 'timm', out, image_size=size)
  spec = spec_lib.infer(flat, size)
  kwargs = timm_hub.model_kwargs(spec)
  overlay = timm_hub.overlay(spec, out)
  assert f'pretrained_cfg_overlay=dict(file={out!r}, num_classes=5' in how
  assert "act_layer='gelu_tanh'" in how
  created = timm.create_model(
    timm_hub.ARCHITECTURE, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs
  )
  assert h.relative_error(timm_logits(created, x), h.logits(model, flat, x)) <= h.PARITY


@pytest.mark.parametrize('arch', IMPORTS)
def test_timm_state_dict_imports_with_its_logits(tmp_path, arch):
  kw, size = IMPORTS[arch]
  pool = {
    'token': {},
    'gap': dict(class_token=False, global_pool='avg', fc_norm=False),
    'map': dict(class_token=False, global_pool='map'),
  }[kw['classifier']]
  if arch == 'token-no-embed-class':
    pool = dict(no_embed_class=True)
  source = h.randomize_torch(
    timm.create_model(
      timm_hub.ARCHITECTURE,
      img_size=size,
      patch_size=8,
      embed_dim=32,
      depth=2,
      num_heads=4,
      mlp_ratio=2,
      num_classes=5,
      act_layer='gelu_tanh',
      **pool,
    )
  )
  x = h.images(size)
  want = timm_logits(source, x)
  path = str(tmp_path / ('w.pth' if arch == 'token' else 'w.safetensors'))
  if path.endswith('.pth'):
    torch.save(source.state_dict(), path)
  else:
    tensor_files.write(path, {k: v.numpy() for k, v in source.state_dict().items()})
  model = h.vit(**kw)
  init = h.random_params(model, size)
  loaded = fit.load_pretrained(path, tree.unflatten(init), keep_head=True)
  assert h.relative_error(h.logits(model, tree.flatten(loaded), x), want) <= h.PARITY


def test_what_timm_cannot_hold_is_a_clear_error(tmp_path):
  flat = h.random_params(h.vit(representation_size=16), (32, 32))
  with pytest.raises(ValueError, match=r'pre_logits layer .* export --to=hf'):
    export.export(_saved(tmp_path, flat), 'timm', str(tmp_path / 'out'))
  flat = h.random_params(h.vit(posemb='sincos2d', classifier='gap'), (32, 32))
  with pytest.raises(ValueError, match="position embedding 'fixed'"):
    export.export(_saved(tmp_path, flat), 'timm', str(tmp_path / 'out'), image_size=(32, 32))
  # A timm GAP model with fc_norm (timm's default for 'avg') normalises after the mean.
  fc_norm = tiny_timm(class_token=False, global_pool='avg')
  state = {k: v.numpy() for k, v in fc_norm.state_dict().items()}
  with pytest.raises(ValueError, match='fc_norm'):
    timm_convert.to_params(state, 4)
  state = {k.replace('norm1', 'ls1'): v for k, v in state.items() if 'fc_norm' not in k}
  state['norm.weight'], state['norm.bias'] = np.ones(32), np.zeros(32)
  with pytest.raises(ValueError, match=r'no blocks.0.norm1.weight'):
    timm_convert.to_params(state, 4)


def test_register_tokens_are_refused_in_one_line():
  source = tiny_timm(reg_tokens=4, no_embed_class=True)
  state = {k: v.numpy() for k, v in source.state_dict().items()}
  with pytest.raises(ValueError) as e:
    timm_convert.to_params(state, 4, what='w.safetensors')
  assert str(e.value) == (
    'w.safetensors has 4 register tokens (timm reg_tokens), which vit_jax ViTs do not have; '
    'it cannot be converted.'
  )


def test_old_timm_pre_logits_and_missing_qkv_bias_import():
  source = tiny_timm(qkv_bias=False)
  state = {k: v.numpy() for k, v in source.state_dict().items()}
  rng = np.random.default_rng(0)
  state['pre_logits.fc.weight'] = rng.normal(size=(16, 32)).astype(np.float32)
  state['pre_logits.fc.bias'] = rng.normal(size=16).astype(np.float32)
  state['head.weight'] = rng.normal(size=(5, 16)).astype(np.float32)
  flat = timm_convert.to_params(state, num_heads=4)
  np.testing.assert_array_equal(flat['pre_logits/kernel'], state['pre_logits.fc.weight'].T)
  np.testing.assert_array_equal(flat['head/kernel'], state['head.weight'].T)
  np.testing.assert_array_equal(
    flat['Transformer/encoderblock_0/MultiHeadDotProductAttention_1/key/bias'], 0.0
  )
  # qkv rows are q | k | v, each head-major: row 8 of v is head 1, dimension 0.
  v = flat['Transformer/encoderblock_0/MultiHeadDotProductAttention_1/value/kernel']
  assert v.shape == (32, 4, 8)
  np.testing.assert_array_equal(v[:, 1, 0], state['blocks.0.attn.qkv.weight'][64 + 8])
  with pytest.raises(ValueError, match='does not record the number of heads'):
    path = '/tmp/never-written.safetensors'
    sources._state_dict(path, state, None)


def _saved(tmp_path, flat, name='ours.npz'):
  released.save(tmp_path / name, tree.unflatten(flat))
  return str(tmp_path / name)


def test_bfloat16_safetensors_round_trip_bit_exactly(tmp_path):
  # A bfloat16 state_dict as PyTorch writes it reads back bit for bit, and ours reads in torch.
  torch.manual_seed(0)
  state = {
    'blocks.0.attn.qkv.weight': torch.randn(96, 32).to(torch.bfloat16),
    'cls_token': torch.randn(1, 1, 32).to(torch.bfloat16),
    'pos_embed': torch.randn(5),
  }
  safetensors_torch.save_file(state, tmp_path / 'torch.safetensors')
  ours = tensor_files.read(tmp_path / 'torch.safetensors')
  assert sorted(ours) == sorted(state)
  for name, value in state.items():
    want = (
      value.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
      if value.dtype == torch.bfloat16
      else value.numpy()
    )
    assert ours[name].dtype == want.dtype and ours[name].shape == want.shape
    assert ours[name].tobytes() == want.tobytes()
  tensor_files.write(tmp_path / 'ours.safetensors', ours)
  back = safetensors_torch.load_file(tmp_path / 'ours.safetensors')
  for name, value in state.items():
    assert back[name].dtype == value.dtype and torch.equal(back[name], value)


@pytest.mark.parametrize('keep', ['4 bytes', 'half the header', 'half the data'])
def test_damaged_safetensors_is_one_line(tmp_path, keep):
  path = tmp_path / 'w.safetensors'
  tensor_files.write(path, {'a': np.ones((64, 64), np.float32), 'b': np.zeros(3, np.int64)})
  data = path.read_bytes()
  header = 8 + int.from_bytes(data[:8], 'little')
  cut = {'4 bytes': 4, 'half the header': header // 2, 'half the data': (header + len(data)) // 2}[
    keep
  ]
  path.write_bytes(data[:cut])
  with pytest.raises(ValueError) as e:
    tensor_files.read(path)
  message = str(e.value)
  assert message.startswith(f'{path} is not a readable .safetensors file (') and '\n' not in message


def test_a_pickled_module_is_one_plain_line(tmp_path):
  # torch's own error: several lines with terminal colour codes, urging to load it unsafely.
  path = tmp_path / 'model.pth'
  torch.save(torch.nn.Linear(2, 2), path)
  with pytest.raises(ValueError) as e:
    tensor_files.read(path)
  assert str(e.value) == (
    f'{path} holds pickled Python objects besides tensors (e.g. a whole module saved with '
    'torch.save(model)), which are not loaded: unpickling can run code. Save '
    'model.state_dict() instead.'
  )


def test_error_lines_lose_terminal_colour_codes():
  error = RuntimeError('\x1b[1mdo this only if you trust it\x1b[0m.\nmore')
  assert quiet_logs.first_line(error) == 'do this only if you trust it.'


def exact_timm(**kwargs):
  """A timm ViT built as timm builds its ViTs by default: exact (erf) GELU, random params."""
  return h.randomize_torch(timm.create_model(timm_hub.ARCHITECTURE, **kwargs))


def gelu_warnings(caplog):
  found = [r.getMessage() for r in caplog.records if 'GELU' in r.getMessage()]
  caplog.clear()
  return found


def exact_gelu_warning(path):
  return (
    f'{path} computes exact (erf) GELU, the model tanh-GELU, so outputs differ slightly from '
    'the source; build the model with exact_gelu=True (in a config: '
    '--config.model.exact_gelu=True).'
  )


def test_timm_files_of_exact_gelu_models_import_exactly(tmp_path, caplog):
  # They imported into our tanh-GELU model with ~4e-4 logit error; the model now has the field.
  args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2)
  source = exact_timm(num_classes=5, **args)
  x = h.images((32, 32))
  want = timm_logits(source, x)
  torch.save(source.state_dict(), tmp_path / 'bare.pth')  # says nothing: timm's default.
  timm.models.save_for_hf(source, tmp_path / 'hub', model_args=args, safe_serialization=True)
  exact, tanh = h.vit(exact_gelu=True), h.vit()
  init = tree.unflatten(h.random_params(exact, (32, 32)))
  for path in (str(tmp_path / 'bare.pth'), str(tmp_path / 'hub')):
    assert sources.read(path, num_heads=4).exact_gelu is True
    loaded = fit.load_pretrained(path, init, keep_head=True, exact_gelu=True)
    assert h.relative_error(h.logits(exact, tree.flatten(loaded), x), want) <= h.PARITY
    assert gelu_warnings(caplog) == []
    # Into a tanh-GELU model the outputs differ (by far more than float32 rounding), and it says so.
    loaded = fit.load_pretrained(path, init, keep_head=True)
    assert h.relative_error(h.logits(tanh, tree.flatten(loaded), x), want) > 5 * h.PARITY
    assert gelu_warnings(caplog) == [exact_gelu_warning(path)]
  # Exported again, the form goes with it: timm builds the same function from our folder.
  export.export(str(tmp_path / 'hub'), 'timm', str(tmp_path / 'again'))
  config = json.loads((tmp_path / 'again' / 'config.json').read_text())
  assert config['model_args']['act_layer'] == 'gelu'
  again = timm.create_model(f'local-dir:{tmp_path / "again"}', pretrained=True)
  assert h.relative_error(timm_logits(again, x), want) <= h.PARITY
  # Ours of the original's form record it (act_layer='gelu_tanh') and read back as such.
  flat = h.random_params(h.vit(), (32, 32))
  for out in ('ours', 'ours.safetensors'):
    export.export(_saved(tmp_path, flat), 'timm', str(tmp_path / out))
    assert sources.read(str(tmp_path / out), num_heads=4).exact_gelu is False
  assert gelu_warnings(caplog) == []


def test_predict_builds_the_gelu_form_a_timm_folder_says(tmp_path):
  # The registered `testing` model (tanh-GELU) takes the file's exact GELU.
  args = dict(img_size=32, patch_size=16, embed_dim=10, depth=1, num_heads=2, mlp_ratio=1)
  source = exact_timm(num_classes=10, **args)
  timm.models.save_for_hf(source, tmp_path / 'hub', model_args=args, safe_serialization=True)
  predictor = predictor_lib.load(str(tmp_path / 'hub'), model_name='testing')
  assert predictor.model.exact_gelu is True
  x = h.images((32, 32))
  got = predictor.model.apply({'params': predictor.params}, x)
  assert h.relative_error(got, timm_logits(source, x)) <= h.PARITY


def test_finetuning_from_an_exact_gelu_timm_file_says_which_model_to_build(
  tmp_path, digits_data_dir, caplog
):
  # A timm file shaped as the default job's model (4 blocks, width 64, 4x4 patches, GAP).
  source = exact_timm(
    img_size=16,
    patch_size=4,
    embed_dim=64,
    depth=4,
    num_heads=4,
    mlp_ratio=2,
    num_classes=10,
    class_token=False,
    global_pool='avg',
    fc_norm=False,
  )
  path = str(tmp_path / 'pre.pth')
  torch.save(source.state_dict(), path)
  config = load_config('default', data_dir=digits_data_dir, pretrained_path=path)
  assert setup_run.build(config, str(tmp_path / 'a')).model.exact_gelu is False
  assert gelu_warnings(caplog) == [exact_gelu_warning(path)]
  config = load_config(
    'default', data_dir=digits_data_dir, pretrained_path=path, model__exact_gelu=True
  )
  assert setup_run.build(config, str(tmp_path / 'b')).model.exact_gelu is True
  assert gelu_warnings(caplog) == []


def test_other_activations_are_refused_in_one_line():
  with pytest.raises(ValueError) as e:
    timm_hub.exact_gelu('w.pth', 'quick_gelu')
  assert str(e.value) == (
    "w.pth: act_layer='quick_gelu'; vit_jax's ViT computes GELU only ('gelu' or 'gelu_tanh')."
  )
