"""A gs:// workdir: every write of the run's files goes through etils.epath (checked with a
fake gs:// backend that stores objects under a local folder; Orbax's arrays are written by
TensorStore's own gs:// driver and are not covered here)."""

import json

from etils.epath import backend
from etils.epath import gpath
import flax.linen as nn
from tensorboard.backend.event_processing import event_accumulator

from vit_jax.train import loop
from vit_jax.train import metrics as metrics_lib
from vit_jax.train import setup_run


class _FakeGcs:
  """etils' local backend with gs://BUCKET/... mapped onto ROOT/BUCKET/..."""

  def __init__(self, root):
    self.root = str(root)

  def _local(self, value):
    if isinstance(value, str) and value.startswith('gs://'):
      return self.root + '/' + value[len('gs://') :]
    return value

  def __getattr__(self, name):
    method = getattr(backend.os_backend, name)
    return lambda *args, **kwargs: method(*[self._local(a) for a in args], **kwargs)


def test_run_files_go_through_epath(tmp_path, monkeypatch):
  fake = _FakeGcs(tmp_path / 'store')
  monkeypatch.setattr(backend, 'tf_backend', fake)
  monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, 'gs', fake)
  monkeypatch.chdir(tmp_path)  # A plain open('gs://...') would create ./gs:/ here.
  workdir = 'gs://bucket/run'
  setup_run._check_workdir(workdir)
  writer = metrics_lib.MetricWriter(workdir, total_steps=3)
  for step in (1, 2, 3):
    writer.write_scalars(step, {'train/loss': 1.0 / step})
  writer.resume(2)  # As after a restart from step 2: step 3 is dropped...
  writer.write_scalars(3, {'train/loss': 0.25})  # ...and recorded again once.
  writer.close()
  loop.dump_final(workdir, {'step': 3})
  local = tmp_path / 'store' / 'bucket' / 'run'
  records = [json.loads(l) for l in (local / 'metrics.jsonl').read_text().splitlines()]
  assert [(r['step'], r['train/loss']) for r in records] == [(1, 1.0), (2, 0.5), (3, 0.25)]
  assert json.loads((local / 'final_metrics.json').read_text()) == {'step': 3}
  assert (local / 'checkpoints').is_dir()
  events = event_accumulator.EventAccumulator(str(local / 'tensorboard'))
  events.Reload()
  # TensorBoard files are not trimmed on resume: step 3 appears twice (readers take the last).
  assert len(events.Scalars('train/loss')) == 4
  assert not (tmp_path / 'gs:').exists()


def _fake_gcs(tmp_path, monkeypatch):
  fake = _FakeGcs(tmp_path / 'store')
  monkeypatch.setattr(backend, 'tf_backend', fake)
  monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, 'gs', fake)
  monkeypatch.chdir(tmp_path)  # A plain open('gs://...') would create ./gs:/ here.
  return tmp_path / 'store'


def test_profile_trace_lands_in_a_gs_workdir(tmp_path, monkeypatch):
  import jax

  from vit_jax.train import throughput

  store = _fake_gcs(tmp_path, monkeypatch)
  trace = throughput.StepTrace('gs://bucket/run/profile', num_steps=1)
  trace.start(0)
  x = jax.jit(lambda a: a @ a)(jax.numpy.ones((64, 64)))
  trace.stop(wait_for=x)
  traces = list((store / 'bucket' / 'run' / 'profile').rglob('*.xplane.pb'))
  assert len(traces) == 1 and traces[0].stat().st_size > 0, traces
  assert not (tmp_path / 'gs:').exists()


def test_analyze_reads_and_writes_gs(tmp_path, monkeypatch):
  """A checkpoint file and the output folder in a bucket (a run's config.json and labels.json
  are read through the same etils.epath calls, see vit_jax.run.workdir)."""
  import jax
  import numpy as np

  from vit_jax import analyze
  from vit_jax import models
  from vit_jax.run import workdir as workdir_lib
  from vit_jax.weights import released

  store = _fake_gcs(tmp_path, monkeypatch)
  model = models.get_model('testing', num_classes=3)
  params = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 32, 32, 3)))['params']
  released.save(
    'gs://bucket/tiny.npz', jax.tree.map(lambda x: np.ones(x.shape, x.dtype), nn.meta.unbox(params))
  )
  status = analyze.run(
    analyze.Options(
      checkpoint='gs://bucket/tiny.npz',
      model='testing',
      out='gs://bucket/analysis',
      what=('filters', 'posemb'),
    )
  )
  assert set(status) == {'filters', 'posemb'}
  out = store / 'bucket' / 'analysis'
  assert sorted(p.name for p in out.iterdir()) == [
    'filters.json',
    'filters.png',
    'posemb.json',
    'posemb.png',
  ]
  assert json.loads((out / 'filters.json').read_text())['checkpoint'] == 'gs://bucket/tiny.npz'
  # A run's files in a bucket: what analyze and predict read of a workdir.
  (store / 'bucket' / 'run').mkdir()
  (store / 'bucket' / 'run' / 'config.json').write_text('{"dataset": "sklearn_digits"}')
  assert workdir_lib.read_config('gs://bucket/run') == {'dataset': 'sklearn_digits'}
  assert not (tmp_path / 'gs:').exists()
