"""Files downloaded once into a local cache: released checkpoints (vit_jax.weights.catalogue),
MNIST's files (vit_jax.data.mnist_folder).

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


class FetchError(OSError):
  """A file could not be downloaded; the message names the URL."""


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
