"""Every registered model has exactly the original implementation's parameter count."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import models

# 224x224 inputs, 1000 classes; numbers of the original google-research/vision_transformer.
EXPECTED = {
  'ViT-Ti_16': 5_717_416,
  'ViT-S_16': 22_050_664,
  'ViT-S_32': 22_878_952,
  'ViT-B_16': 86_567_656,
  'ViT-B_32': 88_224_232,
  'ViT-B_8': 86_576_872,
  'ViT-L_16': 304_326_632,
  'ViT-L_32': 306_535_400,
  'ViT-H_14': 632_045_800,
  # -gap-norep: no class token, so one position-embedding row and `cls` fewer (2 * width).
  'ViT-S_16-gap-norep': 22_050_664 - 2 * 384,
  'ViT-S_32-gap-norep': 22_878_952 - 2 * 384,
  'ViT-B_16-gap-norep': 86_566_120,
  'ViT-B_32-gap-norep': 88_224_232 - 2 * 768,
  'R+ViT-Ti_16': 6_337_704,
  'R50+ViT-B_16': 98_659_112,
  'R26+ViT-B_32': 101_383_976,
  'R26+ViT-S_32': 36_431_912,
  'R50+ViT-L_32': 328_994_856,
  'Mixer-B_16': 59_880_472,
  'Mixer-B_32': 60_293_428,
  'Mixer-L_16': 208_196_168,
  # A ResNet-50's count (torchvision's, too: GroupNorm has BatchNorm's two vectors).
  'BiT-R50x1': 25_557_032,
  'ResNet-tiny': 476_728,  # 256 features -> 1000 classes: 257,000 of them in the head.
  'testing': 21_390,  # the original's (21,500 with the pre-logits layer it had before).
  'testing-unpooled': 21_370,
}


def count_params(name, num_classes=1000, size=224):
  model = models.get_model(name, num_classes=num_classes)
  shapes = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False)
  )
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes['params']))


def test_every_registered_model_has_an_expected_count():
  assert sorted(EXPECTED) == models.model_names()


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_param_count_matches_original(name):
  assert count_params(name) == EXPECTED[name]


def test_head_and_resolution_change_the_count_as_expected():
  # 10 classes: head shrinks by 990 * (768 + 1); 384px: 24x24 grid, (576 - 196) more rows.
  assert count_params('ViT-B_16', num_classes=10) == 86_567_656 - 990 * 769
  assert count_params('ViT-B_16', size=384) == 86_567_656 + (576 - 196) * 768


def test_a_model_with_overrides_is_named_for_what_it_is():
  # configs/default.py's model (ViT-Ti_16's name, another model) was shown as ViT-Ti_16.
  default = dict(
    patch_size=[4, 4], hidden_size=64, num_layers=4, num_heads=4, mlp_dim=128, classifier='gap'
  )
  assert models.describe('ViT-Ti_16', default) == (
    'ViT-Ti_16 (4 layers, width 64, 4 heads, MLP 128, 4x4 patches, classifier=gap)'
  )
  # Overrides that change nothing, or only precision, layout or dropout: the bare name.
  same = dict(patch_size=(16, 16), hidden_size=192, classifier='token', dtype='bfloat16', scan=True)
  assert models.describe('ViT-Ti_16', same) == 'ViT-Ti_16'
  assert models.describe('testing', {'posemb': 'sincos2d'}) == 'testing (posemb=sincos2d)'
  assert models.describe('not-registered', {'num_layers': 2}) == 'not-registered'


def test_readmes_table_gives_these_counts():
  # It said 21,500 for `testing` after the model lost its pre-logits layer (21,390).
  text = (pathlib.Path(__file__).resolve().parents[1] / 'README.md').read_text()
  table = text.split('| name | parameters (224px, 1000 classes) |\n')[1].split('\n\n')[0]
  shown = {}
  for row in table.splitlines()[1:]:  # after the | --- | line.
    names, counts = (cell.strip() for cell in row.strip('|').split('|'))
    if counts.startswith('e.g. '):  # a family of names: one of them with its count.
      names, counts = counts.removeprefix('e.g. ').rsplit(' ', 1)
    names = [re.sub(r'\s*\(.*\)', '', name) for name in names.split(' / ')]
    shown.update(zip(names, (int(c.replace(',', '')) for c in counts.split(' / ')), strict=True))
  assert len(shown) == 21
  assert shown == {name: EXPECTED[name] for name in shown}
