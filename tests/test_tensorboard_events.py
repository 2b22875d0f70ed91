"""TensorBoard event files: readable by TensorBoard, one file per writer, no TF or torch."""

import subprocess
import sys

from tensorboard.backend.event_processing import event_accumulator

from vit_jax.train import tensorboard_events


def test_scalars_read_back_and_writers_never_share_a_file(tmp_path):
  writers = [tensorboard_events.EventFileWriter(str(tmp_path)) for _ in range(2)]  # Same second.
  assert writers[0].path != writers[1].path
  for i, writer in enumerate(writers):
    writer.scalars(10, {'train/loss': 1.5 + i})
    writer.scalars(20, {'train/loss': 0.25, 'test/accuracy': 0.875})
    writer.close()
  assert len(list(tmp_path.iterdir())) == 2
  for i, writer in enumerate(writers):
    events = event_accumulator.EventAccumulator(str(writer.path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars('train/loss')] == [(10, 1.5 + i), (20, 0.25)]
    assert [(e.step, e.value) for e in events.Scalars('test/accuracy')] == [(20, 0.875)]


def test_writer_imports_neither_tensorflow_nor_torch(tmp_path):
  code = (
    'import sys\nfrom vit_jax.train import tensorboard_events\n'
    f'tensorboard_events.EventFileWriter({str(tmp_path)!r}).scalars(1, {{"x": 1.0}})\n'
    "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'torch'}))"
  )
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == '[]'
