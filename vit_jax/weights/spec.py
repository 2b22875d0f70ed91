"""What a checkpoint's params say about the model that made them: the one architecture guesser.

Our params name most of a model: widths and the patch size are shapes, the number of heads is
the query kernel's [D, heads, head_dim], the pooling is which of `cls` / `MAPHead_0` exists,
the position embedding which of its parameters exist, the image size what the learned
position embedding (or a Mixer's token MLP) was made for. `infer` reads a whole ViT for the
exporters; `model_fields` and `image_size` fit a registered model to a file for `predict`,
`export` and `analyze`. Not in the params: a non-square image size, and the parameter-free
position embeddings ('sincos2d' and 'none' look alike).
"""

import dataclasses
import math
import re
from typing import Any, Mapping, Optional

import numpy as np

_POSEMB = 'Transformer/posembed_input/pos_embedding'
_QUERY = re.compile(
  r'^Transformer/encoderblock_(\d+)/MultiHeadDotProductAttention_1/query/'
  r'kernel$'
)
# Parameter names -> the position embedding that has them.
_POSEMB_KEYS = (
  (_POSEMB, 'learn'),
  (_POSEMB + '_row', 'learn_2d'),
  ('/relative_position_bias', 'relative_bias'),
  ('/relative_embedding', 'relative'),
  ('/relative_embedding_y', 'relative_2d'),
)


@dataclasses.dataclass(frozen=True)
class VitSpec:
  """What another codebase needs to build the same ViT."""

  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  patch_size: tuple[int, int]
  image_size: Optional[tuple[int, int]]  # None when no learned 1-D position embedding says it.
  classifier: str  # 'token', 'gap' or 'map'.
  # 'learn', 'learn_2d', 'relative', 'relative_2d', 'relative_bias' or 'fixed' (sincos2d / none:
  # no parameters).
  posemb: str
  representation_size: Optional[int]
  num_classes: int  # 0: no head (features).
  hybrid: bool  # a ResNet stem feeds the patch embedding.
  # Exact (erf) GELU instead of the tanh form; not in the params: the run's config or the
  # source file says (vit_jax.weights.sources.Source.exact_gelu).
  exact_gelu: bool = False

  @property
  def grid(self) -> Optional[tuple[int, int]]:
    if self.image_size is None:
      return None
    return (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])


def num_heads(flat: Mapping[str, Any]) -> Optional[int]:
  """Heads of a ViT's params (flat, released layout); None for a tree without attention."""
  for key, value in flat.items():
    if _QUERY.match(key):
      return int(np.shape(value)[1])
  return None


def num_classes(flat: Mapping[str, Any]) -> int:
  """Classes of the head; 0 for params without one (features)."""
  return int(np.shape(flat['head/kernel'])[1]) if 'head/kernel' in flat else 0


def representation_size(flat: Mapping[str, Any]) -> Optional[int]:
  """Width of the pre-logits layer; None without one."""
  return int(np.shape(flat['pre_logits/kernel'])[1]) if 'pre_logits/kernel' in flat else None


def classifier(flat: Mapping[str, Any]) -> str:
  """'token' (a class token), 'map' (a MAP head) or 'gap' (neither)."""
  return 'token' if 'cls' in flat else 'map' if 'MAPHead_0/probe' in flat else 'gap'


def posemb(flat: Mapping[str, Any]) -> Optional[str]:
  """The position embedding whose parameters the params hold; None for the parameter-free ones
  ('sincos2d', 'none')."""
  for suffix, kind in _POSEMB_KEYS:
    if any(k.endswith(suffix) for k in flat):
      return kind
  return None


def tokens(flat: Mapping[str, Any]) -> Optional[int]:
  """Patches per image that the params were made for: the learned position embeddings' (the
  class token's row left out) or a Mixer's token MLP's; None when nothing says."""
  if _POSEMB in flat:
    return np.shape(flat[_POSEMB])[1] - (classifier(flat) == 'token')
  row, col = flat.get(_POSEMB + '_row'), flat.get(_POSEMB + '_col')
  if row is not None and col is not None:
    return np.shape(row)[1] * np.shape(col)[1]
  token_mixing = flat.get('MixerBlock_0/token_mixing/Dense_0/kernel')
  if token_mixing is not None:
    return np.shape(token_mixing)[0]
  return None


def square_image_size(flat: Mapping[str, Any], stride: int) -> Optional[int]:
  """The side of the square images the params were made for, at `stride` pixels per token;
  None when they do not say (or the grid is not square)."""
  n = tokens(flat)
  side = math.isqrt(n) if n else 0
  return side * stride if side and side * side == n else None


def model_fields(flat: Mapping[str, Any], model: Any) -> dict[str, Any]:
  """Fields of a registered `model` to change so that it has the params' head, pre-logits
  layer and position embedding (e.g. ViT-B_16's ImageNet-21k files keep a pre_logits layer,
  an ablation's file another position embedding). Fields the model lacks are left alone."""
  fields = {'num_classes': num_classes(flat), 'representation_size': representation_size(flat)}
  kind = posemb(flat)
  if kind is not None:  # the parameter-free kinds cannot be told apart: the model's is kept.
    fields['posemb'] = kind
  return {k: v for k, v in fields.items() if hasattr(model, k) and getattr(model, k) != v}


def infer(flat: Mapping[str, Any], image_size: Optional[tuple[int, int]] = None) -> VitSpec:
  """The VitSpec of a ViT's flat params; ValueError naming what is missing or inconsistent."""
  if 'embedding/kernel' not in flat or num_heads(flat) is None:
    raise ValueError(
      'these params are not a ViT (no embedding/kernel or attention blocks); '
      'only ViTs convert to other formats.'
    )
  kernel = np.shape(flat['embedding/kernel'])
  layers = len({_QUERY.match(k).group(1) for k in flat if _QUERY.match(k)})
  mlp = np.shape(flat['Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel'])[1]
  patch = (int(kernel[0]), int(kernel[1]))
  kind = posemb(flat) or 'fixed'
  if kind == 'learn':
    image_size = _image_size(tokens(flat), patch, image_size)
  elif image_size is not None:
    image_size = tuple(int(x) for x in image_size)
  return VitSpec(
    hidden_size=int(kernel[3]),
    num_layers=layers,
    num_heads=num_heads(flat),
    mlp_dim=int(mlp),
    patch_size=patch,
    image_size=image_size,
    classifier=classifier(flat),
    posemb=kind,
    representation_size=representation_size(flat),
    num_classes=num_classes(flat),
    hybrid=kernel[2] != 3,
  )


def _image_size(
  n: int, patch: tuple[int, int], image_size: Optional[tuple[int, int]]
) -> tuple[int, int]:
  if image_size is not None:
    h, w = (int(x) for x in image_size)
    if h % patch[0] or w % patch[1] or (h // patch[0]) * (w // patch[1]) != n:
      raise ValueError(
        f'image size {h}x{w} does not fit the position embedding: {n} '
        f'patches of {patch[0]}x{patch[1]} pixels.'
      )
    return h, w
  side = math.isqrt(n)
  if side * side != n:
    raise ValueError(
      f'the position embedding has {n} patches, not a square grid; give the '
      'image size (--image_size=HEIGHT,WIDTH).'
    )
  return side * patch[0], side * patch[1]
