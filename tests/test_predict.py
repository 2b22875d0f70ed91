"""Predictions on a user's images (`python -m vit_jax.predict`): the same probabilities as the
run's own eval pipeline, class names from the run's labels.json or a label file, unreadable
files reported, one-line errors with exit code 2."""

import functools
import io
import json
import shutil
import sys

import flax
import jax
import numpy as np
from PIL import Image
import pytest

from helpers import build_once
from helpers import load_config
from helpers import run_command
from helpers import train_command
from vit_jax import models
from vit_jax import predict
from vit_jax.inference import labels
from vit_jax.inference import predictor as predictor_lib
from vit_jax.models import layers
from vit_jax.run import orbax_io
from vit_jax.run import workdir as workdir_lib
from vit_jax.train import config as config_lib
from vit_jax.weights import released

# Class folder names whose sorted order (eight, five, four, ...) is not the digits' order, so
# a name taken from the wrong place cannot pass for the right one.
NAMES = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine']
SORTED = sorted(NAMES)
NUM_TEST = 20
STEPS = 60
# How predict names configs/default.py's model (models.describe).
DEFAULT_MODEL = 'ViT-Ti_16 (4 layers, width 64, 4 heads, MLP 128, 4x4 patches, classifier=gap)'


def _write_digits(root, split, indices):
  from sklearn.datasets import load_digits

  digits = load_digits()
  for i in indices:
    folder = root / split / NAMES[digits.target[i]]
    folder.mkdir(parents=True, exist_ok=True)
    pixels = ((digits.images[i].astype(np.int64) * 255 + 8) // 16).astype(np.uint8)
    Image.fromarray(pixels).save(folder / f'{i:04d}.png')  # 8x8 grayscale, as the dataset.


def _recipe(root):
  """The default recipe (lr 3e-3, no crop) for STEPS steps on the image folder `root`."""
  return dict(
    dataset=str(root),
    total_steps=STEPS,
    warmup_steps=10,
    batch=64,
    batch_eval=64,
    progress_every=STEPS,
    eval_every=STEPS,
    checkpoint_every=STEPS,
    base_lr=3e-3,
    pp__area_min=1.0,
    shuffle_buffer=400,
  )


def _config(root):
  return load_config('default', **_recipe(root))


def _train(folder):
  """Trains as a user would, with `python -m vit_jax.main` (a device per core)."""
  root = folder / 'digits'
  _write_digits(root, 'train', range(400))
  _write_digits(root, 'test', range(1500, 1500 + NUM_TEST))
  train_command(folder / 'run', None, **_recipe(root))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """(workdir, image folder, config): the default recipe for STEPS steps on 400 digits saved
  as PNGs in class folders; trained once per test run (for the tests on either pytest-xdist
  worker), so tests copy the workdir before changing it."""
  folder = build_once(tmp_path_factory, 'predict_run', _train)
  return folder / 'run', folder / 'digits', _config(folder / 'digits')


@functools.partial(jax.jit, static_argnums=0)
def _softmax(model, params, images):
  """Reference probabilities: the model on uint8 images as the train loop's eval step sees them."""
  return jax.nn.softmax(model.apply({'params': params}, layers.model_input(images), train=False))


def _images(root):
  return sorted(str(p) for p in (root / 'test').rglob('*.png'))


def test_training_writes_labels_json(trained):
  workdir, root, _ = trained
  recorded = json.loads((workdir / workdir_lib.LABELS).read_text())
  assert recorded == {
    'dataset': str(root),
    'num_classes': 10,
    'class_names': SORTED,
    'eval_preprocess': {'crop': 16, 'resize_mode': 'resize', 'resize_small': None},
  }


def test_probabilities_match_the_eval_pipeline(trained):
  from vit_jax import data

  workdir, root, config = trained
  # The run's own evaluation path: its eval iterator (uint8 pixels, as the loop reads them)
  # and the model applied to layers.model_input, with the params of the saved checkpoint.
  batch = next(
    iter(data.eval_iterator(str(root), 'test', global_batch=24, crop=16, image_dtype='uint8'))
  )
  assert batch['mask'].sum() == NUM_TEST
  model = models.get_model(config.model_name, num_classes=10, **config_lib.model_overrides(config))
  expected = np.asarray(
    _softmax(model, orbax_io.load_params(str(workdir)), batch['image'][:NUM_TEST])
  )

  paths = _images(root)  # the eval iterator's order too: sorted by (class, file name).
  assert [SORTED[l] for l in batch['label'][:NUM_TEST]] == [p.split('/')[-2] for p in paths]
  predictor = predictor_lib.load(str(workdir))
  assert (predictor.image_size, predictor.resize_mode, predictor.class_names) == (
    16,
    'resize',
    SORTED,
  )
  results = predictor.predict(paths, top_k=10, batch=8)  # 3 batches, the last one padded.
  assert [r['image'] for r in results] == paths
  got = np.zeros_like(expected)
  for i, r in enumerate(results):
    probs = [t['probability'] for t in r['top_k']]
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) == pytest.approx(1.0, abs=1e-5)
    for t in r['top_k']:
      assert t['name'] == SORTED[t['class']]
      got[i, t['class']] = t['probability']
  np.testing.assert_allclose(got, expected, atol=1e-5)
  assert [r['top_k'][0]['class'] for r in results] == list(expected.argmax(-1))
  # 3 images over 8 devices: padded to 8, split, the padding dropped.
  three = predictor.probabilities(batch['image'][:3])
  np.testing.assert_allclose(three, expected[:3], atol=1e-5)
  # The run learnt something (0.70 measured; chance is 0.1), so top-1 is not a tie.
  accuracy = np.mean(expected.argmax(-1) == batch['label'][:NUM_TEST])
  print(
    f'{STEPS} steps: top-1 {accuracy:.2f} on {NUM_TEST} test PNGs, max probability '
    f'{expected.max():.3f}'
  )
  assert accuracy >= 0.5, accuracy


def test_a_fresh_process_predicts_on_one_device_per_core(trained):
  """`predictor.load` first thing in a process splits a CPU host into one device per core
  (as the command line does) and the batch over them, with the same probabilities."""
  workdir, root, _ = trained
  code = (
    'import json, sys, jax, numpy as np; from vit_jax.inference import predictor; '
    'p = predictor.load(sys.argv[1]); '
    'r = p.predict(sys.argv[2:], top_k=1, batch=5); '
    'print(json.dumps([jax.local_device_count(), [x["top_k"][0]["probability"] for x in r]]))'
  )
  paths = _images(root)[:5]
  out = run_command([sys.executable, '-c', code, str(workdir), *paths], devices=None)
  devices, probabilities = json.loads(out.stdout.strip().splitlines()[-1])
  from vit_jax.system import cpu_devices

  assert devices == cpu_devices.cores()
  expected = predictor_lib.load(str(workdir)).predict(paths, top_k=1, batch=5)
  np.testing.assert_allclose(
    probabilities, [r['top_k'][0]['probability'] for r in expected], atol=1e-5
  )


def _cli(*args):
  out, err = io.StringIO(), io.StringIO()
  code = predict.run(['predict', *map(str, args)], out=out, err=err)
  return code, out.getvalue(), err.getvalue()


def test_table_and_json_with_an_unreadable_file(trained, tmp_path):
  workdir, root, _ = trained
  broken = tmp_path / 'broken.jpg'
  broken.write_bytes(b'\xff\xd8 not really a jpeg')
  paths = _images(root)
  code, table, err = _cli(f'--checkpoint={workdir}', '--top_k=3', root / 'test', broken)
  assert code == 0
  assert err.strip() == f'1 of {NUM_TEST + 1} images could not be read (listed above).'
  lines = table.splitlines()
  # The default job's model by what it is, not as the registered ViT-Ti_16 it overrides.
  assert lines[0] == (
    f'{workdir}/checkpoints/{STEPS} (step {STEPS}): {DEFAULT_MODEL}, 16px resize, '
    f'10 classes, names from labels.json ({root})'
  )
  assert lines[1].split() == ['image', 'rank', 'probability', 'class']
  assert len(lines) == 2 + 3 * NUM_TEST + 1
  assert lines[-1].split(None, 3) == [
    str(broken),
    '-',
    '-',
    'unreadable: not a decodable image (JPEG, PNG, GIF, BMP or WebP)',
  ]

  code, text, _ = _cli(f'--checkpoint={workdir}', '--top_k=3', '--json', root / 'test', broken)
  assert code == 0
  report = json.loads(text)
  assert {k: report[k] for k in ('step', 'model', 'image_size', 'num_classes')} == {
    'step': STEPS,
    'model': DEFAULT_MODEL,
    'image_size': 16,
    'num_classes': 10,
  }
  predictions = report['predictions']
  assert [p['image'] for p in predictions] == paths + [str(broken)]
  assert predictions[-1] == {
    'image': str(broken),
    'error': 'not a decodable image (JPEG, PNG, GIF, BMP or WebP)',
  }
  # The table shows the same classes and probabilities (rounded), rank by rank.
  rows = [l.split() for l in lines[2:-1]]
  for i, p in enumerate(predictions[:-1]):
    assert len(p['top_k']) == 3
    for rank, top in enumerate(p['top_k']):
      row = rows[3 * i + rank]
      assert row[-2:] == [f'{top["probability"]:.4f}', top['name']]
      assert top['name'] in NAMES
  assert rows[0][0] == paths[0]

  code, _, err = _cli(f'--checkpoint={workdir}', broken)  # nothing readable: exit 1.
  assert code == 1 and err.strip() == '1 of 1 images could not be read (listed above).'


def test_a_run_without_labels_json_uses_its_config(trained, tmp_path):
  workdir, root, _ = trained
  copy = tmp_path / 'old_run'
  shutil.copytree(workdir, copy)
  (copy / workdir_lib.LABELS).unlink()
  predictor = predictor_lib.load(str(copy))
  assert predictor.image_size == 16
  assert predictor.class_names == [str(i) for i in range(10)]
  assert predictor.about['labels'] == 'class indices (pass --labels=FILE for names)'
  new = predictor_lib.load(str(workdir)).predict(_images(root)[:2])
  old = predictor.predict(_images(root)[:2])
  assert [[t['class'] for t in r['top_k']] for r in old] == [
    [t['class'] for t in r['top_k']] for r in new
  ]


@functools.cache
def _testing_params(num_classes, representation_size=10):
  """Params of the `testing` model (32px) with a random head (host arrays)."""
  model = models.get_model(
    'testing', num_classes=num_classes, representation_size=representation_size
  )
  init = jax.jit(
    lambda rng: model.init(rng, np.zeros((1, 32, 32, 3), np.float32), train=False)['params']
  )  # op by op: 6 s.
  params = jax.tree.map(np.asarray, flax.linen.meta.unbox(init(jax.random.key(1))))
  params['head']['kernel'] = (
    np.random.default_rng(0).normal(size=params['head']['kernel'].shape).astype(np.float32)
  )
  return model, params


def _npz(tmp_path, num_classes, representation_size=10):
  """(path, model, params): the `testing` model saved as a released-format .npz."""
  model, params = _testing_params(num_classes, representation_size)
  path = tmp_path / f'testing_{num_classes}_{representation_size}.npz'
  released.save(path, params)
  return path, model, params


def test_npz_with_model_and_labels(trained, tmp_path):
  from vit_jax.data import preprocess
  from vit_jax.data import tf_setup

  _, root, _ = trained
  path, model, params = _npz(tmp_path, 10)
  label_file = tmp_path / 'names.txt'
  label_file.write_text(''.join(f'digit {n}\n' for n in NAMES))
  paths = _images(root)[:3]
  code, text, err = _cli(
    f'--checkpoint={path}',
    '--model=testing',
    f'--labels={label_file}',
    '--top_k=10',
    '--json',
    *paths,
  )
  assert code == 0 and not err, err
  report = json.loads(text)
  assert (report['image_size'], report['resize_mode'], report['step']) == (32, 'resize', None)
  assert report['labels'] == f'--labels={label_file}'
  # Directly: the eval preprocessing at 32px (from the position embeddings) and the model.
  tf = tf_setup.tf()
  images = np.stack(
    [
      preprocess.eval_image(tf.constant(open(p, 'rb').read()), crop=32, image_dtype='uint8').numpy()
      for p in paths
    ]
  )
  expected = np.asarray(_softmax(model, params, images))
  for p, e in zip(report['predictions'], expected):
    assert [t['class'] for t in p['top_k']] == list(np.argsort(-e, kind='stable'))
    assert [t['name'] for t in p['top_k']] == [f'digit {NAMES[c]}' for c in np.argsort(-e)]
    np.testing.assert_allclose([t['probability'] for t in p['top_k']], np.sort(e)[::-1], atol=1e-6)


def test_imagenet_class_names_from_installed_packages(tmp_path):
  # With a pre_logits layer that `testing` lacks (as ViT-B_16's ImageNet-21k files have one
  # that ViT-B_16 lacks): taken from the file.
  path, _, _ = _npz(tmp_path, 1000, representation_size=10)
  predictor = predictor_lib.load(str(path), model_name='testing')
  assert predictor.model.representation_size == 10
  image = tmp_path / 'gray.png'
  Image.fromarray(np.full((40, 50, 3), 128, np.uint8)).save(image)
  [result] = predictor.predict([str(image)], top_k=1000)
  assert sum(t['probability'] for t in result['top_k']) == pytest.approx(1.0, abs=1e-4)
  names = predictor.class_names
  assert len(names) == 1000
  # TFDS's synset ids (n01440764 = tench), made readable where timm's table is installed.
  assert names[0] in ('n01440764', 'tench, Tinca tinca'), names[0]
  assert names[281] in ('n02123045', 'tabby, tabby cat'), names[281]
  assert predictor.about['labels'].startswith('TFDS imagenet2012 synsets')
  names_21k, source = labels.imagenet_names(labels.IMAGENET_21K)
  if names_21k is not None:  # timm is optional ('.[bench]').
    assert len(names_21k) == 21843 and source.startswith('timm')
  assert labels.imagenet_names(10) == (None, '10 classes are not an ImageNet head')


def test_bad_input_is_one_line_with_exit_code_2(trained, tmp_path):
  workdir, root, _ = trained
  npz, _, _ = _npz(tmp_path, 10)
  image = _images(root)[0]
  two_names = tmp_path / 'two.txt'
  two_names.write_text('a\nb\n')
  (tmp_path / 'empty').mkdir()
  cases = [
    ((image,), 'pass --checkpoint=WORKDIR (a training run) or --checkpoint=FILE.npz with --model.'),
    (
      (f'--checkpoint={tmp_path}/nope', image),
      f"--checkpoint={tmp_path}/nope does not exist; pass a run's workdir or a .npz file.",
    ),
    ((f'--checkpoint={workdir}',), 'no images given; pass image files or folders after the flags.'),
    (
      (f'--checkpoint={workdir}', tmp_path / 'empty'),
      f'no image files (.jpg, .jpeg, .png, .bmp, .gif) in {tmp_path}/empty.',
    ),
    (
      (f'--checkpoint={workdir}', tmp_path / 'missing.png'),
      f'{tmp_path}/missing.png does not exist; pass image files or folders.',
    ),
    (
      (f'--checkpoint={npz}', image),
      f'--checkpoint={npz} is a .npz: pass the model it holds '
      'with --model (e.g. --model=ViT-B_16).',
    ),
    (
      (f'--checkpoint={npz}', '--model=testng', image),
      'unknown --model=testng; did you mean testing',
    ),
    (
      (f'--checkpoint={npz}', '--model=ViT-Ti_16', image),
      '--model=ViT-Ti_16 at 32px does not match the checkpoint: '
      'Transformer/encoder_norm/bias (10,) vs model (192,);',
    ),
    (
      (f'--checkpoint={npz}', '--model=testing', '--image_size=48', image),
      '--model=testing at 48px does not match the checkpoint: Transformer/posembed_input/'
      'pos_embedding (1, 5, 10) vs model (1, 10, 10); pass the --model (and --image_size) '
      'that the file was saved from.',
    ),
    (
      (f'--checkpoint={npz}', '--model=testing', f'--labels={two_names}', image),
      f'--labels={two_names} has 2 lines but the checkpoint has 10 classes; pass one name '
      'per class, in label order.',
    ),
    (
      (f'--checkpoint={workdir}', '--model=testing', image),
      f'--model=testing but the run in {workdir} trained ViT-Ti_16; drop --model for a workdir.',
    ),
    ((f'--checkpoint={root}', image), f'--checkpoint={root}: No Orbax checkpoint found'),
    ((f'--checkpoint={workdir}', '--top_k=0', image), '--top_k=0; pass an integer >= 1.'),
    (
      (f'--checkpoint={workdir}', '--resize_mode=crop', image),
      "--resize_mode=crop; use one of ('resize', 'resize_crop').",
    ),
    ((f'--checkpoint={workdir}', '--topk=3', image), "Unknown command line flag 'topk'"),
  ]
  for args, message in cases:
    code, out, err = _cli(*args)
    lines = err.splitlines()
    assert (code, out, len(lines)) == (2, '', 1), (args, err)
    assert lines[0].startswith(f'Error: {message}'), (args, lines[0])


def test_module_entry_point_exit_code(tmp_path):
  result = run_command(
    [sys.executable, '-m', 'vit_jax.predict', f'--checkpoint={tmp_path}/nope.npz', 'x.png']
  )
  assert result.returncode == 2
  assert result.stderr.strip() == 'Error: x.png does not exist; pass image files or folders.'
