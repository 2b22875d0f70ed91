"""Released names -> URLs, downloaded once into the cache; offline is one line naming the URL.

No network: downloads come from file:// URLs, a local HTTP server on 127.0.0.1 that answers as
storage.googleapis.com does (Content-Length, x-goog-hash), or an address that refuses
connections.
"""

import base64
import hashlib
import http.server
import threading

import jax
import ml_collections
import numpy as np
import pytest

import convert_helpers as h
from vit_jax.system import downloads
from vit_jax.train import setup_run
from vit_jax.weights import catalogue
from vit_jax.weights import fit
from vit_jax.weights import released
from vit_jax.weights import sources
from vit_jax.weights import tree

AUGREG_B16 = 'B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0'


@pytest.mark.parametrize(
  'name,url',
  [
    ('i21k:ViT-B_16', 'gs://vit_models/imagenet21k/ViT-B_16.npz'),
    ('i21k:R50+ViT-B_16', 'gs://vit_models/imagenet21k/R50+ViT-B_16.npz'),
    ('i21k:Mixer-B_16', 'gs://mixer_models/imagenet21k/Mixer-B_16.npz'),
    ('i21k+i1k:ViT-L_16-224', 'gs://vit_models/imagenet21k+imagenet2012/ViT-L_16-224.npz'),
    ('sam:ViT-S_16', 'gs://vit_models/sam/ViT-S_16.npz'),
    ('augreg:B_16', f'gs://vit_models/augreg/{AUGREG_B16}.npz'),
    (
      'augreg+i1k:R_Ti_16',
      'gs://vit_models/augreg/R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-'
      'do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384.npz',
    ),
    (AUGREG_B16, f'gs://vit_models/augreg/{AUGREG_B16}.npz'),
    (
      f'augreg:{AUGREG_B16}--oxford_iiit_pet-steps_0k-lr_0.003-res_384',
      f'gs://vit_models/augreg/{AUGREG_B16}--oxford_iiit_pet-steps_0k-lr_0.003-res_384.npz',
    ),
    ('i21k:ViT-B_16:Transformer', 'gs://vit_models/imagenet21k/ViT-B_16.npz:Transformer'),
    ('/data/ViT-B_16.npz', None),
    ('file.npz:img', None),
    ('gs://b/x.npz', None),
    ('ViT-B_16.npz', None),
  ],
)
def test_names_resolve_to_released_urls(name, url):
  assert catalogue.resolve(name) == url


def test_unknown_name_lists_the_known_ones():
  with pytest.raises(
    ValueError,
    match=r"'i21k:ViT-B_61' is not in the catalogue; i21k: has "
    r'i21k:Mixer-B_16, .*i21k:ViT-B_16',
  ):
    catalogue.resolve('i21k:ViT-B_61')
  assert 'augreg+i1k:B_16' in catalogue.names() and 'augreg+i1k:B_8' not in catalogue.names()


def test_downloaded_once_then_read_from_the_cache(tmp_path, monkeypatch):
  flat = h.random_params(h.vit(), (32, 32))
  released.save(tmp_path / 'served.npz', tree.unflatten(flat))
  monkeypatch.setenv('VIT_JAX_CACHE', str(tmp_path / 'cache'))
  monkeypatch.setattr(downloads, 'https_url', lambda url: (tmp_path / 'served.npz').as_uri())
  loaded = sources.load('i21k:ViT-B_16')
  cached = tmp_path / 'cache' / 'vit_models' / 'imagenet21k' / 'ViT-B_16.npz'
  assert cached.is_file() and sorted(loaded) == sorted(flat)
  np.testing.assert_array_equal(loaded['cls'], flat['cls'])
  # Second use: no download (the source is gone), the cached file is read.
  (tmp_path / 'served.npz').unlink()
  init = tree.unflatten(h.random_params(h.vit(num_classes=3), (32, 32)))
  tuned = tree.flatten(fit.load_pretrained('i21k:ViT-B_16', init))
  np.testing.assert_array_equal(tuned['embedding/kernel'], flat['embedding/kernel'])


def test_offline_is_one_line_naming_the_url(tmp_path, monkeypatch):
  monkeypatch.setenv('VIT_JAX_CACHE', str(tmp_path / 'cache'))
  # Port 9 (discard) on localhost: nothing listens, the connection is refused at once.
  monkeypatch.setattr(
    downloads, 'https_url', lambda url: url.replace('gs://', 'http://127.0.0.1:9/')
  )
  with pytest.raises(downloads.FetchError) as e:
    sources.load('augreg:Ti_16')
  message = str(e.value)
  assert '\n' not in message
  assert message.startswith('could not download http://127.0.0.1:9/vit_models/augreg/Ti_16-i21k')
  assert 'download it yourself to ' + str(tmp_path / 'cache' / 'vit_models' / 'augreg') in message
  assert not list((tmp_path / 'cache').rglob('*.npz*'))  # no partial file left behind.
  # As the trainer reports it: one ConfigError line.
  config = ml_collections.ConfigDict(
    {'pretrained_path': 'augreg:Ti_16', 'pretrained_align': 'corners'}
  )
  abstract = jax.eval_shape(h.vit().init, jax.random.key(0), np.zeros((1, 32, 32, 3)))['params']
  with pytest.raises(
    setup_run.ConfigError,
    match=r'^config.pretrained_path=augreg:Ti_16: could '
    r'not download http://127.0.0.1:9/vit_models/augreg/',
  ):
    setup_run._pretrained(config, abstract)
  monkeypatch.undo()
  assert downloads.https_url('gs://vit_models/sam/ViT-B_16.npz') == (
    'https://storage.googleapis.com/vit_models/sam/ViT-B_16.npz'
  )


@pytest.fixture
def gcs(tmp_path, monkeypatch):
  """A stand-in for storage.googleapis.com on 127.0.0.1: gs:// URLs go to it, the cache is
  tmp_path/cache. Fill `files` with {path: (body, md5 header value, Content-Length,
  x-goog-hash in one header)}; `requests` lists the paths asked for."""
  files, requests = {}, []

  class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
      requests.append(self.path)
      body, md5, length, one_header = files[self.path]
      self.send_response(200)
      self.send_header('Content-Length', str(length))
      if one_header:
        self.send_header('x-goog-hash', f'crc32c=AAAAAA==,md5={md5}')
      else:  # as GCS also sends it: one header per hash.
        self.send_header('x-goog-hash', 'crc32c=AAAAAA==')
        self.send_header('x-goog-hash', f'md5={md5}')
      self.end_headers()
      self.wfile.write(body)  # HTTP/1.0: the connection closes after it, short or not.

    def log_message(self, *args):
      pass

  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  base = f'http://127.0.0.1:{server.server_address[1]}/'
  monkeypatch.setenv('VIT_JAX_CACHE', str(tmp_path / 'cache'))
  monkeypatch.setenv('no_proxy', '127.0.0.1')  # a proxy set for the registries must not see it.
  monkeypatch.setattr(downloads, 'https_url', lambda url: url.replace('gs://', base))
  yield files, requests
  server.shutdown()
  server.server_close()
  thread.join()


def _md5(body):
  return base64.b64encode(hashlib.md5(body).digest()).decode()


BODY = bytes(range(256)) * 4099  # ~1 MiB: several reads of the download loop.


@pytest.mark.parametrize('one_header', [True, False])
def test_verified_download_lands_in_the_cache_once(tmp_path, gcs, one_header):
  files, requests = gcs
  files['/vit_models/sam/ViT-B_16.npz'] = (BODY, _md5(BODY), len(BODY), one_header)
  path = downloads.fetch('gs://vit_models/sam/ViT-B_16.npz')
  assert path == str(tmp_path / 'cache' / 'vit_models' / 'sam' / 'ViT-B_16.npz')
  with open(path, 'rb') as f:
    assert f.read() == BODY
  assert downloads.fetch('gs://vit_models/sam/ViT-B_16.npz') == path
  assert requests == ['/vit_models/sam/ViT-B_16.npz']  # the second fetch read the cache.
  assert sorted(p.name for p in (tmp_path / 'cache').rglob('*') if p.is_file()) == ['ViT-B_16.npz']


def test_wrong_md5_is_one_line_and_leaves_nothing(tmp_path, gcs):
  files, _ = gcs
  wrong = _md5(b'something else')
  files['/vit_models/sam/ViT-B_16.npz'] = (BODY, wrong, len(BODY), True)
  with pytest.raises(downloads.FetchError) as e:
    downloads.fetch('gs://vit_models/sam/ViT-B_16.npz')
  message = str(e.value)
  assert '\n' not in message
  assert message.startswith('could not download http://127.0.0.1:')
  assert '/vit_models/sam/ViT-B_16.npz' in message
  assert f'expected md5 {wrong}' in message and f'got {_md5(BODY)}' in message
  assert 'rerun' in message
  assert str(tmp_path / 'cache' / 'vit_models' / 'sam' / 'ViT-B_16.npz') in message
  assert not [p for p in (tmp_path / 'cache').rglob('*') if p.is_file()]


def test_short_body_is_one_line_and_leaves_nothing(tmp_path, gcs):
  files, _ = gcs
  files['/vit_models/sam/ViT-B_16.npz'] = (BODY, _md5(BODY), len(BODY) + 100, True)
  with pytest.raises(downloads.FetchError) as e:
    downloads.fetch('gs://vit_models/sam/ViT-B_16.npz')
  message = str(e.value)
  assert '\n' not in message and message.startswith('could not download http://127.0.0.1:')
  assert f'expected {len(BODY) + 100} bytes' in message and f'got {len(BODY)}' in message
  assert 'rerun' in message
  assert not [p for p in (tmp_path / 'cache').rglob('*') if p.is_file()]


def test_progress_bar_on_stderr(gcs, capsys):
  files, _ = gcs
  files['/vit_models/sam/ViT-B_16.npz'] = (BODY, _md5(BODY), len(BODY), True)
  downloads.fetch('gs://vit_models/sam/ViT-B_16.npz', progress=True)
  captured = capsys.readouterr()
  assert captured.out == ''
  assert '100%' in captured.err and '1.00M/1.00M' in captured.err  # bytes, scaled by 1024.


def test_released_names_are_listed_with_their_model_and_url(capsys):
  catalogue.main(['i21k+i1k:ViT-B_16*'])
  assert capsys.readouterr().out.splitlines() == [
    f'{"i21k+i1k:ViT-B_16":<28} {"ViT-B_16":<16} '
    'gs://vit_models/imagenet21k+imagenet2012/ViT-B_16.npz',
    f'{"i21k+i1k:ViT-B_16-224":<28} {"ViT-B_16":<16} '
    'gs://vit_models/imagenet21k+imagenet2012/ViT-B_16-224.npz',
  ]
  catalogue.main([])  # every name, each one that the loaders resolve.
  rows = [line.split() for line in capsys.readouterr().out.splitlines()]
  assert [name for name, _, _ in rows] == catalogue.names()
  assert all(catalogue.resolve(name) == url for name, _, url in rows)
  assert ['augreg:R_Ti_16', 'R+ViT-Ti_16'] in [row[:2] for row in rows]
  with pytest.raises(SystemExit) as e:
    catalogue.main(['i22k:*'])
  assert e.value.code == 2
  assert (
    capsys.readouterr()
    .err.splitlines()[-1]
    .endswith("error: no released checkpoint matches 'i22k:*'; leave PATTERN out to list all.")
  )
