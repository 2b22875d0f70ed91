"""The released `.npz` checkpoint format: load, save, and load_pretrained for fine-tuning.

A released file is a NumPy `.npz` whose keys are '/'-joined parameter paths, e.g.
`Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel`. Inside encoder
blocks the released files use the pre-Linen numbering (LayerNorm_0,
MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3), which is also our models' numbering;
files written by Linen code (MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0, as
big_vision writes) load too. `save` always writes the released numbering, so tools that read
released files (the original repo, timm's `_load_weights`) read ours unchanged.

Encoder blocks come in two layouts (see vit_jax.layouts): one subtree per block (released) or
stacked for `scan=True` models (big_vision's scanned files). `load` reads either, `save`
always writes the released one, and `load_pretrained` returns the layout of the model it is
given, so released files and scanned models mix freely.

big_vision's files load too (`params/` prefix, top-level `pos_embedding`, and
`file.npz:img` for a sub-model such as a SigLIP image tower; see vit_jax.convert.big_vision).
Other formats (timm, Hugging Face, Orbax workdirs, released names) go through
vit_jax.convert.sources, which `load_pretrained` uses for any path it is given.

Paths may be local or remote (`gs://...`): they go through `etils.epath`.
"""

import io
import os
import re
import zipfile
from typing import Any, Mapping, Optional, Union

from absl import logging
from etils import epath
import flax
import jax
import ml_dtypes
import numpy as np

from vit_jax import layouts
from vit_jax import resample
from vit_jax.convert import big_vision

PathLike = Union[str, os.PathLike, epath.Path]
Params = Mapping[str, Any]

# Linen numbering -> released numbering, inside `Transformer/encoderblock_{i}/`.
_LINEN_TO_RELEASED = {
    'LayerNorm_0': 'LayerNorm_0',
    'MultiHeadDotProductAttention_0': 'MultiHeadDotProductAttention_1',
    'LayerNorm_1': 'LayerNorm_2',
    'MlpBlock_0': 'MlpBlock_3',
}
_BLOCK = re.compile(r'^(.*encoderblock_\d+)/([^/]+)/(.*)$')
_POSEMB = 'Transformer/posembed_input/'
_MAX_LISTED = 12


def flatten(params: Params) -> dict[str, Any]:
  """Nested params (boxed with logical names or not) -> {'a/b/c': array}."""
  params = flax.core.unfreeze(flax.linen.meta.unbox(params))
  if set(params) == {'params'}:
    raise ValueError("Got a variables dict {'params': ...}; pass variables['params'] instead.")
  return flax.traverse_util.flatten_dict(params, sep='/')


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  return flax.traverse_util.unflatten_dict(dict(flat), sep='/')


def flatten_released(params: Params) -> dict[str, Any]:
  """Params of either block layout and numbering (boxed or not) -> flat, in the released
  layout and numbering: the form every converter works on."""
  params = layouts.to_loop(flax.core.unfreeze(flax.linen.meta.unbox(params)))
  return to_released_numbering(flatten(params))


_LINEN_MARK = re.compile(r'encoderblock_\d+/(MlpBlock_0|MultiHeadDotProductAttention_0)/')


def _uses_linen_numbering(flat: Mapping[str, Any]) -> bool:
  return any(_LINEN_MARK.search(k) for k in flat)


def to_released_numbering(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Renames Linen-numbered encoder-block entries to the released numbering (else unchanged)."""
  if not _uses_linen_numbering(flat):
    return dict(flat)
  out = {}
  for key, value in flat.items():
    m = _BLOCK.match(key)
    if m and m.group(2) in _LINEN_TO_RELEASED:
      key = f'{m.group(1)}/{_LINEN_TO_RELEASED[m.group(2)]}/{m.group(3)}'
    out[key] = value
  return out


def _fix_array(key: str, value: np.ndarray) -> np.ndarray:
  if value.dtype.kind == 'V' and value.dtype.itemsize == 2:
    value = value.view(ml_dtypes.bfloat16)  # np.savez stores bfloat16 as 2-byte "void".
  # Some hybrid files store GroupNorm scale/bias as [1, 1, 1, C].
  if re.search(r'(^|/)gn_\w+/(scale|bias)$', key) and value.ndim == 4:
    value = value.reshape(-1)
  return value


def load(path: PathLike, layout: str = layouts.LOOP) -> dict[str, Any]:
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
  try:
    with np.load(source, allow_pickle=False) as npz:
      flat = {k: _fix_array(k, npz[k]) for k in npz.files}
  except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
    raise ValueError(f'{path} is not a readable .npz checkpoint ({type(e).__name__}: {e}); '
                     'released checkpoints are NumPy .npz files.') from None
  if not flat:
    raise ValueError(f'{path} is an empty .npz: it holds no parameters.')
  flat = big_vision.normalize(flat, subtree, path)
  flat = flax.traverse_util.flatten_dict(layouts.to_loop(unflatten(flat)), sep='/')
  return layouts.convert(unflatten(to_released_numbering(flat)), layout)


def save(path: PathLike, params: Params) -> None:
  """Writes params (nested, boxed or not, host or device arrays, either block layout) as a
  released-format `.npz` (blocks unstacked into `encoderblock_{i}`)."""
  flat = flatten_released(params)
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


def _is_local(path: epath.Path) -> bool:
  return '://' not in os.fspath(path)


def _listing(items) -> str:
  items = list(items)
  more = f' and {len(items) - _MAX_LISTED} more' if len(items) > _MAX_LISTED else ''
  return ', '.join(items[:_MAX_LISTED]) + more


def _describe(keys, flat) -> str:
  return _listing(f'{k} {tuple(np.shape(flat[k]))}' for k in sorted(keys))


def load_pretrained(pretrained: Union[PathLike, Params], init_params: Params, *,
                    grid: Optional[tuple[int, int]] = None,
                    pretrained_grid: Optional[tuple[int, int]] = None,
                    align: str = 'corners', keep_head: bool = False) -> dict[str, Any]:
  """Params for a new model from pre-trained ones (a path or name, or a loaded tree).

  For fine-tuning (the default) the head is the new model's; with `keep_head=True` the head is
  loaded too, which makes this the strict loader for inference with a fine-tuned file: every
  key must be present with a compatible shape.

  Args:
    pretrained: nested params, or any path or name vit_jax.convert.sources reads: a released
      or big_vision `.npz`, a released name (`i21k:ViT-B_16`), a timm or Hugging Face
      checkpoint, a vit_jax workdir.
    init_params: the new model's freshly initialised params (boxed or not); they give the
      target structure (block layout included), shapes and dtypes, and the new head.
    grid / pretrained_grid: (h, w) patch grids of the new / pre-trained model; only needed
      when a grid is not square (otherwise inferred from the position embeddings).
    align: 'corners' (the original's scipy.ndimage.zoom(order=1); default) or 'half_pixel'
      for position-embedding resampling; see vit_jax.resample for why.
    keep_head: load `head` (and `pre_logits`) instead of starting a new head.

  Returns:
    Nested dict of NumPy arrays in the block layout of `init_params`, shaped and typed like
    it (unboxed): every parameter from `pretrained`, except the `head` which is the new one
    (zero kernel), a `pre_logits` layer the new model lacks (dropped), and position
    embeddings / relative bias tables resampled to the new grid (class-token row kept).
    The 1-D relative embedding of posemb='relative' cannot be resampled (a size mismatch).

  Raises:
    ValueError: naming the keys and shapes of any other mismatch.
  """
  # Matching and resampling work per block in the released layout; the result goes back
  # into the model's layout at the end.
  layout = layouts.layout_of(init_params)
  target = flatten_released(init_params)
  if isinstance(pretrained, Mapping):
    restored = flatten_released(pretrained)
  else:
    # Imported here: the converters read .npz files through this module.
    from vit_jax.convert import sources, spec  # pylint: disable=g-import-not-at-top
    restored = sources.load(pretrained, num_heads=spec.num_heads(target))
  grids = _Grids(restored, target, grid, pretrained_grid)

  fresh = () if keep_head else ('head/',)
  out, mismatched = {}, []
  for key, init_value in target.items():
    shape = np.shape(init_value)
    if key.startswith(fresh):
      value = init_value
    elif key not in restored:
      continue  # reported as missing below.
    elif np.shape(restored[key]) == shape:
      value = restored[key]
    else:
      value = grids.resample(key, restored[key], align)
      if value is None or value.shape != shape:
        mismatched.append(key)
        continue
      logging.info('Resampled %s from %s to %s', key, np.shape(restored[key]), shape)
    out[key] = np.asarray(value).astype(np.asarray(init_value).dtype)

  missing = [k for k in target if k not in restored and not k.startswith(fresh)]
  droppable = () if keep_head else ('head/', 'pre_logits/')
  extra = [k for k in restored if k not in target and not k.startswith(droppable)]
  problems = []
  if mismatched:
    problems.append('shape mismatch: ' + _listing(
        f'{k} {tuple(np.shape(restored[k]))} vs model {tuple(np.shape(target[k]))}'
        for k in sorted(mismatched)))
  if missing:
    problems.append('missing from the checkpoint: ' + _describe(missing, target))
  if extra:
    problems.append('not in the model: ' + _describe(extra, restored))
  if problems:
    raise ValueError('Pre-trained params do not fit the model (' + '; '.join(problems) +
                     '); pick the model_name the checkpoint was trained with.')
  if not keep_head and 'pre_logits/kernel' in restored and 'pre_logits/kernel' not in target:
    logging.info('Dropped the pre-trained pre_logits layer: the new model has none.')
  return layouts.convert(unflatten(out), layout) if layout else unflatten(out)


class _Grids:
  """Works out old/new patch grids and resamples position-dependent parameters."""

  def __init__(self, restored, target, grid, pretrained_grid):
    self.target = target
    # Number of tokens before the patches: the class token, if any.
    self.prefix = 1 if 'cls' in target else 0
    self.same_prefix = self.prefix == (1 if 'cls' in restored else 0)
    self.grid, self.pretrained_grid = grid, pretrained_grid

  def resample(self, key: str, value: np.ndarray, align: str) -> Optional[np.ndarray]:
    """The resampled value for a position-dependent key; None when it cannot be resampled."""
    new_shape = np.shape(self.target[key])
    if not self.same_prefix:  # e.g. class token vs none: reported as a mismatch.
      return None
    if key == _POSEMB + 'pos_embedding':
      if value.ndim != 3 or value.shape[2] != new_shape[2]:
        return None
      old = self.pretrained_grid or self._square(value.shape[1] - self.prefix, key)
      new = self.grid or self._square(new_shape[1] - self.prefix, key)
      return resample.resample_posemb(value, self.prefix, old, new, align)
    if key in (_POSEMB + 'pos_embedding_row', _POSEMB + 'pos_embedding_col'):
      if value.shape[::2] != new_shape[::2]:
        return None
      return resample.resample_axis(value, 1, new_shape[1], align)
    if key.endswith('/relative_position_bias'):
      if value.shape[1] != new_shape[1]:
        return None
      extra = 3 if self.prefix else 0
      old = self.pretrained_grid or self._relative_grid(value.shape[0] - extra, key)
      new = self.grid or self._relative_grid(new_shape[0] - extra, key)
      return resample.resample_relative_table(value, old, new, align)
    if key.endswith(('/relative_embedding_y', '/relative_embedding_x')):
      # One table per axis: the 2h - 1 (2w - 1) offsets resampled, the prefix rows kept. The
      # 1-D `relative_embedding` (raster-order offsets) has no such meaning: not resampled.
      if value.shape[1] != new_shape[1]:
        return None
      extra = 3 if self.prefix else 0
      offsets = resample.resample_axis(value[:value.shape[0] - extra], 0,
                                       new_shape[0] - extra, align)
      return np.concatenate([offsets, value[value.shape[0] - extra:]])
    return None

  @staticmethod
  def _square(n: int, key: str) -> tuple[int, int]:
    side = resample.square_side(n, key)
    return side, side

  @staticmethod
  def _relative_grid(n: int, key: str) -> tuple[int, int]:
    side = (resample.square_side(n, key) + 1) // 2
    return side, side
