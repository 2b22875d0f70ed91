r"""ImageNet-1k from scratch: big_vision's ViT-S/16 recipe (`big_vision/configs/vit_s16_i1k.py`,
"Better plain ViT baselines for ImageNet-1k", Beyer et al., 2022).

  python -m vit_jax.main --config=configs/pretrain.py --workdir=DIR \
      --config.data_dir=/data/tfds --config.manual_dir=/data/imagenet

The recipe, as big_vision's config sets it: ViT-S/16 with fixed 2-D sin-cos position
embeddings, global average pooling (no class token) and a tanh pre-logits layer of the model's
width (`rep_size=True`), zero-initialised head; batch 1024; Adam (b1 0.9, b2 0.999, bfloat16
first moment), lr 1e-3, decoupled weight decay 1e-4 on kernels, times the schedule's relative
value; 10k linear warm-up steps then cosine to 0; global-norm clipping at 1; softmax
cross-entropy; train preprocessing inception crop (5-100% of the area) at 224px, random flip,
RandAugment(2, 10) (vit_jax.data.randaugment follows the TF/TPU original that big_vision's
`randaug` runs: 16 ops, its magnitude map and quirks), value range [-1, 1]; mixup with
Beta(0.2, 0.2); eval resize the short side to 256, central crop 224; 90 epochs of
`train[:99%]`, model selection on `train[99%:]` (minival), test on `validation`.
big_vision documents 76.5% top-1 on ImageNet `validation` at 90 epochs ("6-7h on a
TPU-v3-8") and ~80% at 300 epochs (`--config.total_steps=371_589`). Not reproduced here (no
ImageNet run was made for this config).

What still differs from big_vision's run, all of it small:
  - Compute dtype: bfloat16 matmuls with float32 accumulation (LayerNorm, softmax, residual
    stream float32). big_vision computes in float32, which on TPU runs matmuls at bfloat16
    input precision by default: close, not identical. `--config.dtype=float32` to match GPUs'
    float32.
  - Random numbers: every augmentation is a function of (seed, example position), so the
    samples differ (the distributions do not). The inception crop gives up after 10 attempts
    (TF's default: 100) and then takes the whole image.
  - Pixel rounding: the cropped, resized image is rounded to uint8 before RandAugment;
    big_vision truncates (at most one grey level).
  - Eval resize: bilinear; big_vision's `resize_small` uses area interpolation.
  - Mixup: one Beta(0.2, 0.2) ratio a per batch mixes each example with its neighbour, as
    big_vision; big_vision uses max(a, 1 - a), which only swaps which of the two is called
    the example: the same distribution of mixed pairs and soft labels.
  - Warm-up: lr(step) = base_lr (step + 1) / warmup_steps; big_vision starts at 0.
  - Evaluation: top-1/top-5 and loss on minival and validation; big_vision also evaluates on
    2% of train, ImageNet-v2 and ImageNet-ReaL.
"""

from vit_jax.models import registry
from vit_jax.train import config as config_lib

TRAIN_EXAMPLES = 1_268_355  # train[:99%] of ImageNet-1k's 1,281,167 training images.
EPOCHS = 90
BATCH = 1024


def get_config(arg: str = 'ViT-S_16'):
  """arg: the model name (default ViT-S_16); the recipe stays the same."""
  c = config_lib.base_config()
  c.model_name = arg
  c.model.posemb = 'sincos2d'
  c.model.classifier = 'gap'
  # big_vision's rep_size=True: a tanh pre-logits layer as wide as the model.
  width = registry.MODEL_CONFIGS.get(arg, (None, {}))[1].get('hidden_size')
  if width:
    c.model.representation_size = width
  c.dataset = 'imagenet2012'
  c.train_split = 'train[:99%]'
  c.val_split = 'train[99%:]'  # minival, for model selection.
  c.test_split = 'validation'
  c.shuffle_buffer = 250_000
  c.pp.crop = 224
  c.pp.area_min = 0.05
  c.pp.flip = True
  c.pp.randaugment = (2, 10)
  c.pp.resize_mode = 'resize_crop'
  c.mixup = 0.2

  c.batch = BATCH
  c.batch_eval = 1024
  c.total_steps = round(EPOCHS * TRAIN_EXAMPLES / BATCH)  # 111,477
  c.warmup_steps = 10_000
  c.base_lr = 1e-3
  c.decay_type = 'cosine'
  c.grad_norm_clip = 1.0
  c.optim.name = 'adamw'
  c.optim.b1, c.optim.b2 = 0.9, 0.999
  c.optim.momentum_dtype = 'bfloat16'
  c.optim.weight_decay = 1e-4
  c.dtype = 'bfloat16'

  c.progress_every = 50
  c.eval_every = 2500
  c.checkpoint_every = 1000
  # Pods: FSDP over all devices keeps memory per chip low; the same code runs DP or TP.
  c.mesh = {'data': 1, 'fsdp': -1, 'model': 1}
  c.sharding_rules = 'fsdp'
  return c
