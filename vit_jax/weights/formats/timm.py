"""timm's VisionTransformer state_dicts <-> our params (flat, released layout).

timm keeps q, k and v as one fused Linear (`blocks.{i}.attn.qkv`, rows q | k | v, each
head-major) and the patch embedding as an NCHW Conv2d; everything else is a rename plus the
Linear transpose (see torch_layout). Pooling in timm's terms:

  ours 'token'  class_token=True,  global_pool='token'
  ours 'gap'    class_token=False, global_pool='avg', fc_norm=False (LayerNorm on every token,
                then the mean, as ours; timm's default fc_norm for 'avg' normalises after the mean)
  ours 'map'    class_token=False, global_pool='map' (attn_pool = our MAPHead_0)

timm's ViT has no pre-logits layer (its loader drops the released files' one); old timm
state_dicts with `pre_logits.fc` still import. A class token without a position of its own
(DeiT-3's no_embed_class) imports with a zero class row, the same model; register tokens are
refused in one line. How timm builds the model and where the files go: timm_hub.py.
"""

import re
from typing import Any, Mapping, Optional

import numpy as np

from vit_jax.weights import resample
from vit_jax.weights import spec as spec_lib
from vit_jax.weights.formats import torch_layout as tl

_POSEMB = 'Transformer/posembed_input/pos_embedding'
_BLOCK = re.compile(r'^blocks\.(\d+)\.')
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
