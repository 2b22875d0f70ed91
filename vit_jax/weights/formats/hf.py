"""Hugging Face ViT folders (`config.json` + `model.safetensors`) <-> our params.

  ViTForImageClassification   class token -> `classifier` (our `head`); keys under `vit.`
  ViTModel                    no head; its `pooler` (Dense + tanh on the class token) is our
                              `pre_logits`, as in the Hub's ImageNet-21k ViTs

Files are written with the Hub's long-standing key names (`encoder.layer.{i}.attention.
attention.query`, ...), which every transformers version loads (v5 renames them on load);
both those and v5's names (`layers.{i}.attention.q_proj`, ...) are read. `hidden_act` says the
GELU form ('gelu': exact, our `exact_gelu=True`; 'gelu_pytorch_tanh': the original's tanh
form), which exports write from the model. LayerNorm eps is ours, 1e-6: the Hub's converted
Google ViTs' 1e-12 imports as the same function (to float32 rounding), a larger eps warns.
No PyTorch or transformers is needed on our side: config.json is JSON, the weights
safetensors.

Hugging Face's ViT classifies the class token only and has no head after a pre-logits layer:
GAP / MAP models do not export; a model with pre_logits exports as a ViTModel (pooler =
pre_logits, the head left out, as the Hub's own conversion did).
"""

import json
import os
import re
from typing import Any, Mapping, Optional, Sequence

from absl import logging
import numpy as np

from vit_jax.weights import spec as spec_lib
from vit_jax.weights.formats import tensor_files
from vit_jax.weights.formats import torch_layout as tl

_POSEMB = 'Transformer/posembed_input/pos_embedding'
_ATTN = 'MultiHeadDotProductAttention_1'
# v5 key pieces -> the Hub's long-standing ones (what we write).
_V5_TO_HUB = [
  (re.compile(r'(^|\.)layers\.(\d+)\.'), r'\1encoder.layer.\2.'),
  (re.compile(r'\.attention\.q_proj\.'), '.attention.attention.query.'),
  (re.compile(r'\.attention\.k_proj\.'), '.attention.attention.key.'),
  (re.compile(r'\.attention\.v_proj\.'), '.attention.attention.value.'),
  (re.compile(r'\.attention\.o_proj\.'), '.attention.output.dense.'),
  (re.compile(r'\.mlp\.fc1\.'), '.intermediate.dense.'),
  (re.compile(r'\.mlp\.fc2\.'), '.output.dense.'),
]
_WEIGHTS = ('model.safetensors', 'pytorch_model.bin')
_INDEXES = ('model.safetensors.index.json', 'pytorch_model.bin.index.json')


def is_hf_config(config: Mapping[str, Any]) -> bool:
  return config.get('model_type') == 'vit'


def _hub_names(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  out = {}
  for key, value in state_dict.items():
    for pattern, replacement in _V5_TO_HUB:
      key = pattern.sub(replacement, key)
    out[key] = value
  return out


# Hugging Face's hidden_act names of the GELU forms -> exact (erf) or not.
_GELU = {
  'gelu': True,
  'gelu_python': True,
  'gelu_pytorch_tanh': False,
  'gelu_new': False,
  'gelu_fast': False,
}


def exact_gelu(what: str, config: Mapping[str, Any]) -> bool:
  """Whether the model of a Hugging Face `config` computes exact (erf) GELU (hidden_act 'gelu',
  transformers' default); any activation other than a GELU is refused (ValueError)."""
  act = config.get('hidden_act', 'gelu')
  if act not in _GELU:
    raise ValueError(
      f"{what}: hidden_act={act!r}; vit_jax's ViT computes GELU only ({', '.join(_GELU)})."
    )
  return _GELU[act]


def to_params(
  state_dict: Mapping[str, Any],
  config: Mapping[str, Any],
  what: str = 'the Hugging Face checkpoint',
) -> dict[str, np.ndarray]:
  """A ViT(ForImageClassification|Model) state_dict + its config -> flat params.

  Raises:
    ValueError: naming weights that have no place in our ViT, or a config we do not build
      (no qkv bias, other channel counts).
  """
  sd = _hub_names(state_dict)
  if config.get('num_channels', 3) != 3:
    raise ValueError(f'{what} takes {config["num_channels"]} channels; vit_jax models take 3.')
  exact_gelu(what, config)  # refuses an activation other than GELU.
  # A smaller eps (the Hub's Google ViTs: 1e-12) changes outputs below float32 rounding
  # (6e-7 relative in the tests) for any token whose variance is not itself ~1e-6: quiet.
  eps = config.get('layer_norm_eps', 1e-12)
  if eps > 1e-6:
    logging.warning(
      '%s uses layer_norm_eps=%g; vit_jax normalises with eps 1e-6, so outputs differ '
      'slightly from the source.',
      what,
      eps,
    )
  prefix = 'vit.' if any(k.startswith('vit.') for k in sd) else ''
  heads = int(config['num_attention_heads'])
  left = dict(sd)

  def pop(key):
    if key not in left:
      raise ValueError(f'{what} has no {key}; is it a ViT checkpoint?')
    return np.asarray(left.pop(key))

  def linear(key):
    return pop(key + '.weight'), pop(key + '.bias')

  e = prefix + 'embeddings.'
  flat = {'cls': pop(e + 'cls_token'), _POSEMB: pop(e + 'position_embeddings')}
  left.pop(e + 'mask_token', None)  # masked-image-modelling only.
  weight, flat['embedding/bias'] = linear(e + 'patch_embeddings.projection')
  flat['embedding/kernel'] = tl.conv(weight)
  layers = sorted(
    {
      int(m.group(1))
      for m in (re.match(re.escape(prefix) + r'encoder\.layer\.(\d+)\.', k) for k in sd)
      if m
    }
  )
  for i in layers:
    h, o = f'{prefix}encoder.layer.{i}.', f'Transformer/encoderblock_{i}/'
    for ours, theirs in (('LayerNorm_0', 'layernorm_before'), ('LayerNorm_2', 'layernorm_after')):
      flat[o + ours + '/scale'], flat[o + ours + '/bias'] = linear(h + theirs)
    for name in ('query', 'key', 'value'):
      weight = pop(f'{h}attention.attention.{name}.weight')
      bias = left.pop(
        f'{h}attention.attention.{name}.bias', np.zeros(weight.shape[0], weight.dtype)
      )
      flat[f'{o}{_ATTN}/{name}/kernel'], flat[f'{o}{_ATTN}/{name}/bias'] = tl.to_heads(
        weight, np.asarray(bias), heads
      )
    flat[f'{o}{_ATTN}/out/kernel'], flat[f'{o}{_ATTN}/out/bias'] = tl.out_to_heads(
      *linear(h + 'attention.output.dense'), heads
    )
    for ours, theirs in (('Dense_0', 'intermediate.dense'), ('Dense_1', 'output.dense')):
      flat[f'{o}MlpBlock_3/{ours}/kernel'], flat[f'{o}MlpBlock_3/{ours}/bias'] = tl.dense(
        *linear(h + theirs)
      )
  flat['Transformer/encoder_norm/scale'], flat['Transformer/encoder_norm/bias'] = linear(
    prefix + 'layernorm'
  )
  for ours, theirs in (('pre_logits', prefix + 'pooler.dense'), ('head', 'classifier')):
    if theirs + '.weight' in left:
      flat[ours + '/kernel'], flat[ours + '/bias'] = tl.dense(*linear(theirs))
  if left:
    keys = sorted(left)
    raise ValueError(
      f'{what} has weights vit_jax has no place for: {", ".join(keys[:8])}'
      f'{" ..." if len(keys) > 8 else ""}.'
    )
  return flat


def check_exportable(spec: spec_lib.VitSpec) -> None:
  """ValueError, saying what to do instead, for a ViT that Hugging Face's ViT cannot be."""
  if spec.hybrid:
    raise ValueError(
      "this is a hybrid (ResNet + ViT) model; Hugging Face's ViT has no ResNet "
      'stem, export --to=npz instead.'
    )
  if spec.posemb != 'learn':
    raise ValueError(
      f"position embedding {spec.posemb!r}: Hugging Face's ViT has only the "
      'learned 1-D one; export --to=npz instead.'
    )
  if spec.classifier != 'token':
    raise ValueError(
      f"classifier {spec.classifier!r}: Hugging Face's ViT classifies the class "
      'token only; export --to=timm (gap and map pooling) or --to=npz.'
    )


def from_params(
  flat: Mapping[str, Any], spec: spec_lib.VitSpec, class_names: Optional[Sequence[str]] = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Flat params -> (state_dict in the Hub's names, config.json dict)."""
  check_exportable(spec)
  with_pooler = spec.representation_size is not None
  classify = bool(spec.num_classes) and not with_pooler
  prefix = 'vit.' if classify else ''
  e = prefix + 'embeddings.'
  sd = {
    e + 'cls_token': flat['cls'],
    e + 'position_embeddings': flat[_POSEMB],
    e + 'patch_embeddings.projection.weight': tl.torch_conv(flat['embedding/kernel']),
    e + 'patch_embeddings.projection.bias': flat['embedding/bias'],
  }
  for i in range(spec.num_layers):
    h, o = f'{prefix}encoder.layer.{i}.', f'Transformer/encoderblock_{i}/'
    for ours, theirs in (('LayerNorm_0', 'layernorm_before'), ('LayerNorm_2', 'layernorm_after')):
      sd[h + theirs + '.weight'] = flat[o + ours + '/scale']
      sd[h + theirs + '.bias'] = flat[o + ours + '/bias']
    for name in ('query', 'key', 'value'):
      sd[f'{h}attention.attention.{name}.weight'], sd[f'{h}attention.attention.{name}.bias'] = (
        tl.from_heads(flat[f'{o}{_ATTN}/{name}/kernel'], flat[f'{o}{_ATTN}/{name}/bias'])
      )
    sd[h + 'attention.output.dense.weight'], sd[h + 'attention.output.dense.bias'] = (
      tl.out_from_heads(flat[f'{o}{_ATTN}/out/kernel'], flat[f'{o}{_ATTN}/out/bias'])
    )
    for ours, theirs in (('Dense_0', 'intermediate.dense'), ('Dense_1', 'output.dense')):
      sd[f'{h}{theirs}.weight'], sd[f'{h}{theirs}.bias'] = tl.linear(
        flat[f'{o}MlpBlock_3/{ours}/kernel'], flat[f'{o}MlpBlock_3/{ours}/bias']
      )
  sd[prefix + 'layernorm.weight'] = flat['Transformer/encoder_norm/scale']
  sd[prefix + 'layernorm.bias'] = flat['Transformer/encoder_norm/bias']
  if with_pooler:
    sd['pooler.dense.weight'], sd['pooler.dense.bias'] = tl.linear(
      flat['pre_logits/kernel'], flat['pre_logits/bias']
    )
  if classify:
    sd['classifier.weight'], sd['classifier.bias'] = tl.linear(
      flat['head/kernel'], flat['head/bias']
    )
  return sd, _config(spec, classify, with_pooler, class_names)


def _config(
  spec: spec_lib.VitSpec,
  classify: bool,
  with_pooler: bool,
  class_names: Optional[Sequence[str]] = None,
) -> dict[str, Any]:
  h, w = spec.image_size
  ph, pw = spec.patch_size
  config = {
    'architectures': ['ViTForImageClassification' if classify else 'ViTModel'],
    'model_type': 'vit',
    'hidden_size': spec.hidden_size,
    'num_hidden_layers': spec.num_layers,
    'num_attention_heads': spec.num_heads,
    'intermediate_size': spec.mlp_dim,
    'hidden_act': 'gelu' if spec.exact_gelu else 'gelu_pytorch_tanh',
    'layer_norm_eps': 1e-6,
    'hidden_dropout_prob': 0.0,
    'attention_probs_dropout_prob': 0.0,
    'initializer_range': 0.02,
    'image_size': h if h == w else [h, w],
    'patch_size': ph if ph == pw else [ph, pw],
    'num_channels': 3,
    'qkv_bias': True,
    'encoder_stride': ph,
    'torch_dtype': 'float32',
  }
  if with_pooler:
    config.update(pooler_output_size=spec.representation_size, pooler_act='tanh')
  if classify:
    names = list(class_names or (f'LABEL_{i}' for i in range(spec.num_classes)))
    if len(names) != spec.num_classes:
      raise ValueError(f'{len(names)} class names for a head of {spec.num_classes} classes.')
    config['id2label'] = {str(i): name for i, name in enumerate(names)}
    config['label2id'] = {name: i for i, name in enumerate(names)}
  return config


def _preprocessor(spec: spec_lib.VitSpec) -> dict[str, Any]:
  """ViTImageProcessor settings giving our input: the image size, pixels mapped to [-1, 1]."""
  h, w = spec.image_size
  return {
    'image_processor_type': 'ViTImageProcessor',
    'do_resize': True,
    'size': {'height': h, 'width': w},
    'resample': 2,
    'do_rescale': True,
    'rescale_factor': 1 / 255,
    'do_normalize': True,
    'image_mean': [0.5, 0.5, 0.5],
    'image_std': [0.5, 0.5, 0.5],
  }


def export(
  flat: Mapping[str, Any],
  spec: spec_lib.VitSpec,
  out: str,
  class_names: Optional[Sequence[str]] = None,
) -> str:
  """Writes a Hugging Face folder (config.json, model.safetensors, preprocessor_config.json);
  returns how to load it (one Python line). `class_names` become the config's id2label
  (default: LABEL_0, ...)."""
  if tensor_files.is_tensor_file(out):
    raise ValueError(f'--out={out}: a Hugging Face checkpoint is a folder; pass a directory.')
  state_dict, config = from_params(flat, spec, class_names)
  os.makedirs(out, exist_ok=True)
  tensor_files.write(os.path.join(out, 'model.safetensors'), state_dict)
  for name, content in (('config.json', config), ('preprocessor_config.json', _preprocessor(spec))):
    with open(os.path.join(out, name), 'w', encoding='utf-8') as f:
      json.dump(content, f, indent=2)
  cls = config['architectures'][0]
  if spec.num_classes and cls == 'ViTModel':
    logging.warning(
      "Hugging Face's ViT has no head after a pre-logits layer: wrote a ViTModel "
      'whose pooler is pre_logits, without the %d-class head.',
      spec.num_classes,
    )
  if cls == 'ViTModel' and spec.representation_size is None:  # features only, no pooler.
    return f'transformers.ViTModel.from_pretrained({out!r}, add_pooling_layer=False)'
  return f'transformers.{cls}.from_pretrained({out!r})'


def load_folder(folder: str, config: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """A Hugging Face ViT folder -> flat params (single or sharded weight files)."""
  files = [os.path.join(folder, n) for n in _WEIGHTS if os.path.isfile(os.path.join(folder, n))]
  files = files[:1]  # model.safetensors over pytorch_model.bin when both are there.
  if not files:
    for index in _INDEXES:
      if os.path.isfile(os.path.join(folder, index)):
        with open(os.path.join(folder, index), encoding='utf-8') as f:
          shards = sorted(set(json.load(f)['weight_map'].values()))
        files = [os.path.join(folder, s) for s in shards]
        break
  if not files:
    raise ValueError(
      f'{folder} has a Hugging Face config.json but no model.safetensors, '
      'pytorch_model.bin or shard index.'
    )
  state_dict = {}
  for path in files:
    state_dict.update(tensor_files.read(path))
  return to_params(state_dict, config, what=folder)
