"""Config checks: misspelt fields, config files that fail to load, and every field's value.

`main` runs the first two right after flag parsing and `setup_run.build` runs `validate` before
anything else, so that such mistakes cost one line (exit code 2) instead of a traceback, before
anything is created, loaded, compiled or written.
"""

import difflib
import functools
import re
from typing import Any, Callable, Optional

from ml_collections import config_dict

from vit_jax.train import config as config_lib


class ConfigError(ValueError):
  """A config value that cannot work; the message says which field and what to do."""


_OVERRIDE = re.compile(r'^--?config\.([A-Za-z0-9_.]+)')


def field_paths(config) -> list[str]:
  """Dotted paths of every field, nested ones included ('batch', 'pp', 'pp.crop', ...)."""
  paths = []
  for key, value in config.items():
    paths.append(key)
    if isinstance(value, config_dict.ConfigDict):
      paths += [f'{key}.{sub}' for sub in field_paths(value)]
  return paths


def unknown_field(path: str, paths: list[str]) -> str:
  """The one-line message for a field `path` that is not among `paths`."""
  close = difflib.get_close_matches(path, paths, n=1)
  hint = f'did you mean {close[0]!r}?' if close else 'see vit_jax/train/config.py for the fields.'
  return f'config has no field {path!r}; {hint}'


def _config_file(argv) -> str | None:
  found = None  # The last --config wins, as in absl.
  for i, arg in enumerate(argv):
    if arg.startswith(('--config=', '-config=')):
      found = arg.split('=', 1)[1]
    elif arg in ('--config', '-config') and i + 1 < len(argv):
      found = argv[i + 1]
  return found


def load_error(path: str, error: Exception) -> str:
  """The one-line message for a config file that cannot be loaded."""
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  return (
    f'cannot load --config={path}: {lines[-1] if lines else type(error).__name__}; pass '
    'an existing config file, e.g. --config=configs/default.py (configs/<file>.py[:args]).'
  )


def check_overrides(argv, load) -> str | None:
  """Message for an unloadable config file or a `--config.<path>=...` naming no field.

  Args:
    argv: the command line.
    load: config file argument ('configs/vit.py:ViT-B_16,cifar10') -> ConfigDict.
  """
  path = _config_file(argv)
  if path is None:
    return None
  try:
    paths = field_paths(load(path))
  except Exception as e:
    return load_error(path, e)
  for arg in argv[1:]:
    match = _OVERRIDE.match(arg)
    if match and match.group(1) not in paths:
      return unknown_field(match.group(1), paths)
  return None


def check_added_fields(config, base) -> str | None:
  """Message for a field that a config file added to `base` (a misspelt field), else None."""
  known = field_paths(base)
  for path in field_paths(config):
    parent = path.rpartition('.')[0]
    if path not in known and (not parent or parent in known) and parent != 'mesh':
      return f'{unknown_field(path, known)} (the config file sets it; fix its name there)'
  return None


# Compute dtypes (config.dtype; setup_run maps them to jnp) and optimizer-momentum dtypes.
DTYPES = ('float32', 'bfloat16')

# value -> None when valid, else the rest of the one-line message after 'config.<path>=<value>'.
Check = Callable[[Any], Optional[str]]


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python.


def _is_number(value) -> bool:
  # nan fails every range below (comparisons with it are False); inf can be meant (e.g.
  # min_shard_mib=inf: replicate everything).
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rule(ok: Callable[[Any], bool], tail: str, optional: bool = False) -> Check:
  """A check that `ok(value)` holds (None also passes when `optional`)."""
  return lambda value: None if (optional and value is None) or ok(value) else tail


def _one_of(values, optional: bool = False) -> Check:
  values = tuple(values)
  return _rule(lambda v: isinstance(v, str) and v in values, f'; use one of {values}.', optional)


def _flag(optional: bool = False) -> Check:
  return _rule(lambda v: isinstance(v, bool), '; use True or False.', optional)


def _text(tail: str, optional: bool = False, empty: bool = False) -> Check:
  return _rule(lambda v: isinstance(v, str) and (empty or bool(v.strip())), tail, optional)


def _int_from(low: int, tail: str, optional: bool = False) -> Check:
  return _rule(lambda v: _is_int(v) and v >= low, tail, optional)


def _rate(tail: str = '; use a rate in [0, 1).', optional: bool = False) -> Check:
  return _rule(lambda v: _is_number(v) and 0 <= v < 1, tail, optional)


# JAX counts steps in int32 (its default integer width): a step past this would overflow.
MAX_STEPS = 2**31 - 1


def _steps() -> Check:
  return _rule(
    lambda v: _is_int(v) and 1 <= v <= MAX_STEPS,
    f' must be a positive number of steps, at most {MAX_STEPS:,} (JAX counts steps in int32).',
  )


def _group(value) -> Optional[str]:
  # A group's fields have their own rules; a group replaced by a value is not a group.
  return None if isinstance(value, config_dict.ConfigDict) else '; set its fields one by one.'


def _randaugment(value) -> Optional[str]:
  from vit_jax.data import randaugment  # here: see `rules`.

  largest = randaugment.MAX_MAGNITUDE
  if value is None or (
    isinstance(value, (tuple, list))
    and len(value) == 2
    and _is_int(value[0])
    and value[0] >= 0
    and _is_number(value[1])
    and 0 <= value[1] <= largest
  ):
    return None
  return (
    f'; use (num_layers >= 0, magnitude in [0, {largest}]), e.g. '
    '(2, 15), or None for no RandAugment.'
  )


def _patch_size(value) -> Optional[str]:
  if value is None or (
    isinstance(value, (tuple, list))
    and len(value) == 2
    and all(_is_int(v) and v >= 1 for v in value)
  ):
    return None
  return '; use (height, width) in pixels, e.g. (16, 16).'


def _mesh(value) -> Optional[str]:
  # Each size has its own rule ('mesh.*'); the device count is checked when the mesh is made.
  problem = _group(value)
  if not problem and list(value.values()).count(-1) > 1:
    problem = '; use at most one -1 (all remaining devices) among the axis sizes.'
  return problem


def _sharding_rules(value) -> Optional[str]:
  try:
    config_lib.sharding_rules(value)
  except ValueError:
    return (
      f'; use a preset of {sorted(config_lib.SHARDING_RULES)} or the rules '
      '((logical axis, mesh axes), ...).'
    )
  return None


_MODEL_SIZE = _int_from(1, '; use an integer >= 1.', optional=True)


# One rule per field of `config.base_config()`: the value
# alone, with the allowed values taken from the modules that use them. Checks that need other
# fields, the devices, the dataset or the model (batch divisibility, mesh size, crop % patch
# stride, warmup_steps < total_steps, ...) stay in setup_run.build. Messages that tests assert
# keep their words.
@functools.cache
def rules() -> dict[str, Check]:
  """One check per field of `config.base_config()` (tests check that none is missing)."""
  # Imported here, not at the top: config files import vit_jax.train.config, which imports
  # this module, and need none of these (models, optimizers, preprocessing, resampling).
  from vit_jax.data import preprocess
  from vit_jax.models import dot_product
  from vit_jax.models import posemb
  from vit_jax.models import vit
  from vit_jax.train import optim
  from vit_jax.weights import resample

  return {
    'seed': _rule(
      lambda v: _is_int(v) and -(2**63) <= v < 2**63, '; use an integer that fits in int64.'
    ),
    # Data.
    'dataset': _text(
      "; use a TFDS name (e.g. 'cifar10'), 'sklearn_digits' or an image-folder path."
    ),
    'data_dir': _text(
      "; use a directory (str) or None for TFDS's default.", optional=True, empty=True
    ),
    'manual_dir': _text('; use a directory (str) or None.', optional=True, empty=True),
    'download': _flag(),
    'train_split': _text("; use a split, e.g. 'train' or 'train[:98%]'."),
    # Empty or None: no evaluation on that split.
    'test_split': _text("; use a split, e.g. 'test', or None.", optional=True, empty=True),
    'val_split': _text("; use a split, e.g. 'train[98%:]', or None.", optional=True, empty=True),
    'pp': _group,
    'pp.crop': _int_from(1, '; use the image side in pixels, an integer >= 1.'),
    # The train crop's area range is (area_min, 1).
    'pp.area_min': _rule(
      lambda v: _is_number(v) and 0 < v <= 1,
      '; use a number in (0, 1] (the smallest crop as a fraction of the image area; 1.0: no crop).',
    ),
    'pp.flip': _flag(),
    'pp.randaugment': _randaugment,
    'pp.resize_mode': _one_of(preprocess.RESIZE_MODES),
    'shuffle_buffer': _int_from(1, '; use a positive number of examples.'),
    'prefetch': _int_from(0, '; use a number of batches >= 0.'),
    'skip_unreadable': _flag(),
    # Model: None leaves the registered model's value.
    'model_name': _text(
      "; use a registered model name, e.g. 'ViT-B_16' (vit_jax.models.model_names())."
    ),
    'model': _group,
    'model.classifier': _one_of(vit.CLASSIFIERS, optional=True),
    'model.posemb': _one_of(posemb.POSEMB_KINDS, optional=True),
    'model.representation_size': _MODEL_SIZE,
    'model.dropout_rate': _rate(optional=True),
    'model.attention_dropout_rate': _rate(optional=True),
    'model.stochastic_depth': _rate(optional=True),
    'model.hidden_size': _MODEL_SIZE,
    'model.num_layers': _MODEL_SIZE,
    'model.num_heads': _MODEL_SIZE,
    'model.mlp_dim': _MODEL_SIZE,
    'model.patch_size': _patch_size,
    'model.exact_gelu': _flag(optional=True),
    'model.scan': _flag(optional=True),
    'model.remat_policy': _one_of(vit.REMAT_POLICIES, optional=True),
    'model.attention_impl': _one_of(dot_product.IMPLEMENTATIONS, optional=True),
    'dtype': _one_of(DTYPES),
    # Optimisation.
    'batch': _int_from(1, '; use a positive integer (a multiple of the data-parallel size).'),
    'batch_eval': _int_from(1, '; use a positive integer (a multiple of the data-parallel size).'),
    'accum_steps': _int_from(1, '; use a positive number of micro-batches (1: no accumulation).'),
    'total_steps': _steps(),
    'warmup_steps': _rule(
      lambda v: _is_int(v) and 0 <= v <= MAX_STEPS, ' must be >= 0 (0: no warm-up).'
    ),
    'base_lr': _rule(lambda v: _is_number(v) and v > 0, ' must be > 0.'),
    'decay_type': _one_of(optim.DECAY_TYPES),
    'grad_norm_clip': _rule(
      lambda v: _is_number(v) and v >= 0,
      ' must be > 0, or 0 / None for no clipping.',
      optional=True,
    ),
    'optim': _group,
    'optim.name': _one_of(optim.OPTIMIZERS),
    'optim.momentum': _rate(' must be in [0, 1) (0: plain SGD).'),
    'optim.nesterov': _flag(),
    'optim.momentum_dtype': _one_of(DTYPES),
    'optim.b1': _rate('; use a decay rate in [0, 1).'),
    'optim.b2': _rate('; use a decay rate in [0, 1).'),
    'optim.eps': _rule(lambda v: _is_number(v) and v > 0, '; use a number > 0, e.g. 1e-8.'),
    'optim.weight_decay': _rule(lambda v: _is_number(v) and v >= 0, ' must be >= 0 (0: off).'),
    'label_smoothing': _rate(' must be in [0, 1) (0: off).'),
    'mixup': _rule(lambda v: _is_number(v) and v >= 0, ' must be >= 0 (0: off).'),
    # Fine-tuning.
    'pretrained_path': _text(
      '; use a checkpoint (path or released name) or None.', optional=True, empty=True
    ),
    'pretrained_align': _one_of(resample.ALIGNMENTS),
    # Cadence and checkpoints.
    'progress_every': _steps(),
    'eval_every': _steps(),
    'checkpoint_every': _steps(),
    'keep_checkpoints': _int_from(1, '; use how many checkpoints to keep, an integer >= 1.'),
    'restore_step': _int_from(
      0, '; use a checkpoint step (an integer >= 0), or None for the latest.', optional=True
    ),
    # Speed reporting.
    'peak_flops_per_device': _rule(
      lambda v: _is_number(v) and v > 0,
      "; use a device's peak FLOP/s (e.g. 989e12) or None for the built-in table.",
      optional=True,
    ),
    'profile_steps': _int_from(0, '; use 0 (no trace) or the number of steps to trace.'),
    # Mesh and sharding. A config may add mesh axes, so one rule covers every axis size.
    'mesh': _mesh,
    'mesh.*': _rule(
      lambda v: _is_int(v) and (v == -1 or v >= 1),
      '; use a positive axis size, or -1 for all remaining devices.',
    ),
    'sharding_rules': _sharding_rules,
    'min_shard_mib': _rule(
      lambda v: _is_number(v) and v >= 0,
      '; use a size in MiB >= 0 (0 shards every parameter the rules name).',
    ),
  }


def rule_for(path: str) -> Optional[Check]:
  """The check of the field at dotted `path` ('pp.crop'), or None when it has none."""
  parent = path.rpartition('.')[0]
  table = rules()
  return table.get(path) or (table.get(f'{parent}.*') if parent else None)


def _value(config, path: str):
  for key in path.split('.'):
    config = config[key]
  return config


def validate(config) -> None:
  """Checks every field of `config` against its rule (`rule_for`), in `field_paths` order.

  A field without a rule passes: only a field that `base_config()` lacks can have none, and
  `check_added_fields` reports those (tests check that every field of base_config has one).

  Raises:
    ConfigError: (one line) at the first invalid field: 'config.<path>=<value>; use ...'.
  """
  for path in field_paths(config):
    check = rule_for(path)
    value = _value(config, path)
    problem = check(value) if check else None
    if problem:
      shown = value.to_dict() if isinstance(value, config_dict.ConfigDict) else value
      raise ConfigError(f'config.{path}={shown!r}{problem}')
