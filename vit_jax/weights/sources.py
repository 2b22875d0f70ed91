"""Pre-trained params from any path or name: the one place where formats are told apart.

  i21k:ViT-B_16, augreg:B_16, ...  a released name (catalogue.py): downloaded once, then .npz
  file.npz[:sub/key]               released / big_vision .npz (vit_jax.weights.released)
  file.safetensors, .pth, .bin     a timm or Hugging Face state_dict (told apart by its keys)
  DIR with config.json + weights   a Hugging Face ViT folder (model_type 'vit') or a timm Hub
                                   folder ('architecture')
  DIR with checkpoints/            a vit_jax run (its workdir, checkpoints/ or one step folder;
                                   its newest intact checkpoint, see vit_jax.run.orbax_io)

Every reader of pre-trained params comes here: fine-tuning (`config.pretrained_path`, through
vit_jax.weights.fit), `predict`, `export` and `analyze`.
"""

import dataclasses
import json
import os
from typing import Any, Optional

from etils import epath
import numpy as np

from vit_jax.run import orbax_io
from vit_jax.run import workdir as workdir_lib
from vit_jax.system import downloads
from vit_jax.weights import catalogue
from vit_jax.weights import released
from vit_jax.weights import spec
from vit_jax.weights import tree
from vit_jax.weights.formats import big_vision
from vit_jax.weights.formats import hf
from vit_jax.weights.formats import tensor_files
from vit_jax.weights.formats import timm
from vit_jax.weights.formats import timm_hub

FORMATS = (
  'a released name (e.g. i21k:ViT-B_16), a .npz[:subtree], .safetensors, .pth or .bin '
  'file, a Hugging Face or timm folder with config.json, or a vit_jax workdir'
)


@dataclasses.dataclass
class Source:
  """Params read from a path or name, and what the source says about where they came from."""

  params: dict[str, np.ndarray]  # flat ({'a/b': array}), released layout and numbering.
  path: str  # what was read: the file, the folder, or a run's step folder.
  kind: str  # 'npz', 'timm', 'hf' or 'run'.
  model_name: Optional[str] = None  # the registered model a released name holds.
  step: Optional[int] = None  # a run's checkpoint step.
  workdir: Optional[epath.Path] = None  # a run's folder (vit_jax.run.workdir reads its files).
  # The GELU form the source computes: True exact (erf; timm's and Hugging Face's default),
  # False the original's tanh form; None when the file does not say (.npz files; a run's
  # config.json says it with the rest of its model).
  exact_gelu: Optional[bool] = None
  # (height, width) a Hugging Face or timm folder's config.json records (None: not recorded).
  image_size: Optional[tuple[int, int]] = None

  def model_fields(self, model: Any) -> dict[str, Any]:
    """Fields of a registered `model` to change so that it computes what the source did: the
    params' head, pre-logits layer and position embedding (spec.model_fields) and GELU form."""
    fields = spec.model_fields(self.params, model)
    if self.exact_gelu is not None and hasattr(model, 'exact_gelu'):
      if model.exact_gelu != self.exact_gelu:
        fields['exact_gelu'] = self.exact_gelu
    return fields


def identify(path: Any) -> Optional[str]:
  """What `path` is, without reading its arrays: 'released' (a catalogue name), 'npz', 'state_dict'
  (a timm or Hugging Face weights file), 'hf' or 'timm' (a folder with their config.json), 'run'
  (a vit_jax workdir, checkpoints or step folder), or None (nothing vit_jax reads).

  Raises:
    ValueError: a catalogue prefix with a name the catalogue does not have (one line).
  """
  path = os.path.expanduser(os.fspath(path))
  if catalogue.resolve(path) is not None:
    return 'released'
  if big_vision.split_subtree(path)[0].endswith('.npz'):
    return 'npz'
  if tensor_files.is_tensor_file(path):
    return 'state_dict'
  if os.path.isdir(path):
    config = _read_config(path)
    if config is not None and hf.is_hf_config(config):
      return 'hf'
    if config is not None and 'architecture' in config:
      return 'timm'
  return 'run' if orbax_io.is_orbax_checkpoint(path) else None


def read(path: Any, num_heads: Optional[int] = None) -> Source:
  """The params at `path` (see the module docstring), with where they came from.

  Args:
    path: a path or released name.
    num_heads: heads of the model, needed for timm state_dicts (their fused qkv does not
      record it; load_pretrained passes the model's).

  Raises:
    FileNotFoundError, ValueError, downloads.FetchError, orbax_io.CheckpointError: one line
      naming the path and the fix.
  """
  path = os.path.expanduser(os.fspath(path))  # `--flag=~/x`: the shell leaves that `~`.
  kind = identify(path)
  if kind == 'released':
    file, subtree = big_vision.split_subtree(catalogue.resolve(path))
    local = downloads.fetch(file) + (f':{subtree}' if subtree else '')
    return Source(
      tree.flatten(released.load(local)), local, 'npz', model_name=catalogue.model_name(path)
    )
  if kind == 'npz':
    return Source(tree.flatten(released.load(path)), path, 'npz')
  if kind == 'state_dict':
    kind, params, exact = _state_dict(path, tensor_files.read(path), num_heads)
    return Source(params, path, kind, exact_gelu=exact)
  if kind == 'hf':
    config = _read_config(path)
    return Source(
      hf.load_folder(path, config),
      path,
      'hf',
      exact_gelu=hf.exact_gelu(path, config),
      image_size=_pair(config.get('image_size')),
    )
  if kind == 'timm':
    config = _read_config(path)
    act_layer = config.get('model_args', {}).get('act_layer')
    return Source(
      timm_hub.load_folder(path, config, num_heads),
      path,
      'timm',
      exact_gelu=timm_hub.exact_gelu(path, act_layer),
      image_size=_pair(config.get('model_args', {}).get('img_size')),
    )
  if kind == 'run':
    params, directory, step = orbax_io.read_params(path)
    return Source(
      tree.flatten_released(params),
      os.fspath(directory / str(step)),
      'run',
      step=step,
      workdir=workdir_lib.root_of(directory),
    )
  if not epath.Path(path).exists():
    raise FileNotFoundError(f'{path} does not exist; pass {FORMATS}.')
  if epath.Path(path).is_dir():
    raise ValueError(
      f'No Orbax checkpoint found at {path}, nor the config.json of a Hugging '
      f'Face or timm folder; pass {FORMATS}.'
    )
  raise ValueError(f'{path} is not a checkpoint vit_jax reads; pass {FORMATS}.')


def load(path: Any, num_heads: Optional[int] = None) -> dict[str, np.ndarray]:
  """Flat params ({'a/b': array}, released layout and numbering) from `path`; see
  `read`."""
  return read(path, num_heads).params


def _state_dict(
  path: str, state_dict: dict, num_heads: Optional[int]
) -> tuple[str, dict[str, np.ndarray], bool]:
  """('timm' or 'hf', flat params, exact GELU) of a state_dict file."""
  if timm.is_timm(state_dict):
    if num_heads is None:
      raise ValueError(
        f'{path} is a timm state_dict, which does not record the number of heads; '
        'name the model (export --model=NAME; load_pretrained takes the heads from '
        'the model it is given).'
      )
    exact = timm_hub.exact_gelu(path, tensor_files.metadata(path).get('act_layer'))
    return 'timm', timm.to_params(state_dict, num_heads, what=path), exact
  if any('embeddings.patch_embeddings' in k for k in state_dict):
    folder_config = _read_config(os.path.dirname(os.path.abspath(path)))
    if folder_config is None or not hf.is_hf_config(folder_config):
      raise ValueError(
        f'{path} holds Hugging Face ViT weights; pass the folder with its config.json instead.'
      )
    exact = hf.exact_gelu(path, folder_config)
    return 'hf', hf.to_params(state_dict, folder_config, what=path), exact
  keys = sorted(state_dict)[:5]
  raise ValueError(
    f'{path} is neither a timm nor a Hugging Face ViT state_dict (first keys: {", ".join(keys)}).'
  )


def _pair(size: Any) -> Optional[tuple[int, int]]:
  """A config's image size (one number, or [h, w]) as (h, w); None when it is not one."""
  if isinstance(size, int) and size > 0:
    return (size, size)
  if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(x, int) for x in size):
    return (size[0], size[1])
  return None


def _read_config(folder: str) -> Optional[dict[str, Any]]:
  """config.json of a folder, or None when it has none or it is not a JSON object."""
  file = os.path.join(folder, 'config.json')
  if not os.path.isfile(file):
    return None
  try:
    with open(file, encoding='utf-8') as f:
      config = json.load(f)
  except ValueError:
    return None
  return config if isinstance(config, dict) else None
