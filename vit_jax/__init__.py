"""vit_jax: Vision Transformer, hybrids and MLP-Mixer in JAX/Flax.

Importing the package is cheap and never imports TensorFlow: `vit_jax.models`,
`vit_jax.checkpoint` and the training core run without it; only `vit_jax.data` imports
TensorFlow, lazily, when a pipeline is built.

When JAX computes on the host CPU, importing the package also tells glibc to keep freed
memory for reuse (see `vit_jax.host_memory`: it makes CPU train steps ~1.4x faster); set
VIT_JAX_SYSTEM_MALLOC=1 to leave malloc as it is.
"""

from vit_jax import host_memory as _host_memory

_host_memory.retain_freed_memory()

__version__ = '0.1.0'
