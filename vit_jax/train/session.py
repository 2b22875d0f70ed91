"""A run stepped from Python: the trainer's state, jitted steps and data, held in memory.

    session = Session.start(config, workdir)   # validated as the trainer does
    metrics = session.train(10)                # 10 updates: [{'loss': ..., 'accuracy': ...}, ...]
    session.evaluate()                         # {'test': {'accuracy': ..., 'loss': ...}}
    session.state                              # the TrainState, sharded as the config says

For looking at a run between steps (notebooks, experiments): the steps are the loop's own
(same jit, shardings, donation and activation constraints), the batches the loop's iterators,
and `start` restores the workdir's newest checkpoint when it holds one. Nothing is written:
checkpoints, metrics files and cadence are `vit_jax.experiment.train`'s (the loop's) job.
"""

from typing import Any, Callable, Optional

import jax

from vit_jax.run import orbax_io
from vit_jax.system import cpu_devices
from vit_jax.system import sharding
from vit_jax.train import loop
from vit_jax.train import setup_run
from vit_jax.train import state as state_lib


class Session:
  """A run's state on its devices, with the loop's jitted steps and data iterators."""

  def __init__(
    self,
    run: setup_run.Run,
    state: state_lib.TrainState,
    data_state: Optional[dict[str, Any]] = None,
  ):
    """Use `Session.start`; `state` must be laid out as `run.state_shardings`."""
    self.run = run
    self.state = state
    self._data_state = data_state
    self._iterators = None
    # The loop's own steps, so that a session computes exactly what training computes.
    train_step, self._eval_step = loop.jit_steps(run)
    # As the loop: on several CPU devices, one step at a time (see cpu_devices.one_at_a_time).
    self._train_step = cpu_devices.one_at_a_time(train_step)

  @classmethod
  def start(
    cls,
    config,
    workdir: str,
    *,
    step: Optional[int] = None,
    log: Optional[Callable[[str], None]] = None,
  ) -> 'Session':
    """Validates `config` (setup_run.build), then restores the newest intact checkpoint of
    `workdir` (or `step`) with its data position, or creates the state fresh (+
    config.pretrained_path).

    The restore is the trainer's checked one: a damaged newest checkpoint is reported (one
    line through `log`, default stderr) and the previous one restored; nothing in the workdir
    is moved or written.

    Raises:
      setup_run.ConfigError: (one line) a config that cannot work, or a checkpoint that does
        not fit it.
      orbax_io.CheckpointError: `step` is not a complete checkpoint, or none is intact.
    """
    setup_run.prepare_host(config)  # as the command line, when JAX has not started yet.
    run = setup_run.build(config, workdir)
    ckpt = orbax_io.CheckpointIO(workdir, keep=config.keep_checkpoints)
    try:
      if step is not None or ckpt.latest_step() is not None:
        state, data_state, _ = ckpt.restore_intact(
          run.abstract_state, log or orbax_io.warn_on_stderr, step=step, move_aside=False
        )
        return cls(run, state, data_state)
    finally:
      ckpt.close()
    with sharding.activate(run.mesh, run.rules):
      state = state_lib.create_sharded(run.init, jax.random.key(config.seed), run.state_shardings)
    if run.pretrained is not None:  # as the loop starts a fine-tuning run: a fresh head.
      shardings = run.state_shardings.params
      loaded = jax.device_put(run.pretrained, {k: shardings[k] for k in run.pretrained})
      state = state.replace(params={**state.params, **loaded})
      run.pretrained = None
    return cls(run, state)

  @property
  def step(self) -> int:
    """Updates applied to the state so far."""
    return int(jax.device_get(self.state.step))

  def _data(self):
    if self._iterators is None:  # built on first use: evaluating needs no train pipeline.
      self._iterators = loop.data_iterators(self.run, self._data_state)
    return self._iterators

  def train(self, num_steps: int) -> list[dict[str, float]]:
    """Applies `num_steps` updates on the next training batches.

    Returns:
      One dict per step: 'loss', 'accuracy' (of the batch, before the update),
      'learning_rate', 'grad_norm' (Python floats, fetched once at the end).
    """
    train_iter, _ = self._data()
    metrics = []
    with sharding.activate(self.run.mesh, self.run.rules):
      for _ in range(num_steps):
        self.state, values = self._train_step(self.state, next(train_iter))
        metrics.append(values)
    return [{k: float(v) for k, v in m.items()} for m in jax.device_get(metrics)]

  def evaluate(self) -> dict[str, dict[str, float]]:
    """Each eval split of the config ('test', and 'val' when config.val_split is set) ->
    {'accuracy', 'accuracy_top5', 'loss', 'examples'} over every example once."""
    _, evals = self._data()
    with sharding.activate(self.run.mesh, self.run.rules):
      return {
        name: loop.evaluate(self._eval_step, self.state.params, iterator)
        for name, iterator in evals.items()
      }
