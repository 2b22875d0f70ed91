"""timm's files and Hub folders: how timm builds our ViT, and what its files say of it.

`model_kwargs` are timm.create_model's arguments for a ViT (LayerNorm eps 1e-6 in both); an
exported `.safetensors` / `.pth` loads with `overlay`'s pretrained_cfg_overlay, a folder in
timm's Hub layout (`config.json` + `model.safetensors`, `hub_config`) with
`timm.create_model('local-dir:DIR', pretrained=True)`. The conversion of the state_dicts
themselves is timm.py.

GELU: the original's tanh form is `act_layer='gelu_tanh'` in timm, timm's ViT default 'gelu'
the exact (erf) form, which our models compute with `exact_gelu=True`; what a file says (a Hub
folder's model_args, our .safetensors headers; a bare state_dict: timm's default) is
`exact_gelu(...)`, and exports write the model's form.
"""

import json
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from vit_jax.weights import spec as spec_lib
from vit_jax.weights.formats import tensor_files
from vit_jax.weights.formats import timm

ARCHITECTURE = 'vit_base_patch16_224'  # any timm ViT name; model_args set every size.
_POOL = {'token': 'token', 'gap': 'avg', 'map': 'map'}


def _size(pair: tuple[int, int]):
  return pair[0] if pair[0] == pair[1] else list(pair)


def model_kwargs(spec: spec_lib.VitSpec) -> dict[str, Any]:
  """Keyword arguments of timm.create_model(ARCHITECTURE, ...) that build this ViT."""
  return dict(
    img_size=_size(spec.image_size),
    patch_size=_size(spec.patch_size),
    embed_dim=spec.hidden_size,
    depth=spec.num_layers,
    num_heads=spec.num_heads,
    mlp_ratio=spec.mlp_dim / spec.hidden_size,
    num_classes=spec.num_classes,
    class_token=spec.classifier == 'token',
    global_pool=_POOL[spec.classifier],
    fc_norm=False,
    act_layer='gelu' if spec.exact_gelu else 'gelu_tanh',
  )


def overlay(spec: spec_lib.VitSpec, file: str) -> dict[str, Any]:
  """`pretrained_cfg_overlay` that makes timm.create_model load a single exported file.

  num_classes must be the head's: on a mismatch timm drops the file's head without a word.
  """
  return dict(file=file, num_classes=spec.num_classes, custom_load=False)


def hub_config(
  spec: spec_lib.VitSpec, class_names: Optional[Sequence[str]] = None
) -> dict[str, Any]:
  """timm's `config.json` (its Hugging Face Hub format) for `timm.create_model('local-dir:..')`;
  `class_names` go to pretrained_cfg's label_names (model.pretrained_cfg['label_names'])."""
  h, w = spec.image_size
  names = {}
  if class_names is not None:
    if len(class_names) != spec.num_classes:
      raise ValueError(f'{len(class_names)} class names for a head of {spec.num_classes} classes.')
    names = {'label_names': list(class_names)}
  return {
    'architecture': ARCHITECTURE,
    'num_classes': spec.num_classes,
    'num_features': spec.hidden_size,
    'global_pool': _POOL[spec.classifier],
    'model_args': model_kwargs(spec),
    'pretrained_cfg': {
      'tag': 'vit_jax',
      'custom_load': False,
      'input_size': [3, h, w],
      'fixed_input_size': True,
      'interpolation': 'bilinear',
      'crop_pct': 1.0,
      'crop_mode': 'center',
      # Our models take pixels in [-1, 1]: (x - 0.5) / 0.5 of timm's [0, 1] input.
      'mean': [0.5, 0.5, 0.5],
      'std': [0.5, 0.5, 0.5],
      'num_classes': spec.num_classes,
      'pool_size': None,
      'first_conv': 'patch_embed.proj',
      'classifier': 'head',
      **names,
    },
  }


def export(
  flat: Mapping[str, Any],
  spec: spec_lib.VitSpec,
  out: str,
  class_names: Optional[Sequence[str]] = None,
) -> str:
  """Writes a timm checkpoint; returns how to load it (one Python line).

  `out` ending in .safetensors / .pth / .bin: that one state_dict file (no room for class
  names). Otherwise a folder in timm's Hub layout: `model.safetensors` + `config.json` (with
  `class_names` as pretrained_cfg's label_names), loaded by
  `timm.create_model('local-dir:OUT', pretrained=True)`.
  """
  state_dict = timm.from_params(flat, spec)
  kwargs = ', '.join(f'{k}={v!r}' for k, v in model_kwargs(spec).items())
  if tensor_files.is_tensor_file(out):
    tensor_files.write(out, state_dict, meta={'act_layer': model_kwargs(spec)['act_layer']})
    cfg = ', '.join(f'{k}={v!r}' for k, v in overlay(spec, out).items())
    return (
      f'timm.create_model({ARCHITECTURE!r}, pretrained=True, '
      f'pretrained_cfg_overlay=dict({cfg}), {kwargs})'
    )
  os.makedirs(out, exist_ok=True)
  tensor_files.write(os.path.join(out, 'model.safetensors'), state_dict)
  with open(os.path.join(out, 'config.json'), 'w', encoding='utf-8') as f:
    json.dump(hub_config(spec, class_names), f, indent=2)
  return f"timm.create_model('local-dir:{out}', pretrained=True)"


# timm's act_layer names of the GELU forms -> exact (erf) or not.
_GELU = {'gelu': True, 'gelu_tanh': False}


def exact_gelu(what: str, act_layer: Optional[str]) -> bool:
  """Whether timm builds the model of `what` with exact (erf) GELU: act_layer 'gelu', timm's
  ViT default, so also when the file does not say (a bare state_dict); 'gelu_tanh' is the
  original's form. Any other activation is refused (ValueError, one line)."""
  act = act_layer or 'gelu'
  if act not in _GELU:
    raise ValueError(
      f"{what}: act_layer={act!r}; vit_jax's ViT computes GELU only ('gelu' or 'gelu_tanh')."
    )
  return _GELU[act]


def load_folder(
  folder: str, config: Mapping[str, Any], num_heads: Optional[int]
) -> dict[str, np.ndarray]:
  """A timm Hub-layout folder (config.json + weights) -> flat params."""
  heads = config.get('model_args', {}).get('num_heads') or num_heads
  if heads is None:
    raise ValueError(
      f'{folder}/config.json does not give model_args.num_heads; name the '
      'model (export --model=NAME; load_pretrained takes the heads from the model '
      'it is given).'
    )
  path = next(
    (
      os.path.join(folder, n)
      for n in ('model.safetensors', 'pytorch_model.bin')
      if os.path.isfile(os.path.join(folder, n))
    ),
    None,
  )
  if path is None:
    raise ValueError(
      f'{folder} has a timm config.json but no model.safetensors or pytorch_model.bin.'
    )
  no_embed_class = config.get('model_args', {}).get('no_embed_class')  # None: told by shape.
  return timm.to_params(tensor_files.read(path), heads, what=path, no_embed_class=no_embed_class)
