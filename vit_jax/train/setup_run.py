"""Turns a config into the pieces of a run, validating everything before anything compiles.

Every problem a user can fix (batch sizes, mesh, model or dataset name, pre-trained file,
workdir) is reported as one `ConfigError` line naming the field and what to change.
"""

import dataclasses
from typing import Any, Optional

from etils import epath
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vit_jax import models
from vit_jax.run import health
from vit_jax.run import orbax_io
from vit_jax.run import workdir as workdir_lib
from vit_jax.system import cpu_devices
from vit_jax.system import sharding
from vit_jax.train import config as config_lib
from vit_jax.train import config_check
from vit_jax.train import optim
from vit_jax.train import state as state_lib
from vit_jax.weights import fit

DTYPES = {name: getattr(jnp, name) for name in config_check.DTYPES}  # config.dtype -> jnp.


ConfigError = config_check.ConfigError


@dataclasses.dataclass
class Run:
  """Everything the loop needs, built from the config (nothing compiled yet)."""

  config: Any
  workdir: str
  mesh: jax.sharding.Mesh
  rules: tuple
  info: Any  # vit_jax.data.DatasetInfo
  model: nn.Module
  tx: optax.GradientTransformation
  schedule: Any
  init: Any  # rng -> boxed TrainState
  abstract_state: Any
  state_shardings: Any
  batch_sharding: jax.sharding.NamedSharding
  pretrained: Optional[dict] = None  # host params to start from (fine-tuning).


def prepare_host(config) -> dict:
  """Before JAX starts, in a process that trains or evaluates `config` (the CLI, experiment,
  Session): the XLA:CPU flags for `config.dtype`, and one CPU device per core where the mesh
  leaves the count open (a mesh sized by hand keeps the user's count); see
  cpu_devices.prepare."""
  sizes = list(config.mesh.values())
  accum = max(int(config.accum_steps), 1)
  batch_sizes = [config.batch, config.batch_eval]
  if config.batch % accum == 0:
    batch_sizes.append(config.batch // accum)
  split = (
    sizes.count(-1) == 1
    and all(s in (-1, 1) for s in sizes)
    and all(isinstance(b, int) and b > 0 for b in batch_sizes)  # else config_check reports.
  )
  dtype = config.dtype if config.dtype in DTYPES else 'float32'
  return cpu_devices.prepare(dtypes=[dtype], batch_sizes=batch_sizes, split=split)


def _check_workdir(workdir: str) -> None:
  """The workdir and its checkpoints/ exist and can be written (local or gs://, via epath)."""
  root = epath.Path(workdir)
  try:
    root.mkdir(parents=True, exist_ok=True)
    error = health.write_error(root)
  except Exception as e:  # OSError; object stores' own errors
    error = health.reason(e)
  if error:
    raise ConfigError(
      f'workdir {workdir} is not writable ({error}); pass a --workdir you can write to.'
    )
  checkpoints = str(workdir_lib.path(root, workdir_lib.CHECKPOINTS))
  try:
    epath.Path(checkpoints).mkdir(parents=True, exist_ok=True)
  except Exception as e:
    raise ConfigError(
      f'{checkpoints} cannot be created ({health.reason(e)}); fix '
      'its permissions or pass a new --workdir.'
    ) from None
  problem = health.unwritable(checkpoints)
  if problem:
    raise ConfigError(
      f'{problem}: checkpoints could not be saved; fix the permissions (e.g. '
      f'chown -R $USER {checkpoints}) or pass a new --workdir.'
    )


def _check_checkpoints(config, workdir: str, abstract_state) -> bool:
  """config.restore_step exists; the checkpoint to resume fits the model (before compiling).

  Returns:
    Whether the run resumes from a checkpoint (rather than starting fresh).
  """
  directory = workdir_lib.path(workdir, workdir_lib.CHECKPOINTS)
  steps = orbax_io.steps(directory)
  if config.restore_step is not None and config.restore_step not in steps:
    raise ConfigError(
      f'config.restore_step={config.restore_step} is not a checkpoint in '
      f'{directory}; available steps: {steps or "none"}.'
    )
  candidates = [config.restore_step] if config.restore_step is not None else steps[::-1]
  for step in candidates:
    try:
      stored = orbax_io.state_metadata(directory, step)
    except Exception:  # damaged: the loop moves it aside
      continue
    if stored is None:
      continue
    difference = health.mismatch(stored, abstract_state)
    if difference:
      raise ConfigError(
        f'the checkpoint step {step} in {directory} does not match the config '
        f'({difference}); pass a new --workdir for this model.'
      )
    break
  return bool(steps)


def _check_batches(config, mesh, rules) -> None:
  """Batch sizes fit the mesh and the processes (their own ranges are in config_check)."""
  dp = sharding.data_parallel_size(mesh, rules)
  procs = jax.process_count()
  for field in ('batch', 'batch_eval'):
    value = config[field]
    if value % dp or value % procs:
      raise ConfigError(
        f'config.{field}={value} is not divisible by the data-parallel size {dp} (mesh axes '
        f'{sharding.batch_axes(rules)}) and {procs} process(es); use a multiple of '
        f'{np.lcm(dp, procs)}.'
      )
  if config.batch % (config.accum_steps * dp):
    raise ConfigError(
      f'config.batch={config.batch} must split into accum_steps={config.accum_steps} '
      f'micro-batches that are each divisible by the data-parallel size {dp}.'
    )


def _model(config, num_classes: int) -> nn.Module:
  try:
    model = models.get_model(
      config.model_name,
      num_classes=num_classes,
      dtype=DTYPES[config.dtype],
      **config_lib.model_overrides(config),
    )
  except ValueError as e:
    raise ConfigError(f'config.model_name / config.model: {e}') from None
  stride = model.stride
  if config.pp.crop % stride:
    raise ConfigError(
      f'config.pp.crop={config.pp.crop} is not divisible by the patch stride '
      f'{stride} of {config.model_name}; use a multiple of {stride}.'
    )
  return model


def _dataset_info(config):
  from vit_jax import data  # imports TF lazily

  try:
    info = data.get_dataset_info(
      config.dataset,
      data_dir=config.data_dir,
      manual_dir=config.manual_dir,
      download=config.download,
    )
    for field in ('train_split', 'test_split', 'val_split'):
      if config[field]:
        info.num_examples(config[field])
  except data.DataError as e:
    raise ConfigError(str(e)) from None
  return info


def _pretrained(config, abstract_params, exact_gelu: bool = False) -> Optional[dict]:
  """Host params from config.pretrained_path fitted to the model (head left to the model);
  `exact_gelu`: the model's GELU form, compared with what the file says."""
  path = config.pretrained_path
  if not path:
    return None
  zeros = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract_params)
  try:  # Any format (see vit_jax.weights.sources): .npz, released names, timm, HF, workdirs.
    params = fit.load_pretrained(path, zeros, align=config.pretrained_align, exact_gelu=exact_gelu)
  except (ValueError, OSError) as e:
    raise ConfigError(f'config.pretrained_path={path}: {e}') from None
  params.pop('head', None)  # the fresh head of the initialised state is kept.
  return params


def _check_warmup(config) -> None:
  """A shorter run than the config's warm-up (e.g. --config.total_steps=100 on the default job,
  which warms up for 100 steps) is refused with the flag that fixes it."""
  warmup, total = config.warmup_steps, config.total_steps
  if warmup >= total:
    raise ConfigError(
      f'config.warmup_steps={warmup} must be < config.total_steps={total}; '
      f'e.g. --config.warmup_steps={total // 10} (a tenth of the steps).'
    )


def build(config, workdir: str) -> Run:
  """Validates `config` and builds mesh, data info, model, optimizer and abstract state.

  Every field is validated first (config_check.validate), before any dataset lookup, mesh or
  model; the workdir is created last, so that a config error leaves no empty workdir behind.
  """
  config_check.validate(config)
  workdir = workdir_lib.absolute(workdir)
  try:
    mesh = sharding.make_mesh(dict(config.mesh))
    rules = config_lib.sharding_rules(config.sharding_rules)
    sharding.validate_rules(rules, mesh)
  except ValueError as e:
    raise ConfigError(f'config.mesh / config.sharding_rules: {e}') from None
  _check_batches(config, mesh, rules)
  _check_warmup(config)
  try:  # before the dataset: its first use may prepare it (TFDS writes its data_dir).
    schedule = optim.make_schedule(
      config.base_lr, config.total_steps, config.warmup_steps, config.decay_type
    )
    tx = optim.make_optimizer(config, schedule)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  info = _dataset_info(config)
  model = _model(config, info.num_classes)
  crop = config.pp.crop
  init = state_lib.init_fn(model, tx, (1, crop, crop, 3))
  abstract, shardings = state_lib.abstract_state_and_shardings(
    init, mesh, rules, config.min_shard_mib
  )
  resumes = _check_checkpoints(config, workdir, abstract)
  # Pre-trained params only seed a fresh run: a resumed one (e.g. after each preemption) does
  # not read the (maybe multi-GB) file again.
  pretrained = (
    None if resumes else _pretrained(config, abstract.params, getattr(model, 'exact_gelu', False))
  )
  _check_workdir(workdir)
  return Run(
    config=config,
    workdir=workdir,
    mesh=mesh,
    rules=rules,
    info=info,
    model=model,
    tx=tx,
    schedule=schedule,
    init=init,
    abstract_state=abstract,
    state_shardings=shardings,
    batch_sharding=sharding.batch_sharding(mesh, rules),
    pretrained=pretrained,
  )
