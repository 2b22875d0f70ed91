"""Flat {name: array} files of PyTorch codebases: `.safetensors` and `.pth` / `.bin`.

`.safetensors` is read and written with the `safetensors` package's NumPy API (no PyTorch;
bfloat16 as ml_dtypes.bfloat16, whose import registers the dtype name with NumPy). Reading
memory-maps the file and copies each tensor once into its own NumPy array. The package is
imported only when such a file is used, so that importing vit_jax never loads it. `.pth` / `.bin`
need PyTorch (imported only here, loaded with `weights_only=True`: tensors, never pickled code).
"""

import os
from typing import Mapping, Optional

import ml_dtypes  # also registers the dtype name 'bfloat16' that safetensors' NumPy reads use.
import numpy as np

from vit_jax.system import quiet_logs

SAFETENSORS = ('.safetensors',)
TORCH = ('.pth', '.pt', '.bin')


def is_tensor_file(path) -> bool:
  return os.fspath(path).endswith(SAFETENSORS + TORCH)


def read(path) -> dict[str, np.ndarray]:
  """{name: array} of a `.safetensors`, `.pth`, `.pt` or `.bin` file (a state_dict)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'Checkpoint {path} does not exist; check the path.')
  if path.endswith(SAFETENSORS):
    return _read_safetensors(path)
  return _read_torch(path)


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  import safetensors
  from safetensors import numpy as safetensors_numpy

  try:
    return safetensors_numpy.load_file(path)
  except (safetensors.SafetensorError, OSError, ValueError, TypeError) as e:
    detail = f'{type(e).__name__}: {quiet_logs.first_line(e, 160)}'
    raise ValueError(f'{path} is not a readable .safetensors file ({detail}).') from None


def _torch():
  try:
    import torch
  except ImportError:
    raise ValueError(
      'reading or writing .pth / .bin files needs PyTorch (pip install torch); '
      '.safetensors files do not.'
    ) from None
  return torch


def _read_torch(path: str) -> dict[str, np.ndarray]:
  torch = _torch()
  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pickle, zip and torch errors alike
    if 'weights only load failed' in str(e).lower():
      raise ValueError(
        f'{path} holds pickled Python objects besides tensors (e.g. a whole module saved with '
        'torch.save(model)), which are not loaded: unpickling can run code. Save '
        'model.state_dict() instead.'
      ) from None
    raise ValueError(
      f'{path} is not a readable PyTorch state_dict ({quiet_logs.first_line(e, 160)}).'
    ) from None
  for wrapper in ('state_dict', 'model'):  # training checkpoints wrap the weights.
    if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
      state = state[wrapper]
  if not isinstance(state, Mapping):
    raise ValueError(f'{path} holds a {type(state).__name__}, not a state_dict of tensors.')
  out = {}
  for name, value in state.items():
    if isinstance(value, torch.Tensor):
      name = name[len('module.') :] if name.startswith('module.') else name
      value = value.detach().cpu()
      if value.dtype == torch.bfloat16:
        value = value.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
      else:
        value = value.numpy()
      out[name] = value
  return out


def metadata(path) -> dict[str, str]:
  """The string metadata of a `.safetensors` file's header ({} for other files)."""
  path = os.fspath(path)
  if not path.endswith(SAFETENSORS):
    return {}
  from safetensors import safe_open

  with safe_open(path, framework='np') as f:
    return dict(f.metadata() or {})


def write(path, tensors: Mapping[str, np.ndarray], meta: Optional[Mapping[str, str]] = None):
  """Writes {name: array} as `.safetensors` (no PyTorch needed; `meta` goes into its header)
  or `.pth` / `.bin`."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
  tmp = path + '.tmp'
  if path.endswith(SAFETENSORS):
    from safetensors import numpy as safetensors_numpy

    # 'format': 'pt' is what transformers' loader expects of a PyTorch-side file.
    safetensors_numpy.save_file(tensors, tmp, metadata={'format': 'pt', **(meta or {})})
  elif path.endswith(TORCH):
    torch = _torch()
    torch.save({k: _to_torch(torch, v) for k, v in tensors.items()}, tmp)
  else:
    raise ValueError(f'{path}: name the file .safetensors, .pth or .bin.')
  os.replace(tmp, path)


def _to_torch(torch, value: np.ndarray):
  if value.dtype == ml_dtypes.bfloat16:
    return torch.from_numpy(value.view(np.int16)).view(torch.bfloat16)
  return torch.from_numpy(value)
