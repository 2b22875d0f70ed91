"""big_vision `.npz` trees -> the released layout that vit_jax.weights reads.

What big_vision writes that the released files do not (facts from big_vision's
`utils.load_params` and `models/vit.py`):

- the params under a prefix: `params/...` (checkpoints with optax state) or `opt/target/...`
  (older Flax-optimizer checkpoints); other top-level entries (optimizer state) are dropped;
- a sub-model selected with a colon: `file.npz:img` is the image tower of a two-tower (SigLIP)
  file, `file.npz:img/head` one subtree of it;
- `pos_embedding` at the top level (in pre-2022 files `Transformer/pos_embedding`), without a
  row for the class token: big_vision adds it to the patches *before* prepending the class
  token, so the class token gets no position embedding, which is a zero row in our layout
  (`Transformer/posembed_input/pos_embedding`);
- a MAP head inlined at the top level (`probe`, `MultiHeadDotProductAttention_0`, ...) in some
  ViT-G-era files, instead of under `MAPHead_0`.

The stacked `Transformer/encoderblock` (scan) and the Linen block numbering are handled by
vit_jax.weights / vit_jax.models.layouts; MAP heads under `MAPHead_0` already have our names.
"""

import os
import re
from typing import Any, Mapping, Optional

import numpy as np

from vit_jax.weights import resample

_SUBTREE = re.compile(r'^(.+\.npz):([\w/.+-]+)$')
_PREFIXES = ('params/', 'opt/target/')
_POSEMB = 'Transformer/posembed_input/pos_embedding'
_INLINE_MAP = ('probe', 'MultiHeadDotProductAttention_0', 'LayerNorm_0', 'MlpBlock_0')


def split_subtree(path: Any) -> tuple[Any, Optional[str]]:
  """'file.npz:img/head' -> ('file.npz', 'img/head'); any other path -> (path, None)."""
  if isinstance(path, str):
    m = _SUBTREE.match(path)
    if m:
      return m.group(1), m.group(2).strip('/')
  return path, None


def _strip_prefix(flat: Mapping[str, Any]) -> dict[str, Any]:
  for prefix in _PREFIXES:
    if any(k.startswith(prefix) for k in flat):
      return {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
  return dict(flat)


def select(flat: Mapping[str, Any], subtree: Optional[str], path: str = '') -> dict[str, Any]:
  """The entries under `subtree` (prefix removed); all of `flat` for None."""
  if not subtree:
    return dict(flat)
  start = subtree + '/'
  out = {k[len(start) :]: v for k, v in flat.items() if k.startswith(start)}
  if not out:
    tops = sorted({k.split('/')[0] for k in flat})
    raise ValueError(
      f'{path} has no subtree {subtree!r}; its top-level entries are '
      f'{", ".join(tops[:12])}{" ..." if len(tops) > 12 else ""}.'
    )
  return out


def _needs_class_row(n: int) -> bool:
  """Whether a top-level pos_embedding of `n` rows lacks the class token's row.

  big_vision's files have none; pre-2022 ones had it (square grid + 1 rows).
  """
  return resample.is_square(n) or not resample.is_square(n - 1)


def normalize(
  flat: Mapping[str, Any], subtree: Optional[str] = None, path: str = ''
) -> dict[str, Any]:
  """A flat {'a/b': array} of a big_vision (or released) `.npz` -> our key layout.

  Files already in the released layout come back unchanged.
  """
  flat = select(_strip_prefix(flat), subtree, os.fspath(path))
  for old in ('pos_embedding', 'Transformer/pos_embedding'):  # the latter: pre-2022 files.
    if old in flat and _POSEMB not in flat:
      flat['pos_embedding'] = flat.pop(old)
  if 'pos_embedding' in flat and _POSEMB not in flat:
    pe = np.asarray(flat.pop('pos_embedding'))
    if 'cls' in flat and pe.ndim == 3 and _needs_class_row(pe.shape[1]):
      pe = np.concatenate([np.zeros_like(pe[:, :1]), pe], axis=1)
    flat[_POSEMB] = pe
  if 'probe' in flat and not any(k.startswith('MAPHead_0/') for k in flat):
    flat = {(f'MAPHead_0/{k}' if k.split('/')[0] in _INLINE_MAP else k): v for k, v in flat.items()}
  return flat
