"""Input pipeline throughput: raw JPEG decoding vs the full train pipeline (a benchmark).

Writes a folder of ImageNet-like JPEGs (default 2,500 images of 500x375, ~95 KB each, close
to ImageNet's ~110 KB mean) into a temporary directory, then measures images/s of
  (a) raw decode: tf.data, parallel map of read_file + tf.io.decode_jpeg (whole image), the
      same tf.data options and parallelism (AUTOTUNE) as the pipeline;
  (b) the full train pipeline of vit_jax.data.train_iterator at 224x224: per-epoch shuffle,
      inception crop (decoding only the crop window), flip, resize, value range, batching,
      delivered as numpy batches to Python;
and prints a table with their ratio. Target: (b) >= 80% of (a). Rates are given per second
of wall time and per second of CPU time used by the process; the latter hardly moves when
other programs share the machine. Decoding costs grow with file size (detail) while the
pipeline's fixed costs (resize, batching) do not, so smaller, smoother files (--noise 6
gives ~50 KB) lower the ratio.

    python benchmarks/input_pipeline.py [--num_images 2500] [--batch 128] [--crop 224]
"""

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from vit_jax import data
from vit_jax.data import pipeline
from vit_jax.data import synthetic
from vit_jax.data import tf_setup


def write_jpegs(root: str, num_images: int, noise: float, height: int = 375,
                width: int = 500) -> None:
  """root/train/<10 classes>/*.jpg: smooth random images plus pixel noise, quality 90."""
  chunk = 100
  for start in range(0, num_images, chunk):
    n = min(chunk, num_images - start)
    images = synthetic.smooth_images(n, height, width, seed=start, noise=noise)
    labels = np.arange(start, start + n) % 10
    synthetic.write_image_folder(root, 'train', images, labels,
                                 [f'class{c}' for c in range(10)], ext='jpg', first_index=start)


def images_per_second(batches, batch_size: int, warmup_batches: int, timed_batches: int):
  """(images per wall-clock second, images per CPU second of this process)."""
  for _ in range(warmup_batches):
    next(batches)
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(timed_batches):
    next(batches)
  images = timed_batches * batch_size
  return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)


def raw_decode_batches(paths, batch_size: int):
  tf = tf_setup.tf()
  ds = tf.data.Dataset.from_tensor_slices(paths).repeat()
  ds = ds.map(lambda p: tf.shape(tf.io.decode_jpeg(tf.io.read_file(p), channels=3)),
              num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(pipeline.options())
  return ds.as_numpy_iterator()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--num_images', type=int, default=2500)
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--crop', type=int, default=224)
  parser.add_argument('--noise', type=float, default=18.0,
                      help='Pixel noise of the generated images (sets the file size).')
  parser.add_argument('--repeats', type=int, default=3, help='Alternating runs of each.')
  parser.add_argument('--dir', default=None, help='Reuse/keep the JPEG folder here.')
  args = parser.parse_args()

  root = args.dir or tempfile.mkdtemp(prefix='vit_jax_bench_')
  try:
    if not os.path.isdir(os.path.join(root, 'train')):
      t = time.perf_counter()
      write_jpegs(root, args.num_images, args.noise)
      print(f'Wrote {args.num_images} JPEGs of 500x375 to {root} in '
            f'{time.perf_counter() - t:.0f} s.')
    info = data.get_dataset_info(root)
    part = info.source.part('train', 0, 1)
    size_kb = np.mean([os.path.getsize(p) for p in part.paths]) / 1024
    print(f'{info.split_sizes["train"]} images, mean file size {size_kb:.0f} KB, '
          f'{os.cpu_count()} CPU cores.')
    epoch_batches = max(1, info.split_sizes['train'] // args.batch)
    timed, warmup = 2 * epoch_batches, 3
    raw, full = [], []
    for _ in range(args.repeats):
      raw.append(images_per_second(raw_decode_batches(part.paths, args.batch), args.batch,
                                   warmup, timed))
      it = data.train_iterator(root, 'train', global_batch=args.batch, crop=args.crop,
                               process_index=0, process_count=1)
      full.append(images_per_second(it, args.batch, warmup, timed))
      del it
    print()
    print(f'| best of {args.repeats} runs, {timed * args.batch} images each | images/s (wall) '
          '| images per CPU-second |')
    print('| --- | ---: | ---: |')
    rows = (('(a) raw JPEG decode (read + decode_jpeg, whole image)', raw),
            (f'(b) train pipeline at {args.crop}x{args.crop} (shuffle, inception crop, flip, '
             f'resize, [-1, 1], batch {args.batch})', full))
    for name, runs in rows:
      print(f'| {name} | {max(r[0] for r in runs):.0f} | {max(r[1] for r in runs):.0f} |')
    ratios = [max(f[k] for f in full) / max(r[k] for r in raw) for k in (0, 1)]
    print(f'| ratio (b) / (a) | {ratios[0]:.0%} | {ratios[1]:.0%} |')
    print(f'All runs (wall, cpu): raw {[tuple(round(x) for x in r) for r in raw]}, '
          f'pipeline {[tuple(round(x) for x in f) for f in full]}.')
  finally:
    if not args.dir:
      shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
  main()
