"""vit_jax: Vision Transformer, hybrids and MLP-Mixer in JAX/Flax.

Importing the package is cheap and never imports TensorFlow: `vit_jax.models`,
`vit_jax.weights` and the training core run without it; only `vit_jax.data` imports
TensorFlow, lazily, when a pipeline is built.

With VIT_JAX_RETAIN_HOST_MEMORY=1, when JAX computes on the host CPU, importing the package
also tells glibc to keep freed memory for reuse (see `vit_jax.system.host_memory`: big-model CPU
train steps ~1.3x faster, but tf.data-fed small jobs slower, hence opt-in).
"""

from vit_jax.system import host_memory as _host_memory

_host_memory.retain_freed_memory()

__version__ = '0.1.0'
