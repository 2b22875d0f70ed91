"""A gs:// workdir: every write of the run's files goes through etils.epath (checked with a
fake gs:// backend that stores objects under a local folder; Orbax's arrays are written by
TensorStore's own gs:// driver and are not covered here)."""

import json

from etils.epath import backend
from etils.epath import gpath
from tensorboard.backend.event_processing import event_accumulator

from vit_jax.train import metrics as metrics_lib
from vit_jax.train import loop
from vit_jax.train import setup_run


class _FakeGcs:
  """etils' local backend with gs://BUCKET/... mapped onto ROOT/BUCKET/..."""

  def __init__(self, root):
    self.root = str(root)

  def _local(self, value):
    if isinstance(value, str) and value.startswith('gs://'):
      return self.root + '/' + value[len('gs://'):]
    return value

  def __getattr__(self, name):
    method = getattr(backend.os_backend, name)
    return lambda *args, **kwargs: method(*[self._local(a) for a in args], **kwargs)


def test_run_files_go_through_epath(tmp_path, monkeypatch):
  fake = _FakeGcs(tmp_path / 'store')
  monkeypatch.setattr(backend, 'tf_backend', fake)
  monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, 'gs', fake)  # pylint: disable=protected-access
  monkeypatch.chdir(tmp_path)  # A plain open('gs://...') would create ./gs:/ here.
  workdir = 'gs://bucket/run'
  setup_run._check_workdir(workdir)  # pylint: disable=protected-access
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
