"""The released `.npz` checkpoint format (and big_vision's): load and save.

A released file is a NumPy `.npz` whose keys are '/'-joined parameter paths, e.g.
`Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel`. Files written by Linen
code (big_vision) use another numbering inside encoder blocks; `load` reads both (see
vit_jax.weights.tree) and `save` always writes the released numbering, so tools that read
released files (the original repo, timm's `_load_weights`) read ours unchanged.

Encoder blocks come in two layouts (vit_jax.models.layouts): one subtree per block (released)
or stacked for `scan=True` models (big_vision's scanned files). `load` reads either, `save`
always writes the released one.

big_vision's files load too (`params/` prefix, top-level `pos_embedding`, and `file.npz:img`
for a sub-model such as a SigLIP image tower; see vit_jax.weights.formats.big_vision).

Paths may be local or remote (`gs://...`): they go through `etils.epath`.
"""

import io
import os
import re
import zipfile

from etils import epath
import flax
import jax
import ml_dtypes
import numpy as np

from vit_jax.models import layouts
from vit_jax.weights import tree
from vit_jax.weights.formats import big_vision


def _fix_array(key: str, value: np.ndarray) -> np.ndarray:
  if value.dtype.kind == 'V' and value.dtype.itemsize == 2:
    value = value.view(ml_dtypes.bfloat16)  # np.savez stores bfloat16 as 2-byte "void".
  # Some hybrid files store GroupNorm scale/bias as [1, 1, 1, C].
  if re.search(r'(^|/)gn_\w+/(scale|bias)$', key) and value.ndim == 4:
    value = value.reshape(-1)
  return value


def load(path: tree.PathLike, layout: str = layouts.LOOP) -> dict:
  """Reads a released-format `.npz` -> nested dict of NumPy arrays in our models' layout.

  Accepts released and Linen numbering, either block layout (files written from scanned
  models by big_vision included), big_vision's trees (`params/` prefix, top-level
  `pos_embedding`, `path.npz:sub/key` for a subtree such as `file.npz:img`), bfloat16 arrays
  and GroupNorm [1,1,1,C] scales. `layout='scan'` returns the blocks stacked, for models
  built with `scan=True`.
  """
  path, subtree = big_vision.split_subtree(path)
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f'Checkpoint {path} does not exist; check the path (local or gs://).')
  data = path.read_bytes() if not _is_local(path) else None
  source = io.BytesIO(data) if data is not None else os.fspath(path)
  head = data[:4] if data is not None else _head(source)
  if head[:2] != _ZIP_MAGIC:  # numpy would try it as a pickle and speak of allow_pickle.
    what = f'it starts with {head!r}, not a zip archive' if head else 'it is empty'
    raise ValueError(
      f'{path} is not an .npz file ({what}); released checkpoints are NumPy .npz files.'
    )
  try:
    with np.load(source, allow_pickle=False) as npz:
      flat = {k: _fix_array(k, npz[k]) for k in npz.files}
  except ValueError as e:
    if 'allow_pickle' not in str(e):
      raise ValueError(f'{path} is not a readable .npz checkpoint (ValueError: {e}).') from None
    raise ValueError(
      f'{path} holds pickled Python objects, which are not loaded (unpickling can run code); '
      'released checkpoints hold plain arrays only.'
    ) from None
  except (OSError, zipfile.BadZipFile, EOFError) as e:
    raise ValueError(
      f'{path} is not a readable .npz checkpoint ({type(e).__name__}: {e}); '
      'released checkpoints are NumPy .npz files.'
    ) from None
  if not flat:
    raise ValueError(f'{path} is an empty .npz: it holds no parameters.')
  flat = big_vision.normalize(flat, subtree, path)
  flat = flax.traverse_util.flatten_dict(layouts.to_loop(tree.unflatten(flat)), sep='/')
  return layouts.convert(tree.unflatten(tree.to_released_numbering(flat)), layout)


def save(path: tree.PathLike, params: tree.Params) -> None:
  """Writes params (nested, boxed or not, host or device arrays, either block layout) as a
  released-format `.npz` (blocks unstacked into `encoderblock_{i}`)."""
  flat = tree.flatten_released(params)
  flat = {k: np.asarray(jax.device_get(v)) for k, v in flat.items()}
  buffer = io.BytesIO()
  np.savez(buffer, **flat)
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if _is_local(path):  # Atomic: never leave a half-written file behind.
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)
  else:
    path.write_bytes(buffer.getvalue())


_ZIP_MAGIC = b'PK'  # an .npz is a zip archive of .npy files (PK\x05\x06 when empty).


def _head(file: str) -> bytes:
  with open(file, 'rb') as f:
    return f.read(4)


def _is_local(path: epath.Path) -> bool:
  return '://' not in os.fspath(path)
