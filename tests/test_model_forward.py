"""Forward shapes, options and input validation of the models (tiny configs)."""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import models
from vit_jax.models import dot_product
from vit_jax.models import posemb
from vit_jax.models import relative_position

TINY = dict(patch_size=(4, 4), hidden_size=16, num_layers=2, num_heads=2, mlp_dim=24)
IMAGES = np.random.default_rng(0).uniform(-1, 1, (2, 16, 24, 3)).astype(np.float32)
GRID = (4, 6)  # 16x24 images, 4x4 patches.


def tiny(**kw):
  return models.VisionTransformer(**{'num_classes': 7, **TINY, **kw})


@pytest.mark.parametrize(
  'classifier,shape',
  [
    ('token', (2, 7)),
    ('gap', (2, 7)),
    ('map', (2, 7)),
    ('unpooled', (2, 24, 7)),
    ('token_unpooled', (2, 25, 7)),
  ],
)
@pytest.mark.parametrize(
  'kind', ['learn', 'learn_2d', 'sincos2d', 'none', 'relative', 'relative_2d', 'relative_bias']
)
def test_output_shapes_for_every_classifier_and_posemb(classifier, shape, kind):
  model = tiny(classifier=classifier, posemb=kind)
  variables = model.init(jax.random.key(0), IMAGES)
  assert model.apply(variables, IMAGES).shape == shape
  params = nn.meta.unbox(variables['params'])
  pe = params['Transformer'].get('posembed_input', {})
  prefix = 1 if classifier in ('token', 'token_unpooled') else 0
  expected_pe = {
    'learn': {'pos_embedding': (1, prefix + 24, 16)},
    'learn_2d': {'pos_embedding_row': (1, 4, 8), 'pos_embedding_col': (1, 6, 8)},
  }.get(kind, {})
  assert {k: v.shape for k, v in pe.items()} == expected_pe
  attention_params = params['Transformer']['encoderblock_0']['MultiHeadDotProductAttention_1']
  tables = {k: v.shape for k, v in attention_params.items() if k.startswith('relative')}
  # A 4x6 grid, 2 heads of 8 dims; 3 more entries per table with a class token.
  assert tables == {
    'relative': {'relative_embedding': (2 * 24 - 1 + 3 * prefix, 8)},
    'relative_2d': {
      'relative_embedding_y': (7 + 3 * prefix, 4),
      'relative_embedding_x': (11 + 3 * prefix, 4),
    },
    'relative_bias': {'relative_position_bias': (7 * 11 + 3 * prefix, 2)},
  }.get(kind, {})


def test_features_without_head_and_with_representation():
  variables = tiny(num_classes=0).init(jax.random.key(0), IMAGES)
  assert 'head' not in variables['params']
  assert tiny(num_classes=0).apply(variables, IMAGES).shape == (2, 16)
  model = tiny(representation_size=5)
  variables = model.init(jax.random.key(0), IMAGES)
  assert variables['params']['pre_logits']['kernel'].value.shape == (16, 5)
  # Head kernel starts at zero, as in the original: logits equal the (zero) bias.
  np.testing.assert_array_equal(model.apply(variables, IMAGES), 0.0)


def test_every_parameter_has_logical_axis_names():
  for model in [
    tiny(posemb='relative_bias', classifier='map', representation_size=5),
    models.get_model('R26+ViT-S_32', num_classes=3, num_layers=1),
    models.get_model('Mixer-B_32', num_classes=3, num_blocks=1),
  ]:
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    leaves = jax.tree.leaves(
      variables['params'], is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
    )
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
    assert all(len(x.names) == x.value.ndim for x in leaves)


def test_qkv_and_out_kernels_have_the_released_layout_and_names():
  variables = tiny().init(jax.random.key(0), IMAGES)
  att = variables['params']['Transformer']['encoderblock_1']['MultiHeadDotProductAttention_1']
  assert att['query']['kernel'].value.shape == (16, 2, 8)
  assert att['query']['kernel'].names == ('embed', 'heads', 'kv')
  assert att['out']['kernel'].value.shape == (2, 8, 16)
  assert att['out']['kernel'].names == ('heads', 'kv', 'embed')


def test_train_mode_uses_dropout_rng_reproducibly():
  model = tiny(
    dropout_rate=0.1,
    attention_dropout_rate=0.1,
    stochastic_depth=0.2,
    classifier='gap',
    num_classes=0,
  )
  variables = model.init(jax.random.key(0), IMAGES)
  params = jax.tree.map(lambda x: x + 0.1, nn.meta.unbox(variables['params']))
  run = lambda seed: model.apply(
    {'params': params}, IMAGES, train=True, rngs={'dropout': jax.random.key(seed)}
  )
  np.testing.assert_array_equal(run(1), run(1))
  assert np.abs(run(1) - run(2)).max() > 1e-4
  eval_out = model.apply({'params': params}, IMAGES, train=False)
  np.testing.assert_array_equal(eval_out, model.apply({'params': params}, IMAGES))
  with pytest.raises(flax.errors.InvalidRngError):
    model.apply({'params': params}, IMAGES, train=True)


def test_bfloat16_compute_and_params():
  model = tiny(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, classifier='gap')
  variables = jax.eval_shape(model.init, jax.random.key(0), IMAGES)
  dtypes = {x.dtype for x in jax.tree.leaves(nn.meta.unbox(variables['params']))}
  assert dtypes == {jnp.dtype(jnp.bfloat16)}
  # bf16 matmul operands, float32 accumulation and activations: float32 out.
  assert jax.eval_shape(model.apply, variables, IMAGES).dtype == jnp.float32
  # bf16 compute with f32 params tracks the f32 model (features, before the zero-init head).
  f32, bf16 = tiny(num_classes=0), tiny(num_classes=0, dtype=jnp.bfloat16)
  variables = jax.jit(f32.init)(jax.random.key(0), IMAGES)
  out32 = jax.jit(f32.apply)(variables, IMAGES)
  out16 = jax.jit(bf16.apply)(variables, IMAGES)
  diff = np.abs(np.asarray(out16) - out32)
  # Features of scale ~2 (LayerNorm output); bfloat16 operands (<= 2**-8 relative each) put
  # ~3.2e-3 rms relative error in each of ~20 dots, in quadrature ~1.4e-2: ~3e-2 absolute
  # typical, worst case ~0.2. 0.1. Above 1e-4: float32 would be within ~1e-5.
  assert 1e-4 < diff.max() < 0.1


@pytest.mark.parametrize(
  'name,size,tokens',
  [
    ('R+ViT-Ti_16', 64, 4),
    ('R26+ViT-S_32', 64, 4),
    ('R50+ViT-B_16', 32, 4),
    ('R50+ViT-L_32', 64, 4),
  ],
)
def test_hybrid_token_grid(name, size, tokens):
  model = models.get_model(name, num_classes=3, num_layers=1, classifier='unpooled')
  images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  assert jax.eval_shape(model.apply, variables, images).shape == (1, tokens, 3)


def test_hybrid_and_mixer_run():
  images = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
  for model in [
    models.get_model('R+ViT-Ti_16', num_classes=0, num_layers=1),
    models.get_model(
      'Mixer-B_32',
      num_classes=0,
      num_blocks=1,
      hidden_dim=32,
      tokens_mlp_dim=8,
      channels_mlp_dim=16,
    ),
  ]:
    variables = jax.jit(model.init)(jax.random.key(0), images)
    features = jax.jit(model.apply)(variables, images)
    assert features.shape == (2, 192 if model.model_name == 'R+ViT-Ti_16' else 32)
    assert np.isfinite(features).all() and np.abs(features[0] - features[1]).max() > 1e-3


def test_sincos_embedding_values():
  pe = posemb.sincos_2d(3, 5, 8)
  assert pe.shape == (15, 8)
  # Token (row 1, col 2): channels = sin/cos of col*omega, then sin/cos of row*omega.
  omega = 1 / 10_000 ** np.array([0.0, 1.0])
  # Computed in float64 and rounded once to float32: <= 2**-24 relative; eps = 2**-23.
  np.testing.assert_allclose(
    pe[1 * 5 + 2],
    np.concatenate([np.sin(2 * omega), np.cos(2 * omega), np.sin(1 * omega), np.cos(1 * omega)]),
    rtol=2**-23,
  )


def test_relative_position_index_is_a_function_of_the_offset():
  index = relative_position.relative_position_index(3, 4, num_prefix=1)
  assert index.shape == (13, 13)
  coords = [(r, c) for r in range(3) for c in range(4)]
  for i, (r1, c1) in enumerate(coords):
    for j, (r2, c2) in enumerate(coords):
      assert index[1 + i, 1 + j] == (r1 - r2 + 2) * 7 + (c1 - c2 + 3)
  assert index.max() == 7 * 5 + 2 and index[0, 0] == 37 and index[0, 5] == 35
  assert index[5, 0] == 36


def test_relative_bias_changes_attention_by_offset():
  model = tiny(posemb='relative_bias', classifier='gap', num_classes=0)
  variables = nn.meta.unbox(model.init(jax.random.key(0), IMAGES))
  bumped = jax.tree_util.tree_map_with_path(
    lambda p, x: x + 1.0 if 'relative_position_bias' in jax.tree_util.keystr(p) else x, variables
  )
  # A constant bias on all offsets leaves softmax unchanged; a single entry does not. In float32
  # the + 1 rounds the logits differently, so every later sum rounds anew: as two programs on
  # features of scale ~1.3, reductions of <= 48 terms over 2 blocks: ~sqrt(48)*2*eps*sqrt(2)
  # *1.3 = 3e-6 typical, worst ~1e-4. 1e-5.
  np.testing.assert_allclose(model.apply(bumped, IMAGES), model.apply(variables, IMAGES), atol=1e-5)
  table = variables['params']['Transformer']['encoderblock_0']['MultiHeadDotProductAttention_1']
  table['relative_position_bias'] = table['relative_position_bias'].at[10].add(5.0)
  assert np.abs(model.apply(variables, IMAGES) - model.apply(bumped, IMAGES)).max() > 1e-3


def test_attention_dropout_path_matches_fused_path_without_dropout():
  rng = np.random.default_rng(1)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 5, 3, 4)), jnp.float32) for _ in range(3))
  bias = jnp.asarray(rng.normal(size=(1, 3, 5, 5)), jnp.float32)
  fused = dot_product.attend(q, k, v, bias, 0.0, None, deterministic=True)
  # rate -> 0 keeps every weight: the explicit path must compute the same function.
  explicit = dot_product.attend(q, k, v, bias, 1e-12, jax.random.key(0), deterministic=False)
  # Two float32 programs: q.k of 4 terms, logits of rms ~1.4, softmax and weights.v of 5:
  # ~(1.4*sqrt(4) + sqrt(10))*eps*sqrt(2) ~ 10 eps relative to outputs of scale ~1.6: ~2e-6
  # absolute typical, worst (1.4*4*2 + 20)*eps*1.6 ~ 6e-6. 5e-6.
  np.testing.assert_allclose(explicit, fused, rtol=0, atol=5e-6)


@pytest.mark.parametrize(
  'build,images,message',
  [
    (
      lambda: models.get_model('ViT-Ti_16', num_classes=2),
      np.zeros((1, 40, 32, 3)),
      'not divisible by the patch stride 16',
    ),
    (
      lambda: models.get_model('ViT-Ti_16', num_classes=2),
      np.zeros((1, 32, 32, 1)),
      'expects 3-channel RGB images, got 1 channels',
    ),
    (
      lambda: models.get_model('R50+ViT-B_16', num_classes=2),
      np.zeros((1, 56, 56, 3)),
      'not divisible by the patch stride 16',
    ),
    (
      lambda: models.get_model('Mixer-B_32', num_classes=2),
      np.zeros((1, 32, 32, 4)),
      'expects 3-channel RGB images, got 4 channels',
    ),
    (
      lambda: models.get_model('ViT-Ti_16', num_classes=2),
      np.zeros((32, 32, 3)),
      'expects NHWC images of rank 4',
    ),
    (lambda: tiny(classifier='cls'), IMAGES, "unknown classifier 'cls'"),
    (lambda: tiny(posemb='learned'), IMAGES, "unknown posemb 'learned'"),
  ],
)
def test_bad_input_gives_one_clear_line(build, images, message):
  with pytest.raises(ValueError, match=message) as e:
    build().init(jax.random.key(0), images)
  assert '\n' not in str(e.value)


def test_unknown_model_name_lists_valid_names():
  with pytest.raises(
    ValueError, match="Unknown model 'ViT-X_16'; valid names: BiT-R50x1, Mixer-B_16.*ViT-B_16,"
  ) as e:
    models.get_model('ViT-X_16')
  assert '\n' not in str(e.value)
  with pytest.raises(ValueError, match=r"no field\(s\) \['hiden_size'\]"):
    models.get_model('ViT-B_16', hiden_size=3)


def test_image_size_other_than_init_size_explains_resampling():
  model = tiny()
  variables = model.init(jax.random.key(0), IMAGES)
  with pytest.raises(ValueError, match='load_pretrained to resample') as e:
    model.apply(variables, np.zeros((1, 32, 32, 3), np.float32))
  assert 'pos_embedding has shape (1, 25, 16) but the input needs (1, 65, 16)' in str(e.value)


def test_jit_with_static_train_flag():
  model = tiny(classifier='gap')
  variables = model.init(jax.random.key(0), IMAGES)
  apply = jax.jit(functools.partial(model.apply, train=False))
  # jit (fused) and eager are two float32 programs: reductions of <= 48 terms over 2 blocks,
  # ~sqrt(48)*2*eps*sqrt(2) = 2.3e-6 of the logits' scale typical, worst ~1e-4. 1e-5 (with the
  # zero-initialised head both are exactly the bias here).
  np.testing.assert_allclose(apply(variables, IMAGES), model.apply(variables, IMAGES), atol=1e-5)
