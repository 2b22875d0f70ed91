"""runtime: what the process runs on, and a bounded probe of the network."""

import socket
import threading
import time

from vit_jax.system import runtime


def test_detect_on_the_test_devices():
  rt = runtime.detect(check_network=False)
  assert (rt.platform, rt.num_devices, rt.accelerator, rt.online) == ('cpu', 8, False, False)
  assert rt.device_kind == 'cpu'


def test_online_is_a_bounded_probe():
  with socket.socket() as server:
    server.bind(('127.0.0.1', 0))
    server.listen(1)
    assert runtime.online('127.0.0.1', server.getsockname()[1], timeout=2.0)
  with socket.socket() as unused:
    unused.bind(('127.0.0.1', 0))
    port = unused.getsockname()[1]  # closed again: nothing listens there.
  start = time.perf_counter()
  assert not runtime.online('127.0.0.1', port, timeout=2.0)
  assert not runtime.online('host.invalid', 443, timeout=2.0)  # no such name (RFC 2606)
  assert time.perf_counter() - start < 5


def test_online_gives_up_on_a_lookup_that_hangs(monkeypatch):
  # A resolver that gets no answer blocks getaddrinfo far beyond any connect timeout.
  release = threading.Event()

  def hang(*args, **kwargs):
    del args, kwargs
    release.wait(10)
    raise OSError('no answer')

  monkeypatch.setattr(socket, 'create_connection', hang)
  start = time.perf_counter()
  try:
    assert not runtime.online('example.com', 443, timeout=0.3)
    assert time.perf_counter() - start < 1.5
  finally:
    release.set()  # the abandoned probe thread ends quietly.
