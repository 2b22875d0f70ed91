"""vit_jax: Vision Transformer, hybrids and MLP-Mixer in JAX/Flax.

Importing the package is cheap and never imports TensorFlow: `vit_jax.models`,
`vit_jax.checkpoint` and the training core run without it; only `vit_jax.data` imports
TensorFlow, lazily, when a pipeline is built.
"""

__version__ = '0.1.0'
