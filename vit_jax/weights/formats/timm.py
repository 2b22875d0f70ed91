"""timm's VisionTransformer state_dicts <-> our params (flat, released layout).

timm keeps q, k and v as one fused Linear (`blocks.{i}.attn.qkv`, rows q | k | v, each
head-major) and the patch embedding as an NCHW Conv2d; everything else is a rename plus the
Linear transpose (see torch_layout). Pooling in timm's terms:

  ours 'token'  class_token=True,  global_pool='token'
  ours 'gap'    class_token=False, global_pool='avg', fc_norm=False (LayerNorm on every token,
                then the mean, as ours; timm's default fc_norm for 'avg' normalises after the mean)
  ours 'map'    class_token=False, global_pool='map' (attn_pool = our MAPHead_0)

GELU: the original's tanh form is `act_layer='gelu_tanh'` in timm, timm's ViT default 'gelu'
is the exact (erf) form, which our models compute with `exact_gelu=True`; what a file says (a
Hub folder's model_args, our .safetensors headers; a bare state_dict: timm's default) is
`exact_gelu(...)`, and exports write the model's form. LayerNorm eps is 1e-6 in both.
timm's ViT has no pre-logits layer (its loader drops the released files' one); old timm state_dicts with `pre_logits.fc` still import. A class token
without a position of its own (DeiT-3's no_embed_class) imports with a zero class row, the
same model; register tokens are refused in one line.
"""

import json
import os
import re
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from vit_jax.weights import resample
from vit_jax.weights import spec as spec_lib
from vit_jax.weights.formats import tensor_files
from vit_jax.weights.formats import torch_layout as tl

ARCHITECTURE = 'vit_base_patch16_224'  # any timm ViT name; model_args set every size.
_POSEMB = 'Transformer/posembed_input/pos_embedding'
_BLOCK = re.compile(r'^blocks\.(\d+)\.')
_POOL = {'token': 'token', 'gap': 'avg', 'map': 'map'}
# ours (under a block) <- timm (under blocks.{i}.), for the plain renames.
_NORMS = {'LayerNorm_0': 'norm1', 'LayerNorm_2': 'norm2'}
_MLP = {'Dense_0': 'fc1', 'Dense_1': 'fc2'}


def is_timm(state_dict: Mapping[str, Any]) -> bool:
  return 'patch_embed.proj.weight' in state_dict


class _Reader:
  """Pops entries of a state_dict so that whatever is left at the end can be reported."""

  def __init__(self, state_dict: Mapping[str, Any], what: str):
    self.left = dict(state_dict)
    self.what = what

  def has(self, key: str) -> bool:
    return key in self.left

  def pop(self, key: str, default: Any = None) -> Any:
    if key not in self.left:
      if default is not None:
        return default
      raise ValueError(f'{self.what} has no {key}; is it a plain ViT state_dict?')
    return np.asarray(self.left.pop(key))

  def linear(self, prefix: str):
    weight = self.pop(prefix + '.weight')
    return weight, self.pop(prefix + '.bias', np.zeros(weight.shape[0], weight.dtype))

  def norm(self, prefix: str) -> dict[str, np.ndarray]:
    return {'scale': self.pop(prefix + '.weight'), 'bias': self.pop(prefix + '.bias')}

  def finish(self, hint: str) -> None:
    if self.left:
      keys = sorted(self.left)
      raise ValueError(
        f'{self.what} has parameters vit_jax has no place for: '
        f'{", ".join(keys[:8])}{" ..." if len(keys) > 8 else ""} ({hint}).'
      )


def _put(flat: dict, prefix: str, **arrays) -> None:
  for name, value in arrays.items():
    flat[f'{prefix}/{name}'] = value


def to_params(
  state_dict: Mapping[str, Any],
  num_heads: int,
  what: str = 'the timm state_dict',
  no_embed_class: Optional[bool] = None,
) -> dict[str, np.ndarray]:
  """A timm VisionTransformer state_dict (NumPy arrays) -> flat params, released layout.

  Args:
    state_dict: {timm name: array}.
    num_heads: heads of the model (timm's fused qkv does not record it).
    what: how errors name the source (e.g. its path).
    no_embed_class: timm's model argument, where known (a Hub folder's config.json); None:
      told from the position embedding's rows (see _no_embed_class).

  Raises:
    ValueError: naming timm parameters that have no equivalent here (fc_norm, layer scale,
      register tokens, qk-norm, ...).
  """
  if 'fc_norm.weight' in state_dict:
    raise ValueError(
      f"{what} normalises after pooling (fc_norm); vit_jax's gap classifier "
      'normalises each token before the mean (timm fc_norm=False).'
    )
  r = _Reader(state_dict, what)
  if r.has('reg_token'):  # before the position embedding: it would fail there, misleadingly.
    raise ValueError(
      f'{what} has {np.shape(state_dict["reg_token"])[1]} register tokens (timm reg_tokens), '
      'which vit_jax ViTs do not have; it cannot be converted.'
    )
  flat = {}
  posemb = r.pop('pos_embed')
  if r.has('cls_token'):
    flat['cls'] = r.pop('cls_token')
    if _no_embed_class(posemb.shape[1]) if no_embed_class is None else no_embed_class:
      # timm adds the position embedding before it prepends the class token (DeiT-3 style);
      # ours is added after: a zero class row adds nothing to it, so the two are one model.
      posemb = np.concatenate([np.zeros_like(posemb[:, :1]), posemb], axis=1)
  flat[_POSEMB] = posemb
  weight, bias = r.linear('patch_embed.proj')
  _put(flat, 'embedding', kernel=tl.conv(weight), bias=bias)
  layers = sorted({int(m.group(1)) for m in map(_BLOCK.match, state_dict) if m})
  for i in layers:
    t, o = f'blocks.{i}', f'Transformer/encoderblock_{i}'
    for ours, theirs in _NORMS.items():
      _put(flat, f'{o}/{ours}', **r.norm(f'{t}.{theirs}'))
    qkv, qkv_bias = r.linear(f'{t}.attn.qkv')
    for name, w, b in zip(('query', 'key', 'value'), np.split(qkv, 3), np.split(qkv_bias, 3)):
      kernel, bias = tl.to_heads(w, b, num_heads)
      _put(flat, f'{o}/MultiHeadDotProductAttention_1/{name}', kernel=kernel, bias=bias)
    kernel, bias = tl.out_to_heads(*r.linear(f'{t}.attn.proj'), num_heads)
    _put(flat, f'{o}/MultiHeadDotProductAttention_1/out', kernel=kernel, bias=bias)
    for ours, theirs in _MLP.items():
      kernel, bias = tl.dense(*r.linear(f'{t}.mlp.{theirs}'))
      _put(flat, f'{o}/MlpBlock_3/{ours}', kernel=kernel, bias=bias)
  _put(flat, 'Transformer/encoder_norm', **r.norm('norm'))
  if r.has('attn_pool.latent'):
    _map_head_to_params(r, flat, num_heads)
  for ours, theirs in (('pre_logits', 'pre_logits.fc'), ('head', 'head')):
    if r.has(theirs + '.weight'):
      kernel, bias = tl.dense(*r.linear(theirs))
      _put(flat, ours, kernel=kernel, bias=bias)
  r.finish(
    'vit_jax converts plain timm ViTs: class token or avg/map pooling, no layer scale, '
    'register tokens or qk-norm'
  )
  return flat


def _no_embed_class(rows: int) -> bool:
  """Whether a class-token model's position embedding of `rows` rows leaves the class token
  out (timm no_embed_class=True): a square grid without a class row. Square grids only: a
  non-square grid of h*w rows is told from one of h*w - 1 rows + a class row by the image
  size, which a state_dict does not record (it then fails the grid check in one line)."""
  return resample.is_square(rows) and not resample.is_square(rows - 1)


def _map_head_to_params(r: _Reader, flat: dict, num_heads: int) -> None:
  m = 'MAPHead_0'
  flat[f'{m}/probe'] = r.pop('attn_pool.latent')
  kernel, bias = tl.to_heads(*r.linear('attn_pool.q'), num_heads)
  _put(flat, f'{m}/MultiHeadDotProductAttention_0/query', kernel=kernel, bias=bias)
  kv, kv_bias = r.linear('attn_pool.kv')
  for name, w, b in zip(('key', 'value'), np.split(kv, 2), np.split(kv_bias, 2)):
    kernel, bias = tl.to_heads(w, b, num_heads)
    _put(flat, f'{m}/MultiHeadDotProductAttention_0/{name}', kernel=kernel, bias=bias)
  kernel, bias = tl.out_to_heads(*r.linear('attn_pool.proj'), num_heads)
  _put(flat, f'{m}/MultiHeadDotProductAttention_0/out', kernel=kernel, bias=bias)
  _put(flat, f'{m}/LayerNorm_0', **r.norm('attn_pool.norm'))
  for ours, theirs in _MLP.items():
    kernel, bias = tl.dense(*r.linear(f'attn_pool.mlp.{theirs}'))
    _put(flat, f'{m}/MlpBlock_0/{ours}', kernel=kernel, bias=bias)


def check_exportable(spec: spec_lib.VitSpec) -> None:
  """ValueError, saying what to do instead, for a ViT timm's VisionTransformer cannot be."""
  if spec.hybrid:
    raise ValueError(
      'this is a hybrid (ResNet + ViT) model; its timm equivalent is not '
      'supported here, export --to=npz instead.'
    )
  if spec.posemb != 'learn':
    raise ValueError(
      f"position embedding {spec.posemb!r}: timm's VisionTransformer has only "
      'the learned 1-D one; export --to=npz instead.'
    )
  if spec.representation_size is not None:
    raise ValueError(
      "this model has a pre_logits layer and timm's VisionTransformer has "
      'none; export --to=hf (a ViTModel whose pooler is pre_logits) or --to=npz.'
    )
  if spec.mlp_dim != int(spec.hidden_size * (spec.mlp_dim / spec.hidden_size)):
    raise ValueError(
      f'timm sizes MLPs as int(embed_dim * mlp_ratio), which cannot give mlp_dim '
      f'{spec.mlp_dim} at width {spec.hidden_size}; export --to=npz instead.'
    )


def from_params(flat: Mapping[str, Any], spec: spec_lib.VitSpec) -> dict[str, np.ndarray]:
  """Flat params (released layout) -> a timm VisionTransformer state_dict of NumPy arrays."""
  check_exportable(spec)
  sd = {}
  if spec.classifier == 'token':
    sd['cls_token'] = flat['cls']
  sd['pos_embed'] = flat[_POSEMB]
  sd['patch_embed.proj.weight'] = tl.torch_conv(flat['embedding/kernel'])
  sd['patch_embed.proj.bias'] = flat['embedding/bias']
  for i in range(spec.num_layers):
    t, o = f'blocks.{i}', f'Transformer/encoderblock_{i}'
    for ours, theirs in _NORMS.items():
      sd[f'{t}.{theirs}.weight'] = flat[f'{o}/{ours}/scale']
      sd[f'{t}.{theirs}.bias'] = flat[f'{o}/{ours}/bias']
    a = f'{o}/MultiHeadDotProductAttention_1'
    qkv = [
      tl.from_heads(flat[f'{a}/{n}/kernel'], flat[f'{a}/{n}/bias'])
      for n in ('query', 'key', 'value')
    ]
    sd[f'{t}.attn.qkv.weight'] = np.concatenate([w for w, _ in qkv])
    sd[f'{t}.attn.qkv.bias'] = np.concatenate([b for _, b in qkv])
    sd[f'{t}.attn.proj.weight'], sd[f'{t}.attn.proj.bias'] = tl.out_from_heads(
      flat[f'{a}/out/kernel'], flat[f'{a}/out/bias']
    )
    for ours, theirs in _MLP.items():
      sd[f'{t}.mlp.{theirs}.weight'], sd[f'{t}.mlp.{theirs}.bias'] = tl.linear(
        flat[f'{o}/MlpBlock_3/{ours}/kernel'], flat[f'{o}/MlpBlock_3/{ours}/bias']
      )
  sd['norm.weight'] = flat['Transformer/encoder_norm/scale']
  sd['norm.bias'] = flat['Transformer/encoder_norm/bias']
  if spec.classifier == 'map':
    sd.update(_map_head_from_params(flat))
  if spec.num_classes:
    sd['head.weight'], sd['head.bias'] = tl.linear(flat['head/kernel'], flat['head/bias'])
  return sd


def _map_head_from_params(flat: Mapping[str, Any]) -> dict[str, np.ndarray]:
  m, a = 'MAPHead_0', 'MAPHead_0/MultiHeadDotProductAttention_0'
  sd = {'attn_pool.latent': flat[f'{m}/probe']}
  sd['attn_pool.q.weight'], sd['attn_pool.q.bias'] = tl.from_heads(
    flat[f'{a}/query/kernel'], flat[f'{a}/query/bias']
  )
  kv = [tl.from_heads(flat[f'{a}/{n}/kernel'], flat[f'{a}/{n}/bias']) for n in ('key', 'value')]
  sd['attn_pool.kv.weight'] = np.concatenate([w for w, _ in kv])
  sd['attn_pool.kv.bias'] = np.concatenate([b for _, b in kv])
  sd['attn_pool.proj.weight'], sd['attn_pool.proj.bias'] = tl.out_from_heads(
    flat[f'{a}/out/kernel'], flat[f'{a}/out/bias']
  )
  sd['attn_pool.norm.weight'] = flat[f'{m}/LayerNorm_0/scale']
  sd['attn_pool.norm.bias'] = flat[f'{m}/LayerNorm_0/bias']
  for ours, theirs in _MLP.items():
    sd[f'attn_pool.mlp.{theirs}.weight'], sd[f'attn_pool.mlp.{theirs}.bias'] = tl.linear(
      flat[f'{m}/MlpBlock_0/{ours}/kernel'], flat[f'{m}/MlpBlock_0/{ours}/bias']
    )
  return sd


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
  state_dict = from_params(flat, spec)
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
  return to_params(tensor_files.read(path), heads, what=path, no_embed_class=no_embed_class)
