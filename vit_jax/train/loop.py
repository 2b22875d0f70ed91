"""The training loop: steps, periodic evaluation, logging, checkpoints, preemption, NaN stop.

    run = setup_run.build(config, workdir)   # validates; nothing compiled yet
    final_metrics = loop.train_and_evaluate(run)

A workdir that holds a checkpoint is resumed: params, optimizer state, step, RNG and the data
position, so that a run killed at any moment and restarted ends with the same parameters as
one that never stopped.
"""

import contextlib
import math
import time
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.run import orbax_io
from vit_jax.run import workdir as workdir_lib
from vit_jax.system import cpu_devices
from vit_jax.system import runtime
from vit_jax.system import sharding
from vit_jax.train import metrics as metrics_lib
from vit_jax.train import preemption as preemption_lib
from vit_jax.train import setup_run
from vit_jax.train import state as state_lib
from vit_jax.train import step as step_lib
from vit_jax.train import throughput

# Exit code of a preempted run (after its checkpoint); schedulers requeue on it (see
# vit_jax.launch's SLURM script). Only a finished run writes final_metrics.json.
PREEMPTED_EXIT_CODE = preemption_lib.EXIT_CODES['SIGTERM']


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or inf."""


def data_iterators(run: setup_run.Run, data_state: Optional[dict]):
  """The run's train iterator (from `data_state`'s position, or the start) and its eval
  iterators by name ('test', 'val'), as the loop reads them."""
  from vit_jax import data

  c = run.config
  # uint8 pixels: a quarter of the host's batching and host-to-device bytes of float32; the
  # steps map them to [-1, 1] on the devices (layers.model_input).
  # run.info: the source resolved once by setup_run (an image folder is not walked again).
  common = dict(
    crop=c.pp.crop,
    sharding=run.batch_sharding,
    prefetch=c.prefetch,
    image_dtype='uint8',
    skip_unreadable=c.skip_unreadable,
  )
  train_iter = data.train_iterator(
    run.info,
    c.train_split,
    global_batch=c.batch,
    seed=c.seed,
    area_range=(c.pp.area_min, 1.0),
    flip=c.pp.flip,
    randaugment=c.pp.randaugment,
    shuffle_buffer=c.shuffle_buffer,
    state=data_state,
    **common,
  )
  evals = {}
  for name, split in (('test', c.test_split), ('val', c.val_split)):
    if split:
      evals[name] = data.eval_iterator(
        run.info, split, global_batch=c.batch_eval, resize_mode=c.pp.resize_mode, **common
      )
  return train_iter, evals


def _train_step_fn(run: setup_run.Run, model):
  c = run.config
  return step_lib.make_train_step(
    model,
    run.tx,
    run.schedule,
    num_classes=run.info.num_classes,
    accum_steps=c.accum_steps,
    label_smoothing=c.label_smoothing,
    mixup_alpha=c.mixup,
    param_shardings=run.state_shardings.params,
  )


def jit_steps(run: setup_run.Run):
  """The run's jitted (train_step, eval_step), with its shardings and donation; the eval step
  already waits for its result on several CPU devices (cpu_devices.one_at_a_time)."""
  train_step = _train_step_fn(run, run.model)
  replicated = jax.sharding.NamedSharding(run.mesh, jax.sharding.PartitionSpec())
  train_step = jax.jit(
    train_step,
    in_shardings=(run.state_shardings, run.batch_sharding),
    out_shardings=(run.state_shardings, replicated),
    donate_argnums=0,
  )
  eval_step = jax.jit(
    step_lib.make_eval_step(run.model, run.info.num_classes),
    in_shardings=(run.state_shardings.params, run.batch_sharding),
    out_shardings=replicated,
  )
  return train_step, cpu_devices.one_at_a_time(eval_step)


def _compile_train_step(run: setup_run.Run, train_step, state, batch, writer, step: int):
  """Compiles the step ahead of time for these inputs; logs compile time and FLOPs once.

  Returns (compiled step, FLOPs per step per device or None, peak FLOP/s per device or None).
  """
  c = run.config
  begin = time.perf_counter()
  compiled = train_step.lower(state, batch).compile()
  seconds = time.perf_counter() - begin
  runtime.check_step_memory(
    compiled,
    f'The train step of {c.model_name} at batch {c.batch}',
    'lower config.batch, raise config.accum_steps, or set config.model.remat_policy '
    "(e.g. 'nothing_saveable', with config.model.scan=True).",
  )
  uncounted = 0.0
  if getattr(run.model, 'scan', False):  # XLA counts one layer of a scan over layers.
    uncounted = throughput.uncounted_layer_flops(
      lambda n: _unrolled_lowering(run, batch, n), run.model.num_layers, run.mesh.size
    )
  flops = throughput.step_flops_per_device(compiled, c.accum_steps, uncounted)
  kind = jax.devices()[0].device_kind
  peak = throughput.peak_flops_per_device(kind, c.peak_flops_per_device)
  writer.write_scalars(
    step,
    {'train/compile_seconds': seconds, **({'train/step_flops_per_device': flops} if flops else {})},
  )
  message = f'Compiled the train step in {seconds:.1f}s'
  if flops:
    message += f'; XLA counts {flops:.3g} FLOPs per step per device'
    if uncounted:
      message += f' (scanned layers: all {run.model.num_layers} counted, XLA counts one)'
    message += (
      f'; MFU against a peak of {peak:.3g} FLOP/s per {kind!r} device.'
      if peak
      else f'; no MFU: peak FLOP/s of {kind!r} unknown (set config.peak_flops_per_device).'
    )
  writer.log(message)
  return compiled, flops, peak


def _unrolled_lowering(run: setup_run.Run, batch, num_layers: int):
  """The train step of the model unrolled to `num_layers` layers, lowered but not compiled."""
  model = run.model.clone(scan=False, num_layers=num_layers)
  init = state_lib.init_fn(model, run.tx, (1, *batch['image'].shape[1:]))
  state = jax.eval_shape(lambda r: nn.meta.unbox(init(r)), jax.random.key(0))
  batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
  return jax.jit(_train_step_fn(run, model)).lower(state, batch)


def evaluate(eval_step, params, iterator) -> dict[str, float]:
  """top-1 / top-5 accuracy and mean loss over every example of the split (padding masked)."""
  totals = None
  for batch in iterator:
    sums = eval_step(params, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = float(totals['count'])
  return {
    'accuracy': float(totals['correct_top1']) / count,
    'accuracy_top5': float(totals['correct_top5']) / count,
    'loss': float(totals['loss']) / count,
    'examples': int(count),
  }


def _initial_state(run: setup_run.Run, ckpt: orbax_io.CheckpointIO, writer):
  """(state, data_state): from the latest intact checkpoint (or config.restore_step), else
  fresh (+ pre-trained params). Metrics recorded after the restored step are dropped."""
  if ckpt.latest_step() is not None or run.config.restore_step is not None:
    state, data_state, step = ckpt.restore_intact(
      run.abstract_state, writer.log, step=run.config.restore_step
    )
    writer.resume(step)
    writer.log(f'Resumed from {ckpt.directory} at step {step}.')
    return state, data_state
  rng = jax.random.key(run.config.seed)
  state = state_lib.create_sharded(run.init, rng, run.state_shardings)
  if run.pretrained is not None:
    shardings = run.state_shardings.params
    loaded = jax.device_put(run.pretrained, {k: shardings[k] for k in run.pretrained})
    state = state.replace(params={**state.params, **loaded})
    run.pretrained = None  # On the devices now; the host copy (maybe GBs) is not kept.
    writer.log(f'Initialised from {run.config.pretrained_path} (new head).')
  return state, None


def _checkpoint_note(
  ckpt: orbax_io.CheckpointIO, step: Optional[int], loss: Optional[float]
) -> str:
  """Where a stopped run can resume from, for the NaN message."""
  if step is None:
    return 'No checkpoint was saved yet (a rerun starts from scratch).'
  shown = f'training loss {loss:.4g}' if loss is not None else 'training loss not recorded'
  return (
    f'The last checkpoint is step {step} ({shown}) in {ckpt.directory}; if its loss '
    'had already diverged, resume an earlier one with --config.restore_step=N.'
  )


def _save_config(run: setup_run.Run) -> None:
  """config.json, and labels.json: class names and eval preprocessing for vit_jax.predict."""
  if jax.process_index() == 0:
    from vit_jax.data import preprocess  # no TF import

    c = run.config
    workdir_lib.write_config(run.workdir, c)
    workdir_lib.write_labels(
      run.workdir,
      dataset=run.info.name,
      class_names=run.info.class_names,
      num_classes=run.info.num_classes,
      crop=c.pp.crop,
      resize_mode=c.pp.resize_mode,
      resize_small=(
        preprocess.default_resize_small(c.pp.crop) if c.pp.resize_mode == 'resize_crop' else None
      ),
    )


def train_and_evaluate(run: setup_run.Run) -> dict[str, Any]:
  """Trains to config.total_steps (or until preempted); returns the last metrics.

  Raises:
    workdir_lib.WorkdirInUseError: another process trains in the workdir (nothing written).
  """
  with workdir_lib.locked(run.workdir) if jax.process_index() == 0 else contextlib.nullcontext():
    return _train_and_evaluate(run)


def _train_and_evaluate(run: setup_run.Run) -> dict[str, Any]:
  c = run.config
  writer = metrics_lib.MetricWriter(
    run.workdir, total_steps=c.total_steps, is_main=jax.process_index() == 0
  )
  ckpt = orbax_io.CheckpointIO(run.workdir, keep=c.keep_checkpoints)
  preemption = preemption_lib.Preemption()
  trace = throughput.StepTrace(
    workdir_lib.path(run.workdir, workdir_lib.PROFILE),
    c.profile_steps,
    enabled=jax.process_index() == 0,
  )
  _save_config(run)
  final: dict[str, Any] = {}
  try:
    with sharding.activate(run.mesh, run.rules):
      state, data_state = _initial_state(run, ckpt, writer)
      train_iter, evals = data_iterators(run, data_state)
      train_step, eval_step = jit_steps(run)
      step = int(jax.device_get(state.step))
      pending: list[tuple[int, Any]] = []  # (step, metrics) not yet fetched from devices.
      last_saved = step if ckpt.latest_step() is not None else None
      last_loss = ckpt.train_loss(step) if last_saved is not None else None
      saved_loss = last_loss
      # Speed counts training steps only: from the end of this run's first step (compilation,
      # warm-up) on, with evals and checkpoints paused (see vit_jax.train.throughput).
      timer = throughput.TrainTimer()
      first_step, flops, peak = step + 1, None, None

      def flush() -> Optional[dict[str, float]]:
        """Fetches pending metrics; stops the run at the first non-finite loss."""
        nonlocal last_loss
        if not pending:
          return None
        fetched = jax.device_get([m for _, m in pending])
        for (s, _), m in zip(pending, fetched):
          if not math.isfinite(float(m['loss'])):
            raise NonFiniteLossError(
              f'Training loss became {float(m["loss"])} at step {s}; stopped. '
              f'{_checkpoint_note(ckpt, last_saved, saved_loss)} Lower config.base_lr, '
              'raise config.warmup_steps or set config.grad_norm_clip.'
            )
        pending.clear()
        last_loss = float(fetched[-1]['loss'])
        return {k: float(v) for k, v in fetched[-1].items()}

      def save():
        nonlocal last_saved, saved_loss
        with timer.paused('checkpoint', wait_for=state):
          flush()  # never checkpoint a state whose loss already went NaN.
          ckpt.save(state, train_iter.get_state(), train_loss=last_loss)
        last_saved, saved_loss = step, last_loss

      def run_evals():
        with timer.paused('eval', wait_for=state):
          for name, iterator in evals.items():
            result = evaluate(eval_step, state.params, iterator)
            writer.write_eval(step, name, result)
            final.update({f'{name}/{k}': v for k, v in result.items()})

      def report(values):
        lap = timer.lap(step)
        speed, eta = {}, None
        if lap:
          speed = throughput.speed(
            lap,
            batch=c.batch,
            num_devices=jax.device_count(),
            flops_per_device=flops,
            peak_per_device=peak,
          )
          upcoming = {
            'eval': throughput.events_left(step, c.eval_every, c.total_steps),
            'checkpoint': throughput.events_left(step, c.checkpoint_every, c.total_steps),
          }
          eta = timer.eta(c.total_steps - step, lap.seconds_per_step, upcoming)
        writer.write_train(step, values, throughput=speed, eta_seconds=eta)

      if step >= c.total_steps:  # a finished run started again: its results as recorded.
        recorded = workdir_lib.finished(run.workdir, c.total_steps)
        if recorded is None:  # e.g. killed while writing final_metrics.json: evaluate again.
          run_evals()
        final.update(recorded or {})
      while step < c.total_steps:
        batch = next(train_iter)
        if step + 1 == first_step:
          train_step, flops, peak = _compile_train_step(run, train_step, state, batch, writer, step)
          train_step = cpu_devices.one_at_a_time(train_step)
        state, step_metrics = train_step(state, batch)
        step += 1
        pending.append((step, step_metrics))
        if step == first_step:
          jax.block_until_ready(state)  # a sync point: the clock starts with the device idle.
          timer.start(step)
          trace.start(step)
        elif trace.should_stop(step):
          with timer.paused('profile', wait_for=state):
            trace.stop(wait_for=state)
        last = step == c.total_steps
        if step % c.progress_every == 0 or last:
          values = flush()
          report(values)
          final.update({f'train/{k}': v for k, v in values.items()})
        if step % c.eval_every == 0 or last:
          run_evals()
        if step % c.checkpoint_every == 0 or last:
          save()
        if preemption.reached(step):
          save()
          writer.log(
            f'{preemption_lib.CAUSES[preemption.requested]}: saved step {step} to '
            f'{ckpt.directory}; rerun the same command to resume.'
          )
          final['preempted_at'], final['stopped_by'] = step, preemption.requested
          break
      trace.stop(wait_for=state)  # a run that ended inside the traced steps.
      final['step'] = step
  finally:
    trace.stop()
    ckpt.close()
    writer.close()
    preemption.restore()
  return final


def dump_final(workdir: str, final: dict[str, Any]) -> None:
  """final_metrics.json of a finished run (process 0 writes it)."""
  if jax.process_index() == 0:
    workdir_lib.write_final(workdir, final)
