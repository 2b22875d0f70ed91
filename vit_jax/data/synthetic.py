"""Writes image folders for tests, benchmarks and demos: smooth random images, MNIST IDX files.

Nothing here is used by the pipeline itself; it produces inputs for it without a network.
"""

import gzip
import os

import numpy as np
from PIL import Image


def smooth_images(
  n: int, height: int, width: int, *, seed: int = 0, noise: float = 0.0, channels: int = 3
) -> np.ndarray:
  """Random smooth images (bicubic-upsampled coarse noise, plus optional pixel noise).

  Returns:
    uint8 [n, height, width, channels] (channels dimension dropped when channels == 1).
  """
  rng = np.random.default_rng(seed)
  out = np.empty((n, height, width, channels), np.uint8)
  coarse_hw = (max(2, height // 32), max(2, width // 32))
  for i in range(n):
    for c in range(channels):
      coarse = rng.uniform(0, 255, coarse_hw).astype(np.float32)
      plane = np.asarray(Image.fromarray(coarse, mode='F').resize((width, height), Image.BICUBIC))
      if noise:
        plane = plane + rng.normal(0.0, noise, plane.shape)
      out[i, :, :, c] = np.clip(plane, 0, 255).astype(np.uint8)
  return out[..., 0] if channels == 1 else out


def write_image_folder(
  root: str,
  split: str,
  images,
  labels,
  class_names,
  *,
  ext: str = 'png',
  quality: int = 90,
  first_index: int = 0,
) -> list[str]:
  """Writes root/split/<class_names[label]>/<index>.<ext> for each image; returns the paths.

  Args:
    root: folder to write into (created if needed).
    split: split folder name, e.g. 'train'.
    images: uint8 [N, H, W] or [N, H, W, C] (C in 1, 3, 4).
    labels: int [N], indices into class_names.
    class_names: names of the class folders.
    ext: 'png', 'jpg', 'jpeg', 'bmp' or 'gif'.
    quality: JPEG quality.
    first_index: file name index of the first image (to add images in several calls).
  """
  paths = []
  for i, (image, label) in enumerate(zip(images, labels)):
    folder = os.path.join(root, split, class_names[int(label)])
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f'{first_index + i:06d}.{ext}')
    image = np.asarray(image)
    pil = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image)
    if ext in ('jpg', 'jpeg'):
      pil.save(path, format='JPEG', quality=quality)
    else:
      pil.save(path)
    paths.append(path)
  return paths


def read_mnist_idx(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads gzipped MNIST IDX files: uint8 images [N, 28, 28] and uint8 labels [N]."""
  with gzip.open(images_path, 'rb') as f:
    raw = f.read()
  if int.from_bytes(raw[:4], 'big') != 2051:
    raise ValueError(
      f'{images_path} is not an IDX image file (magic 2051); pass '
      't10k-images-idx3-ubyte.gz or train-images-idx3-ubyte.gz.'
    )
  n, h, w = (int.from_bytes(raw[i : i + 4], 'big') for i in (4, 8, 12))
  images = np.frombuffer(raw, np.uint8, offset=16).reshape(n, h, w)
  with gzip.open(labels_path, 'rb') as f:
    raw = f.read()
  if int.from_bytes(raw[:4], 'big') != 2049:
    raise ValueError(f'{labels_path} is not an IDX label file (magic 2049).')
  labels = np.frombuffer(raw, np.uint8, offset=8)
  if len(labels) != n:
    raise ValueError(f'{labels_path} has {len(labels)} labels for {n} images in {images_path}.')
  return images, labels
