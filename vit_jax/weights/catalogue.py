"""Released checkpoints by name -> their public URL, downloaded once into a local cache.

Names (the file lists of google-research/vision_transformer: its README, the `gsutil ls` of
the buckets in vit_jax.ipynb, and the README's table of recommended AugReg checkpoints):

  i21k:<model>      gs://vit_models/imagenet21k/<model>.npz (Mixer: gs://mixer_models/...)
  i21k+i1k:<model>  gs://vit_models/imagenet21k+imagenet2012/<model>.npz (fine-tuned, 384px;
                    ViT-B_16-224 / ViT-L_16-224 at 224px)
  i1k:<Mixer>       gs://mixer_models/imagenet1k/<model>.npz
  sam:<model>, gsam:<Mixer>   gs://vit_models/sam/, gs://mixer_models/{sam,gsam}/
  augreg:<size>     the recommended AugReg ImageNet-21k checkpoint of a size (B_16, R_Ti_16,
                    R50_L_32, ...), augreg+i1k:<size> its ImageNet fine-tune at 384px
  augreg:<file>     any file of gs://vit_models/augreg (name without .npz, e.g.
                    `B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0`); the bare
                    file name works too

Public buckets are read over HTTPS (https://storage.googleapis.com/<bucket>/<path>), so no
Google Cloud library is needed. Files are cached under $VIT_JAX_CACHE (default
~/.cache/vit_jax)/<bucket>/<path> and downloaded only when missing, atomically, with a
progress bar, checked against the size and MD5 that the server sends.
"""

import base64
import hashlib
import http.client
import os
import re
import sys
from typing import Optional
import urllib.error
import urllib.request

import tqdm

_ENV = 'VIT_JAX_CACHE'
_VIT = 'gs://vit_models'
_MIXER = 'gs://mixer_models'

_FOLDERS = {
  'i21k': {
    **{
      m: f'{_VIT}/imagenet21k'
      for m in (
        'ViT-B_16',
        'ViT-B_32',
        'ViT-B_8',
        'ViT-L_16',
        'ViT-L_32',
        'ViT-H_14',
        'R50+ViT-B_16',
        'R26+ViT-B_32',
        'R50+ViT-L_32',
      )
    },
    **{m: f'{_MIXER}/imagenet21k' for m in ('Mixer-B_16', 'Mixer-L_16')},
  },
  'i21k+i1k': {
    m: f'{_VIT}/imagenet21k+imagenet2012'
    for m in (
      'ViT-B_16',
      'ViT-B_16-224',
      'ViT-B_32',
      'ViT-B_8',
      'ViT-L_16',
      'ViT-L_16-224',
      'ViT-L_32',
      'R50+ViT-B_16',
    )
  },
  'i1k': {m: f'{_MIXER}/imagenet1k' for m in ('Mixer-B_16', 'Mixer-L_16')},
  'sam': {
    **{m: f'{_VIT}/sam' for m in ('ViT-B_16', 'ViT-B_32', 'ViT-L_16', 'ViT-L_32', 'ViT-S_16')},
    **{m: f'{_MIXER}/sam' for m in ('Mixer-B_16', 'Mixer-B_32')},
  },
  'gsam': {m: f'{_MIXER}/gsam' for m in ('Mixer-B_16', 'Mixer-B_32')},
}

# The recommended (best upstream) AugReg checkpoint per size: (ImageNet-21k file, ImageNet
# fine-tune learning rate at 384px, or None when the README lists no fine-tune).
_AUGREG = {
  'L_16': ('L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0', '0.01'),
  'B_16': ('B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0', '0.03'),
  'S_16': ('S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0', '0.03'),
  'R50_L_32': ('R50_L_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1', '0.01'),
  'R26_S_32': ('R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0', '0.01'),
  'Ti_16': ('Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0', '0.03'),
  'B_32': ('B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0', '0.01'),
  'S_32': ('S_32-i21k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0', '0.01'),
  'R_Ti_16': ('R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0', '0.03'),
  'B_8': ('B_8-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0', None),
}
# An AugReg file name: <size>-i21k-... or <size>-i1k-... (upstream), optionally
# --<dataset>-steps_... (a fine-tune).
_AUGREG_FILE = re.compile(r'^(R\d*_)?(Ti|S|B|L|H)_\d+-i(21|1)k-\d+ep-[\w.+-]+$')
# <R50_|R26_|R_>?<size>_<patch>: the model part of an AugReg size or file name.
_AUGREG_SIZE = re.compile(r'^(R\d*_)?(Ti|S|B|L|H)_(\d+)')


class FetchError(OSError):
  """A released checkpoint could not be downloaded; the message names the URL."""


def names() -> list[str]:
  """Every catalogue name (AugReg files beyond the recommended ones are accepted too)."""
  out = [f'{prefix}:{model}' for prefix, models in _FOLDERS.items() for model in models]
  out += [f'augreg:{size}' for size in _AUGREG]
  out += [f'augreg+i1k:{size}' for size, (_, lr) in _AUGREG.items() if lr]
  return sorted(out)


def resolve(name: str) -> Optional[str]:
  """The gs:// URL of a catalogue name; None when `name` is not one (e.g. a file path).

  A `:sub/key` after a name selects a subtree, as for `.npz` paths (kept on the result).
  """
  prefix, sep, rest = name.partition(':')
  if not sep and _AUGREG_FILE.match(name):
    prefix, rest = 'augreg', name
  elif not sep:
    return None
  model, _, subtree = rest.partition(':')
  suffix = f':{subtree}' if subtree else ''
  if prefix in _FOLDERS and model in _FOLDERS[prefix]:
    return f'{_FOLDERS[prefix][model]}/{model}.npz{suffix}'
  if prefix in ('augreg', 'augreg+i1k') and model in _AUGREG:
    upstream, lr = _AUGREG[model]
    if prefix == 'augreg':
      return f'{_VIT}/augreg/{upstream}.npz{suffix}'
    if lr:
      return f'{_VIT}/augreg/{upstream}--imagenet2012-steps_20k-lr_{lr}-res_384.npz{suffix}'
  if prefix == 'augreg' and _AUGREG_FILE.match(model):
    return f'{_VIT}/augreg/{model}.npz{suffix}'
  if prefix in _FOLDERS or prefix in ('augreg', 'augreg+i1k'):
    known = [n for n in names() if n.startswith(prefix + ':')]
    raise ValueError(f'{name!r} is not in the catalogue; {prefix}: has {", ".join(known)}.')
  return None


def model_name(name: str) -> Optional[str]:
  """The registered model (vit_jax.models) a catalogue name holds, e.g. 'i21k+i1k:ViT-B_16-224'
  -> 'ViT-B_16', 'augreg:R_Ti_16' -> 'R+ViT-Ti_16'; None for a path or an unknown name."""
  prefix, sep, rest = name.partition(':')
  model = rest.partition(':')[0] if sep else name
  if prefix in _FOLDERS:
    return re.sub(r'-224$', '', model) if model in _FOLDERS[prefix] else None
  if sep and prefix not in ('augreg', 'augreg+i1k'):
    return None
  match = _AUGREG_SIZE.match(model)
  if not match or (model not in _AUGREG and not _AUGREG_FILE.match(model)):
    return None
  resnet, size, patch = match.groups()
  if resnet is None:
    return f'ViT-{size}_{patch}'
  return f'R+ViT-{size}_{patch}' if resnet == 'R_' else f'{resnet[:-1]}+ViT-{size}_{patch}'


def cache_dir() -> str:
  return os.path.expanduser(os.environ.get(_ENV) or os.path.join('~', '.cache', 'vit_jax'))


def https_url(url: str) -> str:
  """gs://bucket/path -> the public HTTPS address of the object."""
  if url.startswith('gs://'):
    return 'https://storage.googleapis.com/' + url[len('gs://') :]
  return url


def fetch(url: str, progress: Optional[bool] = None) -> str:
  """The local path of `url` (gs:// or https://), downloading it once into the cache.

  The download shows a tqdm progress bar on stderr (`progress`: None = only when stderr is a
  terminal, True / False = always / never) and is checked against the server's Content-Length
  and, where Google Cloud Storage sends one, the MD5 of its `x-goog-hash` header. A file already
  in the cache is used as is, without the network.

  Raises:
    FetchError: one line naming the URL when the download fails (offline, not found) or arrives
      damaged (short, or another MD5); nothing is left in the cache then.
  """
  bucket_path = re.sub(r'^[a-z]+://(storage\.googleapis\.com/)?', '', url)
  dest = os.path.join(cache_dir(), *bucket_path.split('/'))
  if os.path.isfile(dest):
    return dest
  source = https_url(url)
  os.makedirs(os.path.dirname(dest), exist_ok=True)
  part = f'{dest}.part{os.getpid()}'
  print(f'Downloading {source} to {dest} (once).', file=sys.stderr)
  try:
    damage = _download(source, part, progress)
  except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
    _remove(part)
    reason = getattr(e, 'reason', None) or e
    raise FetchError(
      f'could not download {source} ({reason}); check the network, or download '
      f'it yourself to {dest} and rerun.'
    ) from None
  if damage:
    _remove(part)
    raise FetchError(
      f'could not download {source}: {damage}; rerun to download it again, or '
      f'download it yourself to {dest}.'
    )
  os.replace(part, dest)
  return dest


# Not pooch: it checks a download only against a hash known in advance, and the upstream
# repository publishes none for these files; GCS sends each object's MD5 with it instead.
def _download(source: str, part: str, progress: Optional[bool]) -> Optional[str]:
  """Streams `source` into the file `part`; what is wrong with what arrived, or None."""
  with urllib.request.urlopen(source, timeout=60) as response, open(part, 'wb') as f:
    length = response.headers.get('Content-Length')
    expected_size = int(length) if length and length.isdigit() else None
    expected_md5 = _gcs_md5(response.headers)
    md5 = hashlib.md5()
    size = 0
    with tqdm.tqdm(
      total=expected_size,
      unit='B',
      unit_scale=True,
      unit_divisor=1024,
      desc=source.rpartition('/')[2],
      file=sys.stderr,
      disable=None if progress is None else not progress,
    ) as bar:
      while chunk := response.read(1 << 20):
        f.write(chunk)
        md5.update(chunk)
        size += len(chunk)
        bar.update(len(chunk))
  # http.client returns a body cut short by a closed connection without an error.
  if expected_size is not None and size != expected_size:
    return f'expected {expected_size} bytes (Content-Length), got {size}'
  got_md5 = base64.b64encode(md5.digest()).decode('ascii')
  if expected_md5 is not None and got_md5 != expected_md5:
    return f'expected md5 {expected_md5} (x-goog-hash), got {got_md5}'
  return None


def _gcs_md5(headers) -> Optional[str]:
  """The base64 MD5 of `x-goog-hash: crc32c=...,md5=...` (one header or one per hash).

  None when absent (composite objects have only a CRC32C) or when GCS decompresses a gzip-stored
  object on the way (the hashes are then those of the stored, compressed bytes).
  """
  if headers.get('x-goog-stored-content-encoding', 'identity') != 'identity':
    return None
  for header in headers.get_all('x-goog-hash') or ():
    for item in header.split(','):
      key, _, value = item.strip().partition('=')  # base64 values end in '=': split once.
      if key == 'md5' and value:
        return value
  return None


def _remove(path: str) -> None:
  if os.path.exists(path):
    os.remove(path)
