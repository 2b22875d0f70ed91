"""Cost of resuming the train stream of a TFDS split streamed from its files (a benchmark).

Prepares a synthetic TFDS dataset (default 50,000 records of 64x64 PNG noise, 16 TFRecord
files, in a temporary data_dir; nothing is downloaded), then times, with the split streamed
from its files (as for any split over vit_jax.data.tfds_source.IN_MEMORY_MAX_BYTES):
  - fresh: `train_iterator` created and its first batch taken, at position 0;
  - resume at 50% / 90% of an epoch: the same with a saved state at that position,
and, for comparison, what the pipeline did before (one shuffle buffer over the stored order,
then `skip` of the epoch's prefix): time to the first record at 0% and at 90%.
Runs alternate; each row gives the median of the repeats and its ratio to 'fresh'.
Target: the resume cost does not depend on the position (90% ~ 0%).

    python benchmarks/tfds_resume.py [--records 50000] [--shuffle_buffer 10000] [--repeats 3]
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time

import numpy as np

from vit_jax import data
from vit_jax.data import synthetic
from vit_jax.data import tf_setup
from vit_jax.data import tfds_source

tfds = tf_setup.tfds()
tf = tf_setup.tf()

_RECORDS = {'n': 50_000}


class VitJaxResumeBench(tfds.core.GeneratorBasedBuilder):
  """Synthetic 64x64 RGB PNGs with 10 labels (for this benchmark only)."""

  VERSION = tfds.core.Version('1.0.0')
  code_path = __import__('pathlib').Path(__file__)

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          'image': tfds.features.Image(shape=(64, 64, 3), encoding_format='png'),
          'label': tfds.features.ClassLabel(num_classes=10),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(_RECORDS['n'])}

  def _generate_examples(self, n):
    tiles = synthetic.smooth_images(64, 64, 64, seed=0, noise=20)
    rng = np.random.default_rng(0)
    for i in range(n):  # Distinct images: a tile with a random shift and channel order.
      image = np.roll(tiles[i % 64], int(rng.integers(64)), axis=1)[..., rng.permutation(3)]
      yield i, {'image': image, 'label': i % 10}


def prepare(data_dir: str, records: int, shards: int):
  _RECORDS['n'] = records
  builder = VitJaxResumeBench(data_dir=data_dir)
  if not builder.is_prepared():
    t = time.perf_counter()
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=shards))
    print(f'Prepared {records} records in {time.perf_counter() - t:.0f} s.')
  return builder


def first_batch_seconds(args, fraction: float) -> float:
  kwargs = dict(
    dataset='vit_jax_resume_bench',
    split='train',
    global_batch=args.batch,
    crop=32,
    data_dir=args.data_dir,
    shuffle_buffer=args.shuffle_buffer,
    seed=0,
    process_index=0,
    process_count=1,
    prefetch=0,
  )
  state = None
  if fraction:
    state = data.train_iterator(**kwargs).get_state()
    position = int(fraction * args.records)
    state.update(positions={'0': position}, batches=position // args.batch)
  t = time.perf_counter()
  next(data.train_iterator(**kwargs, state=state))
  return time.perf_counter() - t


def old_first_record_seconds(builder, args, fraction: float) -> float:
  """The former stream: a shuffle buffer over the stored order, skipping the prefix."""
  t = time.perf_counter()
  ds = builder.as_dataset(
    split='train', shuffle_files=False, decoders={'image': tfds.decode.SkipDecoding()}
  )
  ds = ds.shuffle(args.shuffle_buffer, seed=1).skip(int(fraction * args.records))
  next(iter(ds))
  return time.perf_counter() - t


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--records', type=int, default=50_000)
  parser.add_argument('--shards', type=int, default=16)
  parser.add_argument('--shuffle_buffer', type=int, default=10_000)
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--data_dir', default=None, help='Reuse/keep the dataset here.')
  args = parser.parse_args()
  keep = args.data_dir is not None
  args.data_dir = args.data_dir or tempfile.mkdtemp(prefix='vit_jax_resume_')
  try:
    builder = prepare(args.data_dir, args.records, args.shards)
    size = builder.info.splits['train'].num_bytes
    print(
      f'{args.records} records, {size / 2**20:.0f} MiB in '
      f'{len(builder.info.splits["train"].shard_lengths)} files; shuffle windows of '
      f'{args.shuffle_buffer}; batch {args.batch}; {os.cpu_count()} CPUs.'
    )
    tfds_source.IN_MEMORY_MAX_BYTES = 0  # Stream from the files, as a large split would.
    rows = {
      'fresh (0%)': lambda: first_batch_seconds(args, 0.0),
      'resume at 50%': lambda: first_batch_seconds(args, 0.5),
      'resume at 90%': lambda: first_batch_seconds(args, 0.9),
      'before: shuffle + skip, 0%': lambda: old_first_record_seconds(builder, args, 0.0),
      'before: shuffle + skip, 90%': lambda: old_first_record_seconds(builder, args, 0.9),
    }
    times = {name: [] for name in rows}
    for _ in range(args.repeats):
      for name, fn in rows.items():
        times[name].append(fn())
    base = statistics.median(times['fresh (0%)'])
    old_base = statistics.median(times['before: shuffle + skip, 0%'])
    print(f'{"":30s} {"median s":>9s} {"x fresh":>8s}   runs')
    for name, ts in times.items():
      ref = old_base if name.startswith('before') else base
      med = statistics.median(ts)
      print(f'{name:30s} {med:9.2f} {med / ref:8.2f}   ' + ' '.join(f'{t:.2f}' for t in ts))
  finally:
    if not keep:
      shutil.rmtree(args.data_dir, ignore_errors=True)


if __name__ == '__main__':
  main()
