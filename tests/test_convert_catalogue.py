"""Released names -> URLs, downloaded once into the cache; offline is one line naming the URL.

No network: downloads come from file:// URLs or an address that refuses connections.
"""

import jax
import ml_collections
import numpy as np
import pytest

import convert_helpers as h
from vit_jax.weights import fit
from vit_jax.weights import released
from vit_jax.weights import tree
from vit_jax.weights import catalogue
from vit_jax.weights import sources
from vit_jax.train import setup_run

AUGREG_B16 = 'B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0'


@pytest.mark.parametrize('name,url', [
    ('i21k:ViT-B_16', 'gs://vit_models/imagenet21k/ViT-B_16.npz'),
    ('i21k:R50+ViT-B_16', 'gs://vit_models/imagenet21k/R50+ViT-B_16.npz'),
    ('i21k:Mixer-B_16', 'gs://mixer_models/imagenet21k/Mixer-B_16.npz'),
    ('i21k+i1k:ViT-L_16-224', 'gs://vit_models/imagenet21k+imagenet2012/ViT-L_16-224.npz'),
    ('sam:ViT-S_16', 'gs://vit_models/sam/ViT-S_16.npz'),
    ('augreg:B_16', f'gs://vit_models/augreg/{AUGREG_B16}.npz'),
    ('augreg+i1k:R_Ti_16', 'gs://vit_models/augreg/R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-'
     'do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384.npz'),
    (AUGREG_B16, f'gs://vit_models/augreg/{AUGREG_B16}.npz'),
    (f'augreg:{AUGREG_B16}--oxford_iiit_pet-steps_0k-lr_0.003-res_384',
     f'gs://vit_models/augreg/{AUGREG_B16}--oxford_iiit_pet-steps_0k-lr_0.003-res_384.npz'),
    ('i21k:ViT-B_16:Transformer', 'gs://vit_models/imagenet21k/ViT-B_16.npz:Transformer'),
    ('/data/ViT-B_16.npz', None), ('file.npz:img', None), ('gs://b/x.npz', None),
    ('ViT-B_16.npz', None),
])
def test_names_resolve_to_released_urls(name, url):
  assert catalogue.resolve(name) == url


def test_unknown_name_lists_the_known_ones():
  with pytest.raises(ValueError, match=r"'i21k:ViT-B_61' is not in the catalogue; i21k: has "
                     r'i21k:Mixer-B_16, .*i21k:ViT-B_16'):
    catalogue.resolve('i21k:ViT-B_61')
  assert 'augreg+i1k:B_16' in catalogue.names() and 'augreg+i1k:B_8' not in catalogue.names()


def test_downloaded_once_then_read_from_the_cache(tmp_path, monkeypatch):
  flat = h.random_params(h.vit(), (32, 32))
  released.save(tmp_path / 'served.npz', tree.unflatten(flat))
  monkeypatch.setenv('VIT_JAX_CACHE', str(tmp_path / 'cache'))
  monkeypatch.setattr(catalogue, 'https_url', lambda url: (tmp_path / 'served.npz').as_uri())
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
  monkeypatch.setattr(catalogue, 'https_url',
                      lambda url: url.replace('gs://', 'http://127.0.0.1:9/'))
  with pytest.raises(catalogue.FetchError) as e:
    sources.load('augreg:Ti_16')
  message = str(e.value)
  assert '\n' not in message
  assert message.startswith('could not download http://127.0.0.1:9/vit_models/augreg/Ti_16-i21k')
  assert 'download it yourself to ' + str(tmp_path / 'cache' / 'vit_models' / 'augreg') in message
  assert not list((tmp_path / 'cache').rglob('*.npz*'))  # no partial file left behind.
  # As the trainer reports it: one ConfigError line.
  config = ml_collections.ConfigDict({'pretrained_path': 'augreg:Ti_16',
                                      'pretrained_align': 'corners'})
  abstract = jax.eval_shape(h.vit().init, jax.random.key(0), np.zeros((1, 32, 32, 3)))['params']
  with pytest.raises(setup_run.ConfigError, match=r'^config.pretrained_path=augreg:Ti_16: could '
                     r'not download http://127.0.0.1:9/vit_models/augreg/'):
    setup_run._pretrained(config, abstract)  # pylint: disable=protected-access
  monkeypatch.undo()
  assert catalogue.https_url('gs://vit_models/sam/ViT-B_16.npz') == (
      'https://storage.googleapis.com/vit_models/sam/ViT-B_16.npz')
