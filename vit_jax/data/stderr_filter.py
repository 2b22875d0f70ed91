"""libjpeg's warnings about damaged JPEG files, counted in one warning instead of printed.

libjpeg (inside TensorFlow's JPEG decoder) prints a line to the process's stderr (fd 2) for
every damaged but decodable image it meets, e.g. 'Corrupt JPEG data: 7 extraneous bytes
before marker 0xd9', from tf.data's threads, without a file name, every epoch; TensorFlow
logs one more for each file it cannot decode (those files are skipped and reported by the
iterators). Once `install()` runs (the iterators call it), fd 2 goes through a pipe: these
lines are counted, and `report()` (which the iterators call per batch, on the caller's
thread) logs one WARNING when the count has passed 1, 2, 4, 8, ...; everything else goes on
to the real stderr unchanged. `drain()` (at exit, and before
`os._exit`) waits until what was written so far has gone through.
"""

import atexit
import logging
import os
import re
import threading

# libjpeg's warning messages (jerror.h's JWRN_*), and TensorFlow's log of a failed decode.
_JPEG_WARNING = re.compile(
  rb'^(Corrupt JPEG data|Premature end of JPEG file|Warning: unknown JFIF revision|'
  rb'Warning: thumbnail image size|Invalid SOS parameters for sequential JPEG|'
  rb'Inconsistent progression sequence|Application transferred too few scanlines|'
  rb'Unknown APP(0|14) marker)'
)
_DECODE_FAILED = re.compile(
  rb'(jpeg_mem\.cc:\d+\]|jpeg::Uncompress failed|^Improper call to JPEG library)'
)

_lock = threading.Lock()
_state = {}  # 'saved' (the real stderr's fd), 'read' (pipe), 'thread', 'count', 'example'.


def count() -> int:
  """libjpeg warnings seen so far in this process."""
  return _state.get('count', 0)


_DRAINED = b'\0vit_jax: stderr drained\n'


def _filter_line(line: bytes, out: int) -> None:
  if line == _DRAINED:
    _state['drained'].set()
    return
  if _DECODE_FAILED.search(line):
    return  # The iterators count, name and report undecodable files themselves.
  if not _JPEG_WARNING.match(line):
    os.write(out, line)
    return
  with _lock:
    _state['count'] += 1
    _state.setdefault('example', line.decode(errors='replace').strip())


def report() -> None:
  """Logs the count once it has passed the next power of 2 since the last report."""
  n = _state.get('count', 0)
  if n.bit_length() > _state.get('reported', 0).bit_length():
    _state['reported'] = n
    logging.warning(
      'libjpeg warned %d times so far of damaged but decodable JPEG data (e.g. '
      '"%s"); those images were used as decoded.',
      n,
      _state['example'],
    )


def _forward(read_fd: int, out: int) -> None:
  pending = b''
  while True:
    try:
      chunk = os.read(read_fd, 65536)
    except OSError:
      chunk = b''
    if not chunk:
      break
    pending += chunk
    *lines, pending = pending.split(b'\n')
    for line in lines:
      _filter_line(line + b'\n', out)
  if pending:
    _filter_line(pending, out)


def install() -> None:
  """Routes fd 2 through the filter (once per process; later calls do nothing)."""
  with _lock:
    if 'saved' in _state:
      return
    try:
      saved = os.dup(2)
      read_fd, write_fd = os.pipe()
      os.dup2(write_fd, 2)
      os.close(write_fd)
      pipe = os.fstat(2).st_ino
    except OSError:
      return  # No usable fd 2 (e.g. closed): nothing to filter.
    _state.update(saved=saved, read=read_fd, pipe=pipe, count=0, drained=threading.Event())
  thread = threading.Thread(
    target=_forward, args=(read_fd, saved), daemon=True, name='vit_jax-stderr-filter'
  )
  _state['thread'] = thread
  thread.start()
  atexit.register(drain)


def drain(timeout: float = 2.0) -> None:
  """Waits until the lines written to fd 2 so far have been forwarded (or counted).

  fd 2 stays on the pipe: tf.data threads may still write while the process exits.
  """
  try:
    if 'thread' not in _state or os.fstat(2).st_ino != _state['pipe']:
      return  # Not installed, or someone else (e.g. pytest's capture) redirected fd 2 since.
    _state['drained'].clear()
    os.write(2, _DRAINED)
  except OSError:
    return
  _state['drained'].wait(timeout)
