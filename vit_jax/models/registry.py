"""Model names users type (`ViT-B_16`, `R50+ViT-B_16`, `Mixer-B_16`, ...) -> Flax modules.

Sizes follow the original `vision_transformer` configs, so that with 224x224 inputs and 1000
classes every model has exactly the original's parameter count and loads the released files.
"""

from typing import Any, Callable, Mapping

import flax.linen as nn

from vit_jax.models import bit
from vit_jax.models import mixer
from vit_jax.models import vit

# name -> (module class, keyword arguments). Plain data: inspect or copy freely.
MODEL_CONFIGS: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {}

_VIT_SIZES = {
  # size: (hidden_size, num_layers, num_heads, mlp_dim)
  'Ti': (192, 12, 3, 768),
  'S': (384, 12, 6, 1536),
  'B': (768, 12, 12, 3072),
  'L': (1024, 24, 16, 4096),
  'H': (1280, 32, 16, 5120),
}


def _vit(size: str, patch: int, **kwargs) -> dict[str, Any]:
  hidden, layers, heads, mlp = _VIT_SIZES[size]
  return dict(
    patch_size=(patch, patch),
    hidden_size=hidden,
    num_layers=layers,
    num_heads=heads,
    mlp_dim=mlp,
    **kwargs,
  )


def _register(name: str, cls: Callable[..., nn.Module], **kwargs) -> None:
  MODEL_CONFIGS[name] = (cls, dict(model_name=name, **kwargs))


for _size, _patch in [
  ('Ti', 16),
  ('S', 16),
  ('S', 32),
  ('B', 16),
  ('B', 32),
  ('B', 8),
  ('L', 16),
  ('L', 32),
  ('H', 14),
]:
  _register(f'ViT-{_size}_{_patch}', vit.VisionTransformer, **_vit(_size, _patch))
for _size, _patch in [('S', 16), ('S', 32), ('B', 16), ('B', 32)]:
  _register(
    f'ViT-{_size}_{_patch}-gap-norep',
    vit.VisionTransformer,
    **_vit(_size, _patch, classifier='gap'),
  )

# Hybrids: the ResNet stem downsamples 4x (root) and 2x per further stage; 'patch' is then
# the patch size on the stem's feature map, so R50+ViT-B_16 has 1x1 patches at stride 16.
_register(
  'R50+ViT-B_16', vit.VisionTransformer, **_vit('B', 1, resnet_layers=(3, 4, 9), resnet_width=1.0)
)
_register(
  'R26+ViT-B_32',
  vit.VisionTransformer,
  **_vit('B', 1, resnet_layers=(2, 2, 2, 2), resnet_width=1.0),
)
_register(
  'R26+ViT-S_32',
  vit.VisionTransformer,
  **_vit('S', 1, resnet_layers=(2, 2, 2, 2), resnet_width=1.0),
)
_register(
  'R50+ViT-L_32',
  vit.VisionTransformer,
  **_vit('L', 1, resnet_layers=(3, 4, 6, 3), resnet_width=1.0),
)
# "Root only": 4x stem + 8x8 patches = 32 pixels per token (the original's name keeps "_16").
_register('R+ViT-Ti_16', vit.VisionTransformer, **_vit('Ti', 8, resnet_layers=(), resnet_width=1.0))

for _name, _patch, _blocks, _hidden, _tok, _chan in [
  ('Mixer-B_16', 16, 12, 768, 384, 3072),
  ('Mixer-B_32', 32, 12, 768, 384, 3072),
  ('Mixer-L_16', 16, 24, 1024, 512, 4096),
]:
  _register(
    _name,
    mixer.MlpMixer,
    patch_size=(_patch, _patch),
    num_blocks=_blocks,
    hidden_dim=_hidden,
    tokens_mlp_dim=_tok,
    channels_mlp_dim=_chan,
  )

# BiT ResNets as classifiers (convolutional baselines; no released files in this layout).
_register('BiT-R50x1', bit.BiTResNet, block_layers=(3, 4, 6, 3), width=1.0)
# Bottleneck widths 16-64-128 (x4 out), 28 px -> 4x4 after the last stage: MNIST-sized.
_register('ResNet-tiny', bit.BiTResNet, block_layers=(2, 2, 2), width=0.25)

# A tiny model for tests and quick experiments: the original's `testing` config (no pre-logits
# layer; 21,390 parameters at 1,000 classes).
_register(
  'testing',
  vit.VisionTransformer,
  patch_size=(16, 16),
  hidden_size=10,
  num_layers=1,
  num_heads=2,
  mlp_dim=10,
)
_register(
  'testing-unpooled',
  vit.VisionTransformer,
  patch_size=(16, 16),
  hidden_size=10,
  num_layers=1,
  num_heads=2,
  mlp_dim=10,
  classifier='unpooled',
)


# How a model's name shows the fields a config overrides (others as field=value). Fields that
# do not change what the parameters compute (precision, layout, dropout) are left out.
_SHORT = {
  'num_layers': '{} layers',
  'hidden_size': 'width {}',
  'num_heads': '{} heads',
  'mlp_dim': 'MLP {}',
}
_NOT_SHOWN = frozenset(
  {
    'num_classes',
    'dtype',
    'scan',
    'remat_policy',
    'attention_impl',
    'dropout_rate',
    'attention_dropout_rate',
    'stochastic_depth',
  }
)


def describe(name: str, overrides: Mapping[str, Any] | None = None) -> str:
  """`name`, followed by what `overrides` change in it: the name a model is shown under
  (predict's header and JSON, the analyses' figures and tables), so that e.g. the default
  job's small model is not taken for the registered ViT-Ti_16 whose fields it overrides:
  'ViT-Ti_16 (4 layers, width 64, 4 heads, MLP 128, 4x4 patches, classifier=gap)'."""
  if name not in MODEL_CONFIGS:
    return name
  cls, kwargs = MODEL_CONFIGS[name]
  fields = cls.__dataclass_fields__
  order = [*_SHORT, 'patch_size', *sorted(set(overrides or {}) - set(_SHORT) - {'patch_size'})]
  changes = []
  for field in order:
    if field not in (overrides or {}) or field in _NOT_SHOWN or field not in fields:
      continue
    value, registered = overrides[field], kwargs.get(field, fields[field].default)
    if isinstance(value, (list, tuple)):
      value, registered = tuple(value), tuple(registered or ())
    if value == registered:
      continue
    if field == 'patch_size':
      changes.append(f'{value[0]}x{value[1]} patches')
    else:
      changes.append(_SHORT[field].format(value) if field in _SHORT else f'{field}={value}')
  return f'{name} ({", ".join(changes)})' if changes else name


def model_names() -> list[str]:
  return sorted(MODEL_CONFIGS)


def get_model(name: str, num_classes: int | None = 1000, **overrides) -> nn.Module:
  """Returns the Flax module registered as `name`, with `overrides` replacing its fields.

  E.g. `get_model('ViT-B_16', num_classes=10, dtype=jnp.bfloat16, stochastic_depth=0.1)`.
  The module's `init(rng, images, train=False)` and `apply(variables, images, train=...)`
  take NHWC float images and return logits [batch, num_classes].
  """
  if name not in MODEL_CONFIGS:
    raise ValueError(f'Unknown model {name!r}; valid names: {", ".join(model_names())}.')
  cls, kwargs = MODEL_CONFIGS[name]
  fields = set(cls.__dataclass_fields__) - {'parent', 'name'}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(
      f'{name} ({cls.__name__}) has no field(s) {unknown}; valid fields: {sorted(fields)}.'
    )
  return cls(num_classes=num_classes, **{**kwargs, **overrides})
