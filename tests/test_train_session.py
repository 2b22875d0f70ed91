"""A run stepped from Python (vit_jax.train.session) computes exactly what the trainer does."""

import jax
import numpy as np
import optax

from helpers import load_config
from vit_jax import experiment
from vit_jax.run import orbax_io
from vit_jax.train import session as session_lib


def assert_same_params(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_session_steps_as_the_trainer(tmp_path, digits_data_dir):
  # A small model at 8px: the test is about what is computed, not how well.
  config = load_config(
    'default',
    data_dir=digits_data_dir,
    total_steps=12,
    warmup_steps=2,
    progress_every=1,
    eval_every=6,
    checkpoint_every=6,
    model__num_layers=1,
    pp__crop=8,
    batch=32,
  )
  workdir = str(tmp_path / 'trained')
  final = experiment.train(config, workdir)
  trained = orbax_io.load_params(workdir)

  # Fresh: the same initial state, batches and steps as the trainer, bit for bit.
  session = session_lib.Session.start(config, str(tmp_path / 'fresh'))
  assert session.step == 0
  metrics = session.train(12)
  assert session.step == 12 and len(metrics) == 12
  losses = experiment.read_metrics(workdir)['train/loss'][1]
  np.testing.assert_array_equal([m['loss'] for m in metrics], losses)
  assert set(metrics[0]) == {'loss', 'accuracy', 'learning_rate', 'grad_norm'}
  assert_same_params(session.state.params, trained)
  assert session.evaluate()['test'] == {
    k.split('/')[1]: v for k, v in final.items() if k.startswith('test/')
  }

  # Restored at step 6 (with the data position): 6 more steps end where the trainer ended.
  resumed = session_lib.Session.start(config, workdir, step=6)
  assert resumed.step == 6
  resumed.train(6)
  assert_same_params(resumed.state.params, trained)
  # Nothing was written: the workdir still ends at the trainer's step 12.
  assert orbax_io.find_checkpoint(workdir)[1] == 12


def test_session_state_follows_the_sharding_config(tmp_path, digits_data_dir):
  config = load_config(
    'default',
    data_dir=digits_data_dir,
    sharding_rules='fsdp',
    min_shard_mib=0.0,
    mesh__data=1,
    mesh__fsdp=-1,
  )
  session = session_lib.Session.start(config, str(tmp_path))
  kernel = session.state.params['Transformer']['encoderblock_0']['MlpBlock_3']['Dense_0']['kernel']
  assert kernel.shape == (64, 128) and tuple(kernel.sharding.spec) == ('fsdp',)
  assert kernel.addressable_shards[0].data.shape == (8, 128)
  mu = optax.tree_utils.tree_get(session.state.opt_state, 'mu')  # AdamW's first moment
  assert mu['Transformer']['encoderblock_0']['MlpBlock_3']['Dense_0']['kernel'].sharding == (
    kernel.sharding
  )
