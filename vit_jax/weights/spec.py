"""A ViT's architecture read from its params alone (flat keys in the released layout).

Our params name everything an exporter needs: widths and patch size are shapes, the number
of heads is the query kernel's [D, heads, head_dim], the pooling is which of `cls` /
`MAPHead_0` exists. Only a non-square image size cannot be read (the position embedding is
one row per token), so it may be given.
"""

import dataclasses
import math
import re
from typing import Any, Mapping, Optional

import numpy as np

_POSEMB = 'Transformer/posembed_input/pos_embedding'
_QUERY = re.compile(r'^Transformer/encoderblock_(\d+)/MultiHeadDotProductAttention_1/query/'
                    r'kernel$')


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


def infer(flat: Mapping[str, Any], image_size: Optional[tuple[int, int]] = None) -> VitSpec:
  """The VitSpec of a ViT's flat params; ValueError naming what is missing or inconsistent."""
  if 'embedding/kernel' not in flat or num_heads(flat) is None:
    raise ValueError('these params are not a ViT (no embedding/kernel or attention blocks); '
                     'only ViTs convert to other formats.')
  kernel = np.shape(flat['embedding/kernel'])
  layers = len({_QUERY.match(k).group(1) for k in flat if _QUERY.match(k)})
  query = np.shape(flat['Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel'])
  mlp = np.shape(flat['Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel'])[1]
  classifier = ('token' if 'cls' in flat else
                'map' if 'MAPHead_0/probe' in flat else 'gap')
  if _POSEMB in flat:
    posemb = 'learn'
  elif 'Transformer/posembed_input/pos_embedding_row' in flat:
    posemb = 'learn_2d'
  elif any(k.endswith('/relative_position_bias') for k in flat):
    posemb = 'relative_bias'
  elif any(k.endswith('/relative_embedding') for k in flat):
    posemb = 'relative'
  elif any(k.endswith('/relative_embedding_y') for k in flat):
    posemb = 'relative_2d'
  else:
    posemb = 'fixed'
  patch = (int(kernel[0]), int(kernel[1]))
  if posemb == 'learn':
    tokens = np.shape(flat[_POSEMB])[1] - (classifier == 'token')
    image_size = _image_size(tokens, patch, image_size)
  elif image_size is not None:
    image_size = tuple(int(x) for x in image_size)
  return VitSpec(
      hidden_size=int(kernel[3]), num_layers=layers, num_heads=int(query[1]), mlp_dim=int(mlp),
      patch_size=patch, image_size=image_size, classifier=classifier, posemb=posemb,
      representation_size=(int(np.shape(flat['pre_logits/kernel'])[1])
                           if 'pre_logits/kernel' in flat else None),
      num_classes=int(np.shape(flat['head/kernel'])[1]) if 'head/kernel' in flat else 0,
      hybrid=kernel[2] != 3)


def _image_size(tokens: int, patch: tuple[int, int],
                image_size: Optional[tuple[int, int]]) -> tuple[int, int]:
  if image_size is not None:
    h, w = (int(x) for x in image_size)
    if h % patch[0] or w % patch[1] or (h // patch[0]) * (w // patch[1]) != tokens:
      raise ValueError(f'image size {h}x{w} does not fit the position embedding: {tokens} '
                       f'patches of {patch[0]}x{patch[1]} pixels.')
    return h, w
  side = math.isqrt(tokens)
  if side * side != tokens:
    raise ValueError(f'the position embedding has {tokens} patches, not a square grid; give the '
                     'image size (--image_size=HEIGHT,WIDTH).')
  return side * patch[0], side * patch[1]
