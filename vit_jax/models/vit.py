"""Vision Transformer (Dosovitskiy et al., 2021) and its hybrid (ResNet stem + ViT) variant.

Parameter paths are the keys of the released `.npz` checkpoints, e.g.
`Transformer/encoderblock_3/MultiHeadDotProductAttention_1/query/kernel` (the blocks keep the
pre-Linen numbering LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3).
With `scan=True` the blocks are one `nn.scan` and their params are stacked along a leading
[num_layers] axis (logical name 'layers') under `Transformer/encoderblock/...`, big_vision's
scanned layout; vit_jax.models.layouts converts between the two at the checkpoint boundary.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models import attention
from vit_jax.models import layers
from vit_jax.models import posemb as posemb_lib
from vit_jax.models import resnet

CLASSIFIERS = ('token', 'gap', 'map', 'unpooled', 'token_unpooled')
# Rematerialisation of each encoder block: which intermediates the backward pass may keep
# (the rest it recomputes). 'none' = no remat (keep everything).
REMAT_POLICIES = {
  'none': None,
  'nothing_saveable': jax.checkpoint_policies.nothing_saveable,
  'dots_saveable': jax.checkpoint_policies.dots_saveable,
  'dots_with_no_batch_dims_saveable': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def remat_policy(name: str):
  """The jax.checkpoint policy called `name` (None for 'none'); ValueError if unknown."""
  if name not in REMAT_POLICIES:
    raise ValueError(f'unknown remat_policy {name!r}; choose one of {tuple(REMAT_POLICIES)}.')
  return REMAT_POLICIES[name]


class _TracedDropPath(nn.Module):
  """layers.DropPath for a rate that is a traced scalar (each layer's rate under nn.scan)."""

  rate: jax.Array

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
    if deterministic:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class Encoder1DBlock(nn.Module):
  """Pre-LN transformer block: x + Attn(LN(x)), then x + MLP(LN(x)); [B, L, D] -> [B, L, D].

  With `intermediates` mutable it sows the residual stream after each sub-block
  (`residual_attention`, `residual_mlp`, float32 [B, L, D]) and its attention sows
  `attention_weights`; otherwise sowing is a no-op."""

  mlp_dim: int
  num_heads: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  drop_path_rate: float = 0.0
  relative_grid: Optional[tuple[int, int]] = None
  relative: str = 'bias'
  num_prefix: int = 0
  attention_impl: str = 'auto'
  exact_gelu: bool = False
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(
    self,
    inputs: jax.Array,
    *,
    deterministic: bool = True,
    drop_path_rate: Optional[jax.Array] = None,
  ) -> jax.Array:
    """drop_path_rate: a traced scalar replacing the field (the scanned per-layer rate)."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if drop_path_rate is None:
      drop_path = layers.DropPath(rate=self.drop_path_rate)
    else:
      drop_path = _TracedDropPath(rate=drop_path_rate, name='DropPath_0')
    x = layers.layer_norm('LayerNorm_0', self.param_dtype)(inputs)
    x = attention.MultiHeadDotProductAttention(
      num_heads=self.num_heads,
      attention_dropout_rate=self.attention_dropout_rate,
      relative_grid=self.relative_grid,
      relative=self.relative,
      num_prefix=self.num_prefix,
      implementation=self.attention_impl,
      name='MultiHeadDotProductAttention_1',
      **kw,
    )(x, x, deterministic=deterministic)
    x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)
    x = inputs + drop_path(x, deterministic=deterministic)
    x = layers.constrain(x, ('batch', 'length', 'embed'))
    self.sow('intermediates', 'residual_attention', x)
    y = layers.layer_norm('LayerNorm_2', self.param_dtype)(x)
    y = layers.MlpBlock(
      mlp_dim=self.mlp_dim,
      dropout_rate=self.dropout_rate,
      exact_gelu=self.exact_gelu,
      name='MlpBlock_3',
      **kw,
    )(y, deterministic=deterministic)
    x = layers.constrain(
      x + drop_path(y, deterministic=deterministic), ('batch', 'length', 'embed')
    )
    self.sow('intermediates', 'residual_mlp', x)
    return x


class Encoder(nn.Module):
  """Position embedding + `num_layers` blocks + final LayerNorm (`encoder_norm`).

  Stochastic depth grows linearly from 0 at the first block to `stochastic_depth` at the last.
  `scan`: the blocks run as one `nn.scan` (one block compiled instead of num_layers) with
  params stacked under `encoderblock`; each layer's drop-path rate is a scanned input and
  the `dropout` RNG is split per layer. `remat_policy` (see REMAT_POLICIES) recomputes each
  block's activations in the backward pass instead of keeping them.
  """

  num_layers: int
  mlp_dim: int
  num_heads: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  posemb: str = 'learn'
  num_prefix: int = 0
  attention_impl: str = 'auto'
  exact_gelu: bool = False
  scan: bool = False
  remat_policy: str = 'none'
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, grid: tuple[int, int], *, train: bool = False) -> jax.Array:
    """x: [B, num_prefix + h*w, D] tokens of an h x w `grid` -> [B, same, D]."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = posemb_lib.AddPositionEmbs(
      kind=self.posemb,
      num_prefix=self.num_prefix,
      param_dtype=self.param_dtype,
      name='posembed_input',
    )(x, grid)
    x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=not train)
    self.sow('intermediates', 'residual_embedding', x)  # the stream entering the first block.
    block_kw = dict(
      mlp_dim=self.mlp_dim,
      num_heads=self.num_heads,
      dropout_rate=self.dropout_rate,
      attention_dropout_rate=self.attention_dropout_rate,
      relative_grid=tuple(grid) if self.posemb in posemb_lib.RELATIVE else None,
      relative=posemb_lib.RELATIVE.get(self.posemb, 'bias'),
      num_prefix=self.num_prefix,
      attention_impl=self.attention_impl,
      exact_gelu=self.exact_gelu,
      **kw,
    )
    rates = [
      self.stochastic_depth * i / max(self.num_layers - 1, 1) for i in range(self.num_layers)
    ]

    # Flax function transforms (not nn.remat(class)): `train` stays a Python bool, closed over.
    def run_block(block, y, rate=None):
      return block(y, deterministic=not train, drop_path_rate=rate)

    policy = remat_policy(self.remat_policy)
    if self.remat_policy != 'none':
      # A scan body needs no CSE barrier (the loop keeps XLA from merging the recomputation
      # back into the forward pass), and the barrier would slow it down.
      run_block = nn.remat(run_block, policy=policy, prevent_cse=not self.scan)
    if not self.scan:
      for i, rate in enumerate(rates):
        x = run_block(Encoder1DBlock(drop_path_rate=rate, name=f'encoderblock_{i}', **block_kw), x)
    else:
      scanned = nn.scan(
        lambda block, y, *xs: (run_block(block, y, *xs), None),
        # Params (and sown intermediates) get a leading [num_layers] axis named 'layers'.
        variable_axes={'params': 0, 'intermediates': 0},
        split_rngs={'params': True, 'dropout': True},
        in_axes=0,
        length=self.num_layers,
        metadata_params={nn.PARTITION_NAME: 'layers'},
      )
      # Without stochastic depth no rate is scanned: the block then draws no drop-path RNG.
      xs = (jnp.asarray(rates, jnp.float32),) if self.stochastic_depth else ()
      x, _ = scanned(Encoder1DBlock(name='encoderblock', **block_kw), x, *xs)
    return layers.layer_norm('encoder_norm', self.param_dtype)(x)


class MAPHead(nn.Module):
  """Multihead attention pooling: a learned probe attends over the tokens; [B, L, D] -> [B, D]."""

  num_heads: int
  mlp_dim: int
  attention_impl: str = 'auto'
  exact_gelu: bool = False
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    probe = self.param(
      'probe',
      layers.logical(nn.initializers.xavier_uniform(), (None, None, 'embed')),
      (1, 1, x.shape[-1]),
      self.param_dtype,
    )
    probe = jnp.broadcast_to(probe, (x.shape[0], 1, x.shape[-1]))
    x = attention.MultiHeadDotProductAttention(
      num_heads=self.num_heads,
      implementation=self.attention_impl,
      name='MultiHeadDotProductAttention_0',
      **kw,
    )(probe, x)
    y = layers.layer_norm('LayerNorm_0', self.param_dtype)(x)
    mlp = layers.MlpBlock(mlp_dim=self.mlp_dim, exact_gelu=self.exact_gelu, name='MlpBlock_0', **kw)
    x = x + mlp(y)
    return x[:, 0]


class VisionTransformer(nn.Module):
  """ViT classifier: NHWC float images -> logits [B, num_classes] (or features, see below).

  Attributes:
    num_classes: head width; 0/None returns the pooled (pre-logits) features instead.
    patch_size: (ph, pw) patch size; the patch embedding is a conv named `embedding`.
    hidden_size, num_layers, num_heads, mlp_dim: transformer sizes.
    classifier: 'token' (class token), 'gap' (mean of tokens), 'map' (attention-pooling
      probe), 'unpooled' (all tokens [B, L, D]), 'token_unpooled' (with class token, all tokens).
    posemb: 'learn' | 'learn_2d' | 'sincos2d' | 'none' | 'relative' | 'relative_2d' |
      'relative_bias' (see posemb.py).
    representation_size: width of the tanh `pre_logits` layer; None for no such layer.
    resnet_layers / resnet_width: if `resnet_layers` is not None the model is a hybrid: a BiT
      ResNet root (+ stages with these block counts; () = root only) feeds the patch embedding.
    dropout_rate, attention_dropout_rate, stochastic_depth: regularisation (train only).
    attention_impl: 'auto' | 'per_head' | 'xla' | 'cudnn' (see attention.py); 'auto' picks the
      fastest for the backend. All compute the same function.
    exact_gelu: erf GELU in the MLPs (timm's and Hugging Face's default) instead of the
      original's tanh approximation; set from the file when a timm / HF checkpoint is read.
    scan: run the encoder blocks as one nn.scan (faster compiles; params stacked under
      `Transformer/encoderblock`, see the module docstring). Same function as the loop.
    remat_policy: rematerialise each block in the backward pass: 'none' (default),
      'nothing_saveable', 'dots_saveable', 'dots_with_no_batch_dims_saveable'.
    dtype: matmul/conv operand dtype (e.g. bfloat16); accumulation, LayerNorm, softmax, GELU
      and the residual stream are float32 (see layers.matmul). param_dtype: storage dtype.
  """

  num_classes: Optional[int]
  patch_size: tuple[int, int] = (16, 16)
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  classifier: str = 'token'
  posemb: str = 'learn'
  representation_size: Optional[int] = None
  resnet_layers: Optional[tuple[int, ...]] = None
  resnet_width: float = 1.0
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  head_bias_init: float = 0.0
  attention_impl: str = 'auto'
  exact_gelu: bool = False
  scan: bool = False
  remat_policy: str = 'none'
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  model_name: Optional[str] = None

  @property
  def stride(self) -> int:
    """Pixels per token along each axis (patch size times the ResNet stem's downsampling)."""
    stem = 1 if self.resnet_layers is None else resnet.stem_stride(self.resnet_layers)
    return stem * self.patch_size[0]

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    self._validate(images)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = images.astype(self.dtype)
    if self.resnet_layers is not None:
      x = resnet.apply_stem(x, self.resnet_layers, self.resnet_width, **kw)
    x = layers.patch_embedding(self.hidden_size, self.patch_size, 'embedding', **kw)(x)
    x = x.astype(jnp.float32)  # the residual stream is float32 (see layers.matmul).
    n, h, w, d = x.shape
    x = jnp.reshape(x, (n, h * w, d))
    num_prefix = 1 if self.classifier in ('token', 'token_unpooled') else 0
    if num_prefix:
      cls = self.param(
        'cls',
        layers.logical(nn.initializers.zeros, (None, None, 'embed')),
        (1, 1, d),
        self.param_dtype,
      )
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (n, 1, d)), x], axis=1)
    x = layers.constrain(x, ('batch', 'length', 'embed'))
    x = Encoder(
      num_layers=self.num_layers,
      mlp_dim=self.mlp_dim,
      num_heads=self.num_heads,
      dropout_rate=self.dropout_rate,
      attention_dropout_rate=self.attention_dropout_rate,
      stochastic_depth=self.stochastic_depth,
      posemb=self.posemb,
      num_prefix=num_prefix,
      attention_impl=self.attention_impl,
      exact_gelu=self.exact_gelu,
      scan=self.scan,
      remat_policy=self.remat_policy,
      name='Transformer',
      **kw,
    )(x, (h, w), train=train)

    if self.classifier == 'token':
      x = x[:, 0]
    elif self.classifier == 'gap':
      x = jnp.mean(x, axis=1)
    elif self.classifier == 'map':
      x = MAPHead(
        num_heads=self.num_heads,
        mlp_dim=self.mlp_dim,
        attention_impl=self.attention_impl,
        exact_gelu=self.exact_gelu,
        name='MAPHead_0',
        **kw,
      )(x)

    if self.representation_size is not None:
      x = layers.Dense(
        features=self.representation_size,
        kernel_init=layers.logical(nn.initializers.lecun_normal(), ('embed', 'mlp')),
        bias_init=layers.logical(nn.initializers.zeros, ('mlp',)),
        name='pre_logits',
        **kw,
      )(x)
      x = jnp.tanh(x)
    if self.num_classes:
      x = layers.classifier_head(
        self.num_classes,
        self.head_bias_init,
        **kw,
        in_axis='mlp' if self.representation_size else 'embed',
      )(x)
    return x

  def _validate(self, images: jax.Array) -> None:
    name = self.model_name or 'VisionTransformer'
    if self.classifier not in CLASSIFIERS:
      raise ValueError(
        f'{name}: unknown classifier {self.classifier!r}; choose one of {CLASSIFIERS}.'
      )
    if self.posemb not in posemb_lib.POSEMB_KINDS:
      raise ValueError(
        f'{name}: unknown posemb {self.posemb!r}; choose one of {posemb_lib.POSEMB_KINDS}.'
      )
    try:
      remat_policy(self.remat_policy)
    except ValueError as e:
      raise ValueError(f'{name}: {e}') from None
    layers.check_images(images, self.stride, name)
