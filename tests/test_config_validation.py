"""Every config field is validated before anything is written: one table of rules
(vit_jax.train.config_check), checked first by setup_run.build, so a bad value is one
`Config error:` line (exit code 2) and leaves no workdir, not a traceback from the input
pipeline after config.json and labels.json are written."""

import pytest

from helpers import load_config
from test_main_cli import run_main
from vit_jax.train import config as config_lib
from vit_jax.train import config_check
from vit_jax.train import setup_run


def test_every_field_has_a_rule():
  # A field added to base_config() without a rule fails here.
  paths = config_check.field_paths(config_lib.base_config())
  missing = [p for p in paths if config_check.rule_for(p) is None]
  assert not missing, f'config fields without a rule in config_check: {missing}'
  # And every rule is for a field that exists (no rule outlives its field).
  stale = [p for p in config_check.rules() if p.removesuffix('.*') not in paths]
  assert not stale, f'rules for fields that base_config() does not have: {stale}'


@pytest.mark.parametrize(
  'name, arg',
  [
    ('default', None),
    ('pretrain', None),
    ('pretrain', 'ViT-B_16'),
    ('vit', 'ViT-B_16,cifar10'),
    ('vit', 'R50+ViT-B_16,imagenet2012'),
    ('vit', 'Mixer-B_16,cifar100'),
    ('mnist', '/tmp/mnist,vit'),
    ('mnist', '/tmp/mnist,resnet'),
    ('posemb_ablation', None),
  ],
)
def test_shipped_configs_pass(name, arg):
  config_check.validate(load_config(name, arg))


@pytest.mark.parametrize(
  'field, value',
  [
    ('pp__area_min', 1.0),
    ('pp__randaugment', (0, 30)),
    ('pp__randaugment', [2, 15]),
    ('pp__resize_mode', 'resize_crop'),
    ('prefetch', 0),
    ('shuffle_buffer', 1),
    ('grad_norm_clip', None),
    ('grad_norm_clip', 0.0),
    ('restore_step', 0),
    ('mesh__data', 8),
    ('sharding_rules', 'fsdp'),
    ('sharding_rules', [['batch', 'data']]),
    ('model__remat_policy', 'none'),
    ('model__dropout_rate', 0.0),
    ('seed', -1),
    ('test_split', None),
    ('dtype', 'bfloat16'),
    ('optim__momentum_dtype', 'bfloat16'),
  ],
)
def test_edge_values_pass(field, value):
  config_check.validate(load_config('default', **{field: value}))


@pytest.mark.parametrize(
  'field, value, message',
  [
    # The five the input pipeline used to reject only after writing config.json.
    (
      'pp__resize_mode',
      'crop',
      "config.pp.resize_mode='crop'; use one of ('resize', 'resize_crop').",
    ),
    (
      'pp__area_min',
      0.0,
      'config.pp.area_min=0.0; use a number in (0, 1] (the smallest crop as a fraction of the '
      'image area; 1.0: no crop).',
    ),
    (
      'pp__randaugment',
      (2, 40),
      'config.pp.randaugment=(2, 40); use (num_layers >= 0, magnitude in [0, 30]), e.g. (2, 15), '
      'or None for no RandAugment.',
    ),
    ('shuffle_buffer', 0, 'config.shuffle_buffer=0; use a positive number of examples.'),
    ('prefetch', -1, 'config.prefetch=-1; use a number of batches >= 0.'),
    # More data fields.
    (
      'pp__area_min',
      1.5,
      'config.pp.area_min=1.5; use a number in (0, 1] (the smallest crop as a fraction of the '
      'image area; 1.0: no crop).',
    ),
    (
      'pp__randaugment',
      (2,),
      'config.pp.randaugment=(2,); use (num_layers >= 0, magnitude in [0, 30]), e.g. (2, 15), '
      'or None for no RandAugment.',
    ),
    ('pp__crop', 0, 'config.pp.crop=0; use the image side in pixels, an integer >= 1.'),
    ('seed', 2**63, 'config.seed=9223372036854775808; use an integer that fits in int64.'),
    ('skip_unreadable', None, 'config.skip_unreadable=None; use True or False.'),
    (
      'dataset',
      '',
      "config.dataset=''; use a TFDS name (e.g. 'cifar10'), 'sklearn_digits' or "
      'an image-folder path.',
    ),
    # Model.
    (
      'model__classifier',
      'cls',
      "config.model.classifier='cls'; use one of ('token', 'gap', 'map', 'unpooled', "
      "'token_unpooled').",
    ),
    (
      'model__posemb',
      'learned',
      "config.model.posemb='learned'; use one of ('learn', 'learn_2d', 'sincos2d', 'none', "
      "'relative', 'relative_2d', 'relative_bias').",
    ),
    ('model__dropout_rate', 1.0, 'config.model.dropout_rate=1.0; use a rate in [0, 1).'),
    ('model__num_heads', 0, 'config.model.num_heads=0; use an integer >= 1.'),
    (
      'model__patch_size',
      (4,),
      'config.model.patch_size=(4,); use (height, width) in pixels, e.g. (16, 16).',
    ),
    (
      'model__remat_policy',
      'dots',
      "config.model.remat_policy='dots'; use one of ('none', 'nothing_saveable', "
      "'dots_saveable', 'dots_with_no_batch_dims_saveable').",
    ),
    ('dtype', 'float16', "config.dtype='float16'; use one of ('float32', 'bfloat16')."),
    # Optimisation.
    ('batch', 0, 'config.batch=0; use a positive integer (a multiple of the data-parallel size).'),
    (  # advised "use a multiple of 1", before.
      'batch',
      -1,
      'config.batch=-1; use a positive integer (a multiple of the data-parallel size).',
    ),
    (
      'accum_steps',
      0,
      'config.accum_steps=0; use a positive number of micro-batches (1: no accumulation).',
    ),
    (
      'total_steps',
      0,
      'config.total_steps=0 must be a positive number of steps, at most 2,147,483,647 (JAX '
      'counts steps in int32).',
    ),
    (  # an int32 overflow in the schedule, as a traceback, before.
      'total_steps',
      10**12,
      'config.total_steps=1000000000000 must be a positive number of steps, at most '
      '2,147,483,647 (JAX counts steps in int32).',
    ),
    ('decay_type', 'exp', "config.decay_type='exp'; use one of ('cosine', 'linear', 'constant')."),
    ('optim__name', 'lamb', "config.optim.name='lamb'; use one of ('sgd', 'adamw')."),
    (
      'optim__momentum_dtype',
      'float16',
      "config.optim.momentum_dtype='float16'; use one of ('float32', 'bfloat16').",
    ),
    ('optim__b2', 1.0, 'config.optim.b2=1.0; use a decay rate in [0, 1).'),
    ('optim__eps', 0.0, 'config.optim.eps=0.0; use a number > 0, e.g. 1e-8.'),
    ('base_lr', None, 'config.base_lr=None must be > 0.'),
    ('label_smoothing', float('nan'), 'config.label_smoothing=nan must be in [0, 1) (0: off).'),
    # Fine-tuning, checkpoints, speed, mesh.
    (
      'pretrained_align',
      'corner',
      "config.pretrained_align='corner'; use one of ('corners', 'half_pixel').",
    ),
    (
      'keep_checkpoints',
      0,
      'config.keep_checkpoints=0; use how many checkpoints to keep, an integer >= 1.',
    ),
    (
      'restore_step',
      -1,
      'config.restore_step=-1; use a checkpoint step (an integer >= 0), or None for the latest.',
    ),
    (
      'min_shard_mib',
      -1.0,
      'config.min_shard_mib=-1.0; use a size in MiB >= 0 (0 shards every '
      'parameter the rules name).',
    ),
    (
      'mesh__data',
      0,
      'config.mesh.data=0; use a positive axis size, or -1 for all remaining devices.',
    ),
    (
      'mesh__fsdp',
      -1,
      "config.mesh={'data': -1, 'fsdp': -1, 'model': 1}; use at most one -1 "
      '(all remaining devices) among the axis sizes.',
    ),
    (
      'sharding_rules',
      'fdsp',
      "config.sharding_rules='fdsp'; use a preset of ['dp', 'fsdp', 'fsdp_tp', 'tp'] or the "
      'rules ((logical axis, mesh axes), ...).',
    ),
  ],
)
def test_bad_value_is_one_line_and_writes_nothing(tmp_path, digits_data_dir, field, value, message):
  config = load_config('default', data_dir=digits_data_dir, **{field: value})
  with pytest.raises(setup_run.ConfigError) as e:
    setup_run.build(config, str(tmp_path / 'run'))
  assert str(e.value) == message
  assert not (tmp_path / 'run').exists()


def test_bad_value_on_the_command_line(tmp_path):
  workdir = tmp_path / 'run'
  result = run_main(
    '--config=configs/default.py', f'--workdir={workdir}', '--config.pp.resize_mode=crop'
  )
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.splitlines() == [
    "Config error: config.pp.resize_mode='crop'; use one of ('resize', 'resize_crop')."
  ]
  assert not workdir.exists()
