"""Installs vit_jax: Vision Transformer models, checkpoints, input pipelines and training in JAX."""

import setuptools

# Lower bounds are the versions this project is tested with; older releases lack APIs we use
# (jax.make_array_from_process_local_data, flax logical partitioning, orbax CheckpointManager).
INSTALL_REQUIRES = [
  'absl-py>=2.1',
  'chex>=0.1.90',
  'etils[epath]>=1.7',
  'flax>=0.12',
  # TFDS's download_and_prepare imports it, but declares it only for Python < 3.9.
  'importlib_resources>=5',
  'jax>=0.9',
  'matplotlib>=3.8',  # figures of `python -m vit_jax.analyze` (imported only there).
  'ml-collections>=1.0',
  # JAX's and TensorFlow's extra dtypes. 0.7.0 registers its NumPy ufunc loops in ~1.0 s at
  # every import (0.6.0: 0.1 s; numpy 2.3 and 2.4 alike), ~1.5 s of every command's start
  # (measured on a 2-core Intel Xeon).
  'ml_dtypes>=0.5,!=0.7.0',
  'numpy>=1.26',
  'optax>=0.2.5',
  'orbax-checkpoint>=0.11.28',
  'pillow>=10',
  # .safetensors in and out (timm / Hugging Face checkpoints): small, no PyTorch; 0.4.1 reads
  # bfloat16 into NumPy.
  'safetensors>=0.4.1',
  'scikit-learn>=1.3',  # ships the offline `digits` dataset used by the default job.
  'tensorboard>=2.15',  # event files (written without TensorFlow).
  'tensorflow-cpu>=2.16',  # tf.data only; TensorFlow never sees the accelerators.
  'tensorflow-datasets>=4.9.6',
  'tqdm>=4.66',  # progress bars of the long analyses (Hessian spectra, loss landscape).
]

# `benchmarks/vs_timm.py` compares against timm (PyTorch), which vit_jax itself never imports.
BENCH_REQUIRES = ['timm>=1.0', 'torch>=2.4']

TEST_REQUIRES = [
  # The notebooks in colabs/ run headless in the tests (tests/test_colabs.py).
  'ipykernel>=6.29',
  'nbclient>=0.10',
  'nbformat>=5.10',
  'pytest>=8',
  'pytest-xdist>=3.5',
  # Lint and format (ruff.toml); pinned: another release may format differently.
  'ruff==0.17.6',
  'scipy>=1.11',  # reference implementation of the original's position-embedding zoom.
  # Parity of exported / imported checkpoints with the real thing (tests/test_convert_*.py).
  'timm>=1.0.16',  # timm.create_model('local-dir:...').
  'torch>=2.4',
  'transformers>=5.0',
]

setuptools.setup(
  name='vit_jax',
  version='0.1.0',
  description='Vision Transformer (ViT), hybrids and MLP-Mixer in JAX/Flax: models, '
  'released-checkpoint compatibility, tf.data input and sharded training.',
  long_description=open('README.md', encoding='utf-8').read(),
  long_description_content_type='text/markdown',
  python_requires='>=3.10',
  packages=setuptools.find_packages(include=['vit_jax', 'vit_jax.*']),
  install_requires=INSTALL_REQUIRES,
  # No `convert` extra: .safetensors needs only the core; .pth / .bin need torch (`bench`).
  extras_require={'test': TEST_REQUIRES, 'bench': BENCH_REQUIRES},
  license='Apache 2.0',
  classifiers=[
    'Programming Language :: Python :: 3',
    'Topic :: Scientific/Engineering :: Artificial Intelligence',
  ],
)
