"""Building blocks shared by the ViT, hybrid and Mixer models.

Every parameter carries logical axis names (`embed`, `mlp`, `heads`, `kv`, `classes`, ...) via
`nn.with_logical_partitioning`, so that sharding is decided by a rules table outside the
models. Without a mesh and rules the names are inert metadata.
"""

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.system import sharding

Dtype = Any
Initializer = Callable[..., jax.Array]


def model_input(images: jax.Array) -> jax.Array:
  """Images as the models take them: uint8 [0, 255] pixels (the trainer's host hand-off, a
  quarter of the bytes of float32) -> float32 [-1, 1], as `vit_jax.data.preprocess.value_range`;
  floating images are taken to be in [-1, 1] already and pass unchanged."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 127.5 - 1.0
  return images


def logical(init: Initializer, names: Sequence[Optional[str]]) -> Initializer:
  """Wraps an initializer so that its parameter carries logical axis `names`."""
  return nn.with_logical_partitioning(init, tuple(names))


def constrain(x: jax.Array, names: Sequence[Optional[str]]) -> jax.Array:
  """Activation sharding hint by logical axes (vit_jax.system.sharding's resolver, the one used for
  parameters); a no-op outside `sharding.activate`."""
  return sharding.constrain(x, tuple(names))


def matmul(x: jax.Array, kernel: jax.Array, dtype: Dtype) -> jax.Array:
  """x [..., K] @ kernel [K, N] -> float32 [..., N], operands cast to `dtype`.

  The mixed-precision rule of every model here: matmul (and conv) operands in the compute
  dtype, accumulation and everything elementwise (LayerNorm, softmax, GELU, residuals) in
  float32. On CPU bfloat16 elementwise math is slower than float32, and float32 residuals
  keep bfloat16 rounding out of the residual stream.
  """
  return _matmul(x.astype(dtype), kernel.astype(dtype))


def _dot(x, kernel):
  return jax.lax.dot_general(
    x, kernel, (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.float32
  )


@jax.custom_vjp
def _matmul(x, kernel):
  return _dot(x, kernel)


def _matmul_fwd(x, kernel):
  return _dot(x, kernel), (x, kernel)


def _matmul_bwd(residuals, grad):
  """Gradients with matmul operands in the compute dtype, accumulated in float32.

  Autodiff of a dot with float32 output would multiply the float32 cotangent with the
  bfloat16 operand in float32; casting the cotangent keeps the backward pass as cheap as the
  forward (the usual mixed-precision rule). The kernel is transposed explicitly (a small
  copy) so that dx is a plain [M, N] x [N, K] matmul: XLA:CPU runs bfloat16 x bfloat16 ->
  float32 dots only in that form (others fail with "Unsupported element type").
  """
  x, kernel = residuals
  dx = _dot(grad.astype(kernel.dtype), jax.lax.optimization_barrier(kernel.T)).astype(x.dtype)
  grad = grad.astype(x.dtype).reshape(-1, grad.shape[-1])
  x = x.reshape(-1, x.shape[-1])
  if x.dtype == jnp.float32:
    # As (grad^T x)^T: asked for x^T grad, XLA:CPU stores the saved activation (e.g. the GELU
    # output) transposed in the forward pass, with a slow transposing fusion.
    dkernel = jax.lax.dot_general(
      grad, x, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32
    ).T
  else:  # A plain matmul again, for the bfloat16 x bfloat16 -> float32 kernels.
    dkernel = _dot(jax.lax.optimization_barrier(x.T), grad)
  return dx, dkernel.astype(kernel.dtype)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


class Dense(nn.Module):
  """`nn.Dense` with the same parameters (kernel [K, N], bias [N]) computed by `matmul`."""

  features: int
  kernel_init: Initializer
  bias_init: Initializer
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[..., K] -> float32 [..., features]."""
    kernel = self.param('kernel', self.kernel_init, (x.shape[-1], self.features), self.param_dtype)
    bias = self.param('bias', self.bias_init, (self.features,), self.param_dtype)
    return matmul(x, kernel, self.dtype) + bias


class MlpBlock(nn.Module):
  """Transformer MLP: Dense(mlp_dim) -> GELU -> Dropout -> Dense -> Dropout.

  Matches the original: xavier-uniform kernels, biases ~ N(0, 1e-6), tanh-approximated GELU.

  Attributes:
    mlp_dim: hidden width.
    out_dim: output width; defaults to the input width.
    exact_gelu: erf GELU instead of the tanh approximation: what timm and Hugging Face build
      by default, so that their files compute here what they compute there.
  """

  mlp_dim: int
  out_dim: Optional[int] = None
  dropout_rate: float = 0.0
  exact_gelu: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  # Logical names of the (input, hidden) axes; the Mixer's token MLP uses other names.
  axes: tuple[str, str] = ('embed', 'mlp')

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
    """[..., d] -> float32 [..., out_dim or d]."""
    out_dim = x.shape[-1] if self.out_dim is None else self.out_dim
    io_axis, hidden_axis = self.axes
    dense = lambda features, names, bias_name, name: Dense(
      features=features,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=logical(nn.initializers.xavier_uniform(), names),
      bias_init=logical(nn.initializers.normal(stddev=1e-6), (bias_name,)),
      name=name,
    )
    x = dense(self.mlp_dim, (io_axis, hidden_axis), hidden_axis, 'Dense_0')(x)
    x = nn.gelu(x, approximate=not self.exact_gelu)
    x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)
    x = dense(out_dim, (hidden_axis, io_axis), io_axis, 'Dense_1')(x)
    return nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)


class DropPath(nn.Module):
  """Stochastic depth: drops a whole residual branch per example with probability `rate`.

  Kept branches are scaled by 1 / (1 - rate) so the expectation is unchanged. Uses the
  `dropout` RNG stream.
  """

  rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


def layer_norm(name: str, param_dtype: Dtype, axis: str = 'embed') -> nn.LayerNorm:
  """LayerNorm with the original's epsilon (1e-6) and logical names; float32 in and out."""
  return nn.LayerNorm(
    epsilon=1e-6,
    dtype=jnp.float32,
    param_dtype=param_dtype,
    scale_init=logical(nn.initializers.ones, (axis,)),
    bias_init=logical(nn.initializers.zeros, (axis,)),
    name=name,
  )


def patch_embedding(
  features: int, patch_size: tuple[int, int], name: str, dtype: Dtype, param_dtype: Dtype
) -> nn.Conv:
  """Non-overlapping patches -> `features` channels: a conv with kernel = stride = patch."""
  return nn.Conv(
    features=features,
    kernel_size=patch_size,
    strides=patch_size,
    padding='VALID',
    dtype=dtype,
    param_dtype=param_dtype,
    kernel_init=logical(nn.initializers.lecun_normal(), (None, None, None, 'embed')),
    bias_init=logical(nn.initializers.zeros, ('embed',)),
    name=name,
  )


def classifier_head(
  num_classes: int, bias_init: float, dtype: Dtype, param_dtype: Dtype, in_axis: str = 'embed'
) -> Dense:
  """The `head` layer: zero-initialised kernel (as the original), constant bias; float32 out."""
  return Dense(
    features=num_classes,
    dtype=dtype,
    param_dtype=param_dtype,
    kernel_init=logical(nn.initializers.zeros, (in_axis, 'classes')),
    bias_init=logical(nn.initializers.constant(bias_init), ('classes',)),
    name='head',
  )


def check_images(images: jax.Array, stride: int, model: str) -> None:
  """Validates an NHWC image batch; raises a one-line ValueError saying what to change."""
  if images.ndim != 4:
    raise ValueError(f'{model} expects NHWC images of rank 4, got shape {tuple(images.shape)}.')
  _, h, w, c = images.shape
  if c != 3:
    raise ValueError(
      f'{model} expects 3-channel RGB images, got {c} channels (shape {tuple(images.shape)}); '
      'convert grayscale/RGBA inputs to RGB first.'
    )
  if h % stride or w % stride:
    raise ValueError(
      f'{model}: image size {h}x{w} is not divisible by the patch stride {stride}; '
      f'resize or crop to a multiple of {stride} (e.g. {max(stride, h // stride * stride)}).'
    )
