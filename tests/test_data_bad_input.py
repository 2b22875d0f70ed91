"""Bad input: each case is handled with a count, a name or a one-line error; nothing hangs."""

import io
import logging
import os
import re

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
from PIL import Image
import pytest

from vit_jax import data
from vit_jax.data import synthetic
from vit_jax.system import runtime

UNREADABLE = ('cat/corrupt.jpg', 'cat/zero.jpg', 'dog/notimage.png', 'dog/truncated.jpg')


def _save(path, array, **kwargs):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path, **kwargs)


@pytest.fixture(scope='module')
def bad_folder(tmp_path_factory):
  """train/cat: 3 good + corrupt + zero-byte; train/dog: 3 good + truncated + text + 2 odd PNGs.

  Returns (root, {relative path: expected uint8 [10, 10, 3] of the readable images}).
  """
  root = str(tmp_path_factory.mktemp('bad'))
  split = os.path.join(root, 'train')
  images = synthetic.smooth_images(8, 10, 10, seed=5)
  readable = {}
  for i in range(3):
    for k, name in enumerate(('cat', 'dog')):
      rel = f'{name}/{name[0]}{i}.png'
      _save(os.path.join(split, rel), images[2 * i + k])
      readable[rel] = images[2 * i + k]
  buf = io.BytesIO()
  Image.fromarray(images[6]).save(buf, format='JPEG', quality=90)
  good_jpeg = buf.getvalue()
  rng = np.random.default_rng(0)
  with open(os.path.join(split, 'cat', 'corrupt.jpg'), 'wb') as f:  # Header garbled.
    f.write(good_jpeg[:20] + rng.integers(0, 256, 200, dtype=np.uint8).tobytes() + good_jpeg[220:])
  open(os.path.join(split, 'cat', 'zero.jpg'), 'wb').close()
  with open(os.path.join(split, 'dog', 'truncated.jpg'), 'wb') as f:
    f.write(good_jpeg[: len(good_jpeg) // 2])
  with open(os.path.join(split, 'dog', 'notimage.png'), 'w') as f:
    f.write('this is not an image\n')
  deep = (images[7, ..., 0].astype(np.uint16) * 257 + 100).astype(np.uint16)
  _save(os.path.join(split, 'dog', 'deep16.png'), deep)  # 16-bit grayscale PNG.
  readable['dog/deep16.png'] = np.repeat((deep >> 8).astype(np.uint8)[..., None], 3, -1)
  palette = Image.fromarray(images[6]).convert('P')
  palette.save(os.path.join(split, 'dog', 'palette.png'))
  readable['dog/palette.png'] = np.asarray(palette.convert('RGB'))
  return root, readable


def _one_line(excinfo):
  message = str(excinfo.value)
  assert '\n' not in message, message
  return message


def test_eval_skips_unreadable_counts_and_names_them(bad_folder, caplog):
  root, readable = bad_folder
  ev = data.eval_iterator(root, 'train', global_batch=4, crop=10, process_index=0, process_count=1)
  assert len(ev) == 3 and ev.num_examples == 12
  with caplog.at_level(logging.WARNING):
    batches = list(ev)
  masks = np.concatenate([b['mask'] for b in batches])
  assert masks.sum() == 8 and ev.num_skipped == 4
  # Readable images arrive in (class, file name) order, with exact pixels (16-bit: high byte).
  order = sorted(readable)
  images = np.concatenate([b['image'] for b in batches])[masks > 0]
  labels = np.concatenate([b['label'] for b in batches])[masks > 0]
  # float32 x / 127.5 - 1 and back is within ~5e-5 of the integer level: rounding recovers it.
  pixels = np.round((images + 1.0) * 127.5).astype(np.uint8)
  for rel, got, label in zip(order, pixels, labels):
    np.testing.assert_array_equal(got, readable[rel], err_msg=rel)
    assert label == ('cat', 'dog').index(rel.split('/')[0])
  warnings = [r.getMessage() for r in caplog.records if 'unreadable' in r.getMessage()]
  assert len(warnings) == 1
  assert 'Skipped 4 unreadable images (of 12)' in warnings[0]
  for rel in UNREADABLE:
    assert os.path.join(root, 'train', rel) in warnings[0]


def test_train_skips_unreadable_and_keeps_going(bad_folder, caplog):
  root, _ = bad_folder
  with caplog.at_level(logging.WARNING):
    it = data.train_iterator(
      root, 'train', global_batch=8, crop=10, process_index=0, process_count=1
    )
    first, second = next(it), next(it)  # Each is one epoch's 8 readable images.
  for batch in (first, second):
    assert sorted(batch['label'].tolist()) == [0, 0, 0, 1, 1, 1, 1, 1]
  assert it.num_skipped >= 4
  warnings = [r.getMessage() for r in caplog.records if 'unreadable' in r.getMessage()]
  assert warnings and re.search(r'Skipped [1-4] unreadable images so far', warnings[0])
  assert any(os.path.join(root, 'train', rel) in warnings[0] for rel in UNREADABLE)


def test_skip_unreadable_false_raises_naming_the_file(bad_folder):
  root, _ = bad_folder
  ev = data.eval_iterator(
    root, 'train', global_batch=4, crop=10, process_index=0, process_count=1, skip_unreadable=False
  )
  with pytest.raises(data.UnreadableImageError) as excinfo:
    list(ev)
  assert os.path.join(root, 'train', 'cat', 'corrupt.jpg') in _one_line(excinfo)
  it = data.train_iterator(
    root, 'train', global_batch=4, crop=10, process_index=0, process_count=1, skip_unreadable=False
  )
  with pytest.raises(data.UnreadableImageError, match='skip_unreadable=True'):
    for _ in range(4):
      next(it)


def test_nothing_readable_fails_instead_of_hanging(tmp_path):
  for i in range(3):
    os.makedirs(tmp_path / 'train' / 'x', exist_ok=True)
    (tmp_path / 'train' / 'x' / f'{i}.jpg').write_bytes(b'')
  it = data.train_iterator(
    str(tmp_path), 'train', global_batch=2, crop=8, process_index=0, process_count=1
  )
  with pytest.raises(data.DataError, match='No image of a whole epoch') as excinfo:
    next(it)
  _one_line(excinfo)
  ev = data.eval_iterator(
    str(tmp_path), 'train', global_batch=2, crop=8, process_index=0, process_count=1
  )
  with pytest.raises(data.DataError, match='No image of'):
    list(ev)


def test_empty_class_folder_is_an_error(tmp_path):
  _save(str(tmp_path / 'train' / 'a' / '0.png'), np.zeros((4, 4, 3), np.uint8))
  os.makedirs(tmp_path / 'train' / 'b')
  (tmp_path / 'train' / 'b' / 'notes.txt').write_text('x')
  with pytest.raises(data.DataError) as excinfo:
    data.get_dataset_info(str(tmp_path))
  message = _one_line(excinfo)
  assert str(tmp_path / 'train' / 'b') in message and 'has no images' in message
  assert '1 other files' in message


def test_folder_layout_errors(tmp_path):
  with pytest.raises(data.DataError, match='does not exist') as excinfo:
    data.get_dataset_info(str(tmp_path / 'nowhere'))
  _one_line(excinfo)
  _save(str(tmp_path / 'train' / '0.png'), np.zeros((4, 4, 3), np.uint8))
  with pytest.raises(data.DataError, match='holds images directly') as excinfo:
    data.get_dataset_info(str(tmp_path))
  _one_line(excinfo)


def test_missing_split_folder_and_bad_split_strings(tmp_path):
  _save(str(tmp_path / 'train' / 'a' / '0.png'), np.zeros((4, 4, 3), np.uint8))
  for split, pattern in (
    ('validation', "Split 'validation' does not exist; available splits: train"),
    ('train[:5%', 'Cannot parse split'),
    ('train[0:7]', 'has 1 examples'),
  ):
    with pytest.raises(data.DataError, match=pattern.replace('[', r'\[')) as excinfo:
      data.eval_iterator(
        str(tmp_path), split, global_batch=1, crop=4, process_index=0, process_count=1
      )
    _one_line(excinfo)


def test_unknown_tfds_name(tmp_path):
  with pytest.raises(data.DataError) as excinfo:
    data.get_dataset_info('cifar_ten', data_dir=str(tmp_path))
  message = _one_line(excinfo)
  assert "Unknown dataset 'cifar_ten'" in message and 'cifar10' in message
  assert 'image folder' in message


def test_unprepared_tfds_dataset_says_how_to_prepare(tmp_path):
  with pytest.raises(data.DataError) as excinfo:
    data.train_iterator('cifar10', 'train', global_batch=8, crop=32, data_dir=str(tmp_path))
  message = _one_line(excinfo)
  assert "'cifar10' is not prepared in data_dir=" + str(tmp_path) in message
  assert f'python -m vit_jax.data.prepare cifar10 --data_dir={tmp_path}' in message
  assert 'image folder' in message
  assert not os.listdir(tmp_path)  # Nothing downloaded or created.
  with pytest.raises(data.DataError, match='manual_dir') as excinfo:
    data.get_dataset_info('imagenet2012', data_dir=str(tmp_path))


def test_non_classification_tfds_dataset(tmp_path):
  with pytest.raises(data.DataError, match='no `image` Image and `label` ClassLabel'):
    data.get_dataset_info('glue/cola', data_dir=str(tmp_path))


def test_batch_not_divisible_by_processes_or_devices(tmp_path):
  _save(str(tmp_path / 'train' / 'a' / '0.png'), np.zeros((4, 4, 3), np.uint8))
  with pytest.raises(
    data.DataError, match='global_batch=5 is not divisible by the 2 processes'
  ) as excinfo:
    data.train_iterator(
      str(tmp_path), 'train', global_batch=5, crop=4, process_index=0, process_count=2
    )
  _one_line(excinfo)
  sharding = NamedSharding(Mesh(np.array(jax.devices()), ('data',)), P('data'))
  with pytest.raises(
    data.DataError, match='global_batch=12 is not divisible by the 8 batch shards'
  ) as excinfo:
    data.eval_iterator(str(tmp_path), 'train', global_batch=12, crop=4, sharding=sharding)
  _one_line(excinfo)
  with pytest.raises(data.DataError, match='simulated processes need sharding=None'):
    data.train_iterator(
      str(tmp_path),
      'train',
      global_batch=16,
      crop=4,
      sharding=sharding,
      process_index=0,
      process_count=2,
    )


def test_bad_arguments_are_one_line_errors(tmp_path):
  _save(str(tmp_path / 'train' / 'a' / '0.png'), np.zeros((4, 4, 3), np.uint8))
  base = dict(
    dataset=str(tmp_path), split='train', global_batch=2, crop=4, process_index=0, process_count=1
  )
  for override, pattern in (
    (dict(crop=0), 'crop=0'),
    (dict(area_range=(0.5, 0.1)), 'area_range'),
    (dict(aspect_range=(0, 1)), 'aspect_range'),
    (dict(randaugment=(2, 50)), 'randaugment'),
    (dict(process_index=2, process_count=2), 'process_index=2'),
    (dict(seed=1.5), 'seed=1.5'),
  ):
    with pytest.raises(data.DataError, match=pattern.replace('(', r'\(')) as excinfo:
      data.train_iterator(**dict(base, **override))
    _one_line(excinfo)


def test_unknown_tfds_split(tmp_path):
  with pytest.raises(data.DataError) as excinfo:
    data.eval_iterator(
      'sklearn_digits',
      'validation',
      global_batch=8,
      crop=8,
      data_dir=str(tmp_path),
      process_index=0,
      process_count=1,
    )
  message = _one_line(excinfo)
  assert "bad split 'validation'" in message and "'train', 'test'" in message


def test_train_counts_each_broken_file_once_across_epochs(bad_folder, caplog):
  root, _ = bad_folder
  with caplog.at_level(logging.WARNING):
    it = data.train_iterator(
      root, 'train', global_batch=8, crop=10, process_index=0, process_count=1, prefetch=0
    )
    for _ in range(3):  # Three epochs, each revisiting the 4 unreadable files.
      next(it)
  assert it.num_skipped == 4
  warnings = [r.getMessage() for r in caplog.records if 'unreadable' in r.getMessage()]
  counts = [int(re.search(r'Skipped (\d+) ', w).group(1)) for w in warnings]
  assert counts[-1] == 4 and counts == sorted(set(counts)) and set(counts) <= {1, 2, 3, 4}
  assert '--config.skip_unreadable=False' in warnings[-1]


def test_download_gets_to_the_network_request(tmp_path, monkeypatch):
  """config.download=True / vit_jax.data.prepare: every import works up to the URL fetch."""
  pytest.importorskip('importlib_resources', reason='setup.py installs it (pip install -e .)')
  from tensorflow_datasets.core.download import downloader

  urls = []

  def no_network(self, url, *args, **kwargs):
    del self, args, kwargs
    urls.append(url)
    raise ConnectionError(f'no network for {url}')

  monkeypatch.setattr(downloader._Downloader, '_sync_download', no_network)
  monkeypatch.setattr(runtime, 'online', lambda **kwargs: True)  # past the network probe.
  with pytest.raises(data.DataError) as excinfo:
    data.get_dataset_info('mnist', data_dir=str(tmp_path), download=True)
  message = _one_line(excinfo)
  assert urls and all(u.startswith('https://') for u in urls)
  assert message.startswith(f"Preparing TFDS dataset 'mnist' in {tmp_path} failed (")
  assert message.endswith(
    f'prepare it with `python -m vit_jax.data.prepare mnist '
    f'--data_dir={tmp_path}` or use an image folder.'
  )
  print(message)


def test_offline_download_is_refused_in_seconds_with_where_files_can_come_from(
  tmp_path, monkeypatch
):
  # TFDS retried every download for 3.5 minutes, then advised running the command that failed.
  probes = []
  monkeypatch.setattr(runtime, 'online', lambda **kwargs: probes.append(kwargs) or False)
  with pytest.raises(data.DataError) as excinfo:
    data.get_dataset_info('cifar10', data_dir=str(tmp_path), download=True)
  assert probes == [{'timeout': 5.0}]
  assert _one_line(excinfo) == (
    "cannot download TFDS dataset 'cifar10': no network (storage.googleapis.com:443 did not "
    'answer in 5 s). On a machine with network, run `python -m vit_jax.data.prepare cifar10 '
    f'--data_dir=DIR` and copy DIR here as --data_dir={tmp_path}; or put its downloaded '
    'archives in --manual_dir=DIR; or use an image folder DIR/<split>/<class>/*.jpg.'
  )
  data.get_dataset_info('sklearn_digits', data_dir=str(tmp_path), download=True)  # no network.
  assert len(probes) == 1


_LIBJPEG_SCRIPT = r"""
import io, os, sys
import numpy as np
from PIL import Image
from vit_jax import data
root = sys.argv[1]
os.makedirs(f'{root}/train/a')
rng = np.random.default_rng(0)
for i in range(6):
  buf = io.BytesIO()
  Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(buf, 'JPEG')
  jpeg = buf.getvalue()
  if i == 0:
    jpeg = jpeg[:-2] + b'\0' * 12 + jpeg[-2:]  # Decodable; libjpeg warns.
  if i == 1:
    jpeg = jpeg[:len(jpeg) // 2]  # Truncated: not decodable; TensorFlow logs an error.
  with open(f'{root}/train/a/{i}.jpg', 'wb') as f:
    f.write(jpeg)
it = data.train_iterator(root, 'train', global_batch=5, crop=8, area_range=(1, 1),
                         process_index=0, process_count=1)
for _ in range(8):  # 8 epochs of the 5 readable images.
  next(it)
os.write(2, b'a line from C code\n')
"""


def test_libjpeg_noise_is_counted_not_printed(tmp_path):
  """libjpeg's own stderr lines (per damaged file, per epoch) become one counted warning."""
  import subprocess
  import sys

  result = subprocess.run(
    [sys.executable, '-c', _LIBJPEG_SCRIPT, str(tmp_path / 'jpegs')],
    capture_output=True,
    text=True,
    timeout=300,
    check=True,
  )
  err = result.stderr
  assert 'Corrupt JPEG data' not in err.replace('"Corrupt JPEG data', '')  # Only quoted.
  assert 'jpeg_mem.cc' not in err and 'Premature end' not in err
  assert 'a line from C code' in err  # Everything else passes through.
  counts = [int(n) for n in re.findall(r'libjpeg warned (\d+) times so far', err)]
  # Reported when the count passes 1, 2, 4, 8, ... (at a batch): not a line per image.
  assert counts and counts[0] >= 1 and len(counts) <= 5, err[-2000:]
  assert all(a.bit_length() < b.bit_length() for a, b in zip(counts, counts[1:])), counts
  assert 'extraneous bytes before marker' in err
  assert 'Skipped 1 unreadable images so far' in err and '1.jpg' in err


def _png_header(width, height):
  """An 8-bit RGB PNG that says it holds width x height pixels (and holds none)."""
  import struct
  import zlib

  def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

  ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', b'') + chunk(b'IEND', b'')


def test_images_too_large_to_decode_are_refused_per_file(tmp_path):
  # A 48 KB PNG of 20000x20000 pixels took 7 GB to predict on.
  from PIL import Image

  from vit_jax.data import image_files

  huge, bomb, small = tmp_path / 'huge.png', tmp_path / 'bomb.png', tmp_path / 'small.png'
  huge.write_bytes(_png_header(10000, 10000))
  bomb.write_bytes(_png_header(20000, 20000))  # past Pillow's own limit, 178,956,970 pixels.
  Image.fromarray(np.full((40, 30, 3), 200, np.uint8)).save(small)
  (big, reason), (none, bomb_reason), (image, ok) = image_files.decode(
    [str(huge), str(bomb), str(small)], crop=16, resize_mode='resize', resize_small=None
  )
  assert big is None and reason == (
    'too large: 10000x10000 pixels, 0.3 GiB decoded (at most 67,108,864 pixels); resize it first'
  )
  assert none is None and bomb_reason == (
    'too large: more than 178,956,970 pixels (at most 67,108,864 pixels); resize it first'
  )
  assert ok is None and image.shape == (16, 16, 3)
