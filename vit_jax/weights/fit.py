"""Pre-trained params fitted onto a new model: for fine-tuning, or strictly for inference.

`load_pretrained` takes any source vit_jax.weights.sources reads (a released name or file,
big_vision, timm, Hugging Face, a vit_jax run) or a loaded tree, matches it key by key against
the new model's params in the released layout, resamples position embeddings and relative
tables to the new patch grid (vit_jax.weights.resample), starts a new head, and returns the
result in the model's block layout.
"""

from typing import Any, Mapping, Optional, Union

from absl import logging
import numpy as np

from vit_jax.models import layouts
from vit_jax.weights import resample
from vit_jax.weights import sources
from vit_jax.weights import spec
from vit_jax.weights import tree

_POSEMB = 'Transformer/posembed_input/'


def _describe(keys, flat) -> str:
  return tree.listing(f'{k} {tuple(np.shape(flat[k]))}' for k in sorted(keys))


def _check_gelu(source: sources.Source, exact_gelu: bool) -> None:
  if source.exact_gelu is None or source.exact_gelu == exact_gelu:
    return
  form = lambda exact: 'exact (erf) GELU' if exact else 'tanh-GELU'
  logging.warning(
    '%s computes %s, the model %s, so outputs differ slightly from the source; build the model '
    'with exact_gelu=%s (in a config: --config.model.exact_gelu=%s).',
    source.path,
    form(source.exact_gelu),
    form(exact_gelu),
    source.exact_gelu,
    source.exact_gelu,
  )


def load_pretrained(
  pretrained: Union[tree.PathLike, tree.Params],
  init_params: tree.Params,
  *,
  grid: Optional[tuple[int, int]] = None,
  pretrained_grid: Optional[tuple[int, int]] = None,
  align: str = 'corners',
  keep_head: bool = False,
  exact_gelu: bool = False,
) -> dict[str, Any]:
  """Params for a new model from pre-trained ones (a path or name, or a loaded tree).

  For fine-tuning (the default) the head is the new model's; with `keep_head=True` the head is
  loaded too, which makes this the strict loader for inference with a fine-tuned file: every
  key must be present with a compatible shape.

  Args:
    pretrained: nested params, or any path or name vit_jax.weights.sources reads: a released
      or big_vision `.npz`, a released name (`i21k:ViT-B_16`), a timm or Hugging Face
      checkpoint, a vit_jax workdir.
    init_params: the new model's freshly initialised params (boxed or not); they give the
      target structure (block layout included), shapes and dtypes, and the new head.
    grid / pretrained_grid: (h, w) patch grids of the new / pre-trained model; only needed
      when a grid is not square (otherwise inferred from the position embeddings).
    align: 'corners' (the original's scipy.ndimage.zoom(order=1); default) or 'half_pixel'
      for position-embedding resampling; see vit_jax.weights.resample for why.
    keep_head: load `head` (and `pre_logits`) instead of starting a new head.
    exact_gelu: the new model's GELU form (its `exact_gelu` field); a file that says it
      computed the other form (timm, Hugging Face) logs a warning saying which to build.

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
  target = tree.flatten_released(init_params)
  if isinstance(pretrained, Mapping):
    restored = tree.flatten_released(pretrained)
  else:
    source = sources.read(pretrained, num_heads=spec.num_heads(target))
    _check_gelu(source, exact_gelu)
    restored = source.params
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
    problems.append(
      'shape mismatch: '
      + tree.listing(
        f'{k} {tuple(np.shape(restored[k]))} vs model {tuple(np.shape(target[k]))}'
        for k in sorted(mismatched)
      )
    )
  if missing:
    problems.append('missing from the checkpoint: ' + _describe(missing, target))
  if extra:
    problems.append('not in the model: ' + _describe(extra, restored))
  if problems:
    raise ValueError(
      'Pre-trained params do not fit the model ('
      + '; '.join(problems)
      + '); pick the model_name the checkpoint was trained with.'
    )
  if not keep_head and 'pre_logits/kernel' in restored and 'pre_logits/kernel' not in target:
    logging.info('Dropped the pre-trained pre_logits layer: the new model has none.')
  return layouts.convert(tree.unflatten(out), layout) if layout else tree.unflatten(out)


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
      if self.prefix and self.pretrained_grid and value.shape[1] == old[0] * old[1]:
        # A big_vision class-token file (no class row) of a grid such as 2x5 whose h*w - 1
        # rows look square to the loader's guess: the explicit grid settles it, with the zero
        # class row that file's model had.
        value = np.concatenate([np.zeros_like(value[:, :1]), value], axis=1)
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
      offsets = resample.resample_axis(
        value[: value.shape[0] - extra], 0, new_shape[0] - extra, align
      )
      return np.concatenate([offsets, value[value.shape[0] - extra :]])
    return None

  @staticmethod
  def _square(n: int, key: str) -> tuple[int, int]:
    side = resample.square_side(n, key)
    return side, side

  @staticmethod
  def _relative_grid(n: int, key: str) -> tuple[int, int]:
    side = (resample.square_side(n, key) + 1) // 2
    return side, side
