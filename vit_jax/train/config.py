"""The fields every training config has, with defaults, and the sharding-rule presets.

Config files in `configs/` start from `base_config()`, set what they need and return the
ConfigDict; `main` locks it, so a misspelt field (in a file or on the command line) is an
error. Field names keep the original repo's where it had them. Every field's allowed values
are checked in vit_jax.train.config_check; config files are loaded by
vit_jax.train.config_files.
"""

from ml_collections import config_dict

# Logical axes of the models -> mesh axes. 'batch' comes first so that activations, which
# carry both 'batch' and 'embed', give the data axes to the batch (a mesh axis is used at
# most once per array). 'layers', the leading axis of a scanned model's stacked blocks, has
# no rule: every device holds all layers' shards (the scan slices one layer per step).
SHARDING_RULES = {
  # Data parallel: params replicated on every device.
  'dp': (('batch', ('data', 'fsdp')),),
  # FSDP: params, gradients and optimizer state sharded over `fsdp` (largest dims first).
  'fsdp': (
    ('batch', ('data', 'fsdp')),
    ('embed', 'fsdp'),
    ('mlp', 'fsdp'),
    ('heads', 'fsdp'),
    ('classes', 'fsdp'),
  ),
  # Tensor parallel: attention heads and MLP hidden units split over `model`.
  'tp': (('batch', ('data', 'fsdp')), ('heads', 'model'), ('mlp', 'model')),
  # Both: FSDP over `fsdp`, tensor parallel over `model`.
  'fsdp_tp': (
    ('batch', ('data', 'fsdp')),
    ('heads', 'model'),
    ('mlp', 'model'),
    ('embed', 'fsdp'),
    ('mlp', 'fsdp'),
    ('classes', 'fsdp'),
  ),
}


def base_config() -> config_dict.ConfigDict:
  """Defaults shared by all configs (unlocked; main locks it)."""
  c = config_dict.ConfigDict()
  c.seed = 0

  # Data: a TFDS name, 'sklearn_digits' (built in, offline) or an image-folder path.
  c.dataset = 'sklearn_digits'
  c.data_dir = config_dict.placeholder(str)  # TFDS data_dir (default: TFDS's own).
  c.manual_dir = config_dict.placeholder(str)  # TFDS manual_dir (imagenet2012).
  c.download = False  # let TFDS download and prepare a missing dataset.
  c.train_split = 'train'
  c.test_split = 'test'
  c.val_split = config_dict.placeholder(str)  # optional held-out split, e.g. 'train[98%:]'.
  c.pp = config_dict.ConfigDict()
  c.pp.crop = 224  # train and eval image size.
  c.pp.area_min = 0.05  # inception crop area range [area_min, 1]; 1.0 = plain resize.
  c.pp.flip = True
  c.pp.randaugment = config_dict.placeholder(tuple)  # (num_layers, magnitude 0..30): (2, 15).
  c.pp.resize_mode = 'resize'  # eval: 'resize' or 'resize_crop' (short side, central crop).
  c.shuffle_buffer = 50_000
  c.prefetch = 2
  c.skip_unreadable = True  # skip undecodable images with a counted warning; False: stop.

  # Model: a registered name plus overrides of its fields (None = the registered value).
  c.model_name = 'ViT-B_16'
  c.model = config_dict.ConfigDict()
  for field, kind in [
    ('classifier', str),
    ('posemb', str),
    ('representation_size', int),
    ('dropout_rate', float),
    ('attention_dropout_rate', float),
    ('stochastic_depth', float),
    ('hidden_size', int),
    ('num_layers', int),
    ('num_heads', int),
    ('mlp_dim', int),
    ('patch_size', tuple),
    # ViT only: erf GELU (timm's / Hugging Face's default) instead of the original's tanh form.
    ('exact_gelu', bool),
    # ViT only: blocks as one nn.scan (fast compiles) and the remat policy
    # ('none', 'nothing_saveable', 'dots_saveable', ...; see models/vit.py).
    ('scan', bool),
    ('remat_policy', str),
    # 'auto' (per backend), 'per_head', 'xla', 'cudnn'; see models/attention.py.
    ('attention_impl', str),
  ]:
    c.model[field] = config_dict.placeholder(kind)
  c.dtype = 'float32'  # compute dtype: 'bfloat16' for mixed precision (params stay float32).

  # Optimisation.
  c.batch = 512
  c.batch_eval = 512
  c.accum_steps = 1  # gradient accumulation: micro-batches of batch / accum_steps.
  c.total_steps = 10_000
  c.warmup_steps = 500
  c.base_lr = 0.03
  c.decay_type = 'cosine'  # 'cosine', 'linear' or 'constant'.
  c.grad_norm_clip = 1.0
  c.optim = config_dict.ConfigDict()
  c.optim.name = 'sgd'  # 'sgd' (momentum; fine-tuning) or 'adamw' (pre-training).
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.momentum_dtype = 'float32'  # the original fine-tuned with bfloat16 momentum.
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.0  # adamw: decoupled, times lr(t) / base_lr (big_vision).
  c.label_smoothing = 0.0
  c.mixup = 0.0  # Beta(alpha, alpha) mixup; 0 = off.

  # Fine-tuning: a released or big_vision .npz[:subtree], a released name (i21k:ViT-B_16,
  # augreg:B_16), a timm / Hugging Face checkpoint or an earlier run's workdir/checkpoint.
  c.pretrained_path = config_dict.placeholder(str)
  c.pretrained_align = 'corners'  # position-embedding resampling ('corners'|'half_pixel').

  # Cadence (in steps) and checkpoints.
  c.progress_every = 100
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  # Resume from this checkpoint step (later ones are moved aside); None = the latest intact one.
  c.restore_step = config_dict.placeholder(int)

  # Speed reporting. MFU needs the peak FLOP/s of one device: None = the bf16 peak from
  # vit_jax.train.throughput's table when it knows the device (not CPUs); set it to log MFU anyway.
  c.peak_flops_per_device = config_dict.placeholder(float)
  c.profile_steps = 0  # > 0: a jax.profiler trace of that many steps into WORKDIR/profile.

  # Mesh: axis name -> size (-1 = all remaining devices), and the sharding rules: a preset
  # name of SHARDING_RULES (--config.sharding_rules=fsdp) or the rules themselves.
  c.mesh = config_dict.ConfigDict({'data': -1, 'fsdp': 1, 'model': 1})
  c.sharding_rules = config_dict.FieldReference('dp', field_type=object)
  # Parameters smaller than this (MiB, as float32) stay replicated whatever the rules say:
  # gathering tiny tensors costs more than their memory saves (big_vision's FSDP uses 4).
  c.min_shard_mib = 4.0
  return c


def sharding_rules(value) -> tuple:
  """config.sharding_rules (a preset name or ((logical, mesh axes), ...)) -> the rules.

  Raises:
    ValueError: (one line) for an unknown preset or malformed rules.
  """
  if isinstance(value, str):
    if value not in SHARDING_RULES:
      raise ValueError(
        f'unknown preset {value!r}; use one of {sorted(SHARDING_RULES)} or '
        'give the rules, ((logical, mesh axes), ...).'
      )
    return SHARDING_RULES[value]
  try:
    return tuple((str(name), tuple(a) if isinstance(a, list) else a) for name, a in value)
  except (TypeError, ValueError):
    raise ValueError(
      f'{value!r} is neither a preset name ({sorted(SHARDING_RULES)}) nor '
      '((logical, mesh axes), ...).'
    ) from None


def model_overrides(config: config_dict.ConfigDict) -> dict:
  """The model fields the config sets (placeholders left at None are not overrides)."""
  return {
    k: (tuple(v) if isinstance(v, list) else v) for k, v in config.model.items() if v is not None
  }
