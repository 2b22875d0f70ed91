"""Pre-trained params from any supported path or name: the one place formats are told apart.

  i21k:ViT-B_16, augreg:B_16, ...  a released name (catalogue.py): downloaded once, then .npz
  file.npz[:sub/key]               released / big_vision .npz (vit_jax.weights.released.load)
  file.safetensors, .pth, .bin     a timm or Hugging Face state_dict (told apart by its keys)
  DIR with config.json + weights   a Hugging Face ViT folder (model_type 'vit') or a timm Hub
                                   folder ('architecture')
  DIR with checkpoints/            a vit_jax run (its workdir, checkpoints/ or one step folder)

`config.pretrained_path` and `fit.load_pretrained` both come here.
"""

import json
import os
from typing import Any, Optional

from etils import epath
import numpy as np

from vit_jax.weights import fit
from vit_jax.weights import released
from vit_jax.weights import tree
from vit_jax.run import orbax_io
from vit_jax.weights.formats import big_vision
from vit_jax.weights import catalogue
from vit_jax.weights.formats import hf
from vit_jax.weights.formats import tensor_files
from vit_jax.weights.formats import timm

FORMATS = ('a released name (e.g. i21k:ViT-B_16), a .npz[:subtree], .safetensors, .pth or .bin '
           'file, a Hugging Face or timm folder with config.json, or a vit_jax workdir')


def load(path: Any, num_heads: Optional[int] = None) -> dict[str, np.ndarray]:
  """Flat params ({'a/b': array}, released layout and numbering) from `path`.

  Args:
    path: see the module docstring.
    num_heads: heads of the model, needed for timm state_dicts (their fused qkv does not
      record it; load_pretrained passes the model's).

  Raises:
    FileNotFoundError, ValueError, catalogue.FetchError: one line naming the path and the fix.
  """
  path = os.fspath(path)
  url = catalogue.resolve(path)
  if url is not None:
    file, subtree = big_vision.split_subtree(url)
    path = catalogue.fetch(file) + (f':{subtree}' if subtree else '')
  file, _ = big_vision.split_subtree(path)
  if file.endswith('.npz'):
    return tree.flatten(released.load(path))
  if tensor_files.is_tensor_file(path):
    return _state_dict(path, tensor_files.read(path), num_heads)
  if os.path.isdir(path):
    config = _read_config(path)
    if config is not None and hf.is_hf_config(config):
      return hf.load_folder(path, config)
    if config is not None and 'architecture' in config:
      return timm.load_folder(path, config, num_heads)
  if '://' in path or os.path.isdir(path):
    try:
      orbax_io.find_checkpoint(path)
    except ValueError:
      pass
    else:
      return tree.flatten_released(orbax_io.load_params(path))
  if not epath.Path(path).exists():
    raise FileNotFoundError(f'{path} does not exist; pass {FORMATS}.')
  raise ValueError(f'{path} is not a checkpoint vit_jax reads; pass {FORMATS}.')


def _state_dict(path: str, state_dict: dict, num_heads: Optional[int]) -> dict[str, np.ndarray]:
  if timm.is_timm(state_dict):
    if num_heads is None:
      raise ValueError(f'{path} is a timm state_dict, which does not record the number of heads; '
                       'name the model (export --model=NAME; load_pretrained takes the heads from '
                       'the model it is given).')
    return timm.to_params(state_dict, num_heads, what=path)
  if any('embeddings.patch_embeddings' in k for k in state_dict):
    folder_config = _read_config(os.path.dirname(os.path.abspath(path)))
    if folder_config is None or not hf.is_hf_config(folder_config):
      raise ValueError(f'{path} holds Hugging Face ViT weights; pass the folder with its '
                       'config.json instead.')
    return hf.to_params(state_dict, folder_config, what=path)
  keys = sorted(state_dict)[:5]
  raise ValueError(f'{path} is neither a timm nor a Hugging Face ViT state_dict (first keys: '
                   f'{", ".join(keys)}).')


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
