r"""ImageNet-1k from scratch: the big_vision "plain ViT" recipe (Beyer et al., 2022).

  python -m vit_jax.main --config=configs/pretrain.py --workdir=DIR \
      --config.data_dir=/data/tfds --config.manual_dir=/data/imagenet

ViT-S/16 with fixed 2-D sin-cos position embeddings and global average pooling (no class
token, no pre-logits), batch 1024, AdamW (lr 1e-3, decoupled weight decay 1e-4, bfloat16 first
moment), 10k warm-up steps then cosine, global-norm clipping 1, RandAugment(2, 10), mixup with
Beta(0.2, 0.2), inception crop + flip at 224px, eval on resize-256 + central-crop-224,
90 epochs of `train[:99%]`. big_vision documents 76.5% top-1 on ImageNet `validation` for this
recipe at 90 epochs (and ~80% at 300 epochs).
"""

from vit_jax import config_lib

TRAIN_EXAMPLES = 1_268_355  # train[:99%] of ImageNet-1k's 1,281,167 training images.
EPOCHS = 90
BATCH = 1024


def get_config(arg: str = 'ViT-S_16'):
  """arg: the model name (default ViT-S_16); the recipe stays the same."""
  c = config_lib.base_config()
  c.model_name = arg
  c.model.posemb = 'sincos2d'
  c.model.classifier = 'gap'
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
