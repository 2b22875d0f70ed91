"""Flat {name: array} files of PyTorch codebases: `.safetensors` and `.pth` / `.bin`.

`.safetensors` is read here directly (an 8-byte header length, a JSON header of names, dtypes,
shapes and byte ranges, then the raw data; memory-mapped, bfloat16 included, no PyTorch) and
written with the `safetensors` package's NumPy API. `.pth` / `.bin` need PyTorch (imported only
here, loaded with `weights_only=True`: tensors, never pickled code).
"""

import json
import os
import struct
from typing import Mapping

import ml_dtypes
import numpy as np

SAFETENSORS = ('.safetensors',)
TORCH = ('.pth', '.pt', '.bin')
_DTYPES = {
    'F64': np.float64, 'F32': np.float32, 'F16': np.float16, 'BF16': ml_dtypes.bfloat16,
    'I64': np.int64, 'I32': np.int32, 'I16': np.int16, 'I8': np.int8, 'U8': np.uint8,
    'BOOL': np.bool_,
}


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
  try:
    with open(path, 'rb') as f:
      (size,) = struct.unpack('<Q', f.read(8))
      header = json.loads(f.read(size))
    data = np.memmap(path, dtype=np.uint8, mode='r', offset=8 + size) if os.path.getsize(
        path) > 8 + size else np.zeros(0, np.uint8)
    out = {}
    for name, info in header.items():
      if name == '__metadata__':
        continue
      begin, end = info['data_offsets']
      dtype = _DTYPES[info['dtype']]
      out[name] = data[begin:end].view(dtype).reshape(info['shape'])
  except (struct.error, ValueError, KeyError, TypeError, OSError) as e:
    raise ValueError(f'{path} is not a readable .safetensors file ({type(e).__name__}: {e}).'
                     ) from None
  return out


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError('reading or writing .pth / .bin files needs PyTorch (pip install torch); '
                     '.safetensors files do not.') from None
  return torch


def _read_torch(path: str) -> dict[str, np.ndarray]:
  torch = _torch()
  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except  (pickle, zip and torch errors alike)
    first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
    raise ValueError(f'{path} is not a readable PyTorch state_dict ({first}).') from None
  for wrapper in ('state_dict', 'model'):  # training checkpoints wrap the weights.
    if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
      state = state[wrapper]
  if not isinstance(state, Mapping):
    raise ValueError(f'{path} holds a {type(state).__name__}, not a state_dict of tensors.')
  out = {}
  for name, value in state.items():
    if isinstance(value, torch.Tensor):
      name = name[len('module.'):] if name.startswith('module.') else name
      value = value.detach().cpu()
      if value.dtype == torch.bfloat16:
        value = value.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
      else:
        value = value.numpy()
      out[name] = value
  return out


def write(path, tensors: Mapping[str, np.ndarray]) -> None:
  """Writes {name: array} as `.safetensors` (no PyTorch needed) or `.pth` / `.bin`."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
  tmp = path + '.tmp'
  if path.endswith(SAFETENSORS):
    try:
      from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ValueError('writing .safetensors needs the safetensors package (pip install '
                       'safetensors).') from None
    # 'format': 'pt' is what transformers' loader expects of a PyTorch-side file.
    safetensors_numpy.save_file(tensors, tmp, metadata={'format': 'pt'})
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
