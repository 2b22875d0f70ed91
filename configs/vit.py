r"""Fine-tuning presets with the original ViT hyper-parameters: `configs/vit.py:<model>,<dataset>`.

  python -m vit_jax.main --config=configs/vit.py:ViT-B_16,cifar10 --workdir=DIR \
      --config.pretrained_path=gs://vit_models/imagenet21k/ViT-B_16.npz

The recipe of the paper (Appendix B.1.1, Table 4) and of the original repo's configs:
384px (378px for ViT-H_14: a multiple of its 14px patches), batch 512, SGD with momentum 0.9
(bfloat16 momentum), no weight decay, global-norm clipping at 1, 500 warm-up steps then cosine
decay, gradient accumulation over 8 micro-batches (memory; the result equals the full batch). Steps: 10k (CIFAR), 20k (ImageNet), 500 (Pets,
Flowers). base_lr was swept over {0.001, 0.003, 0.01, 0.03} in the paper; 0.03 is the
original repo's default. Override anything with --config.<field>=value.

Published accuracies of the original repo's README ("Expected results", ImageNet-21k
pre-training, this recipe, two runs each):
  ViT-B_16: cifar10 0.9892 / 0.9903, cifar100 0.9226 / 0.9264, imagenet2012 0.8462 / 0.8461
  ViT-B_32: cifar10 0.9893 / 0.9889, cifar100 0.9208 / 0.9196, imagenet2012 0.8179 / 0.8179
  ViT-L_16: cifar10 0.9907 / 0.9910, cifar100 0.9304 / 0.9300, imagenet2012 0.8507 / 0.8505
  ViT-L_32: cifar10 0.9903 / 0.9909, cifar100 0.9302 / 0.9306, imagenet2012 0.8178 / 0.8201
"""

from vit_jax import models
from vit_jax.train import config as config_lib

# dataset -> (total_steps, train split, validation split, test split)
DATASETS = {
  'cifar10': (10_000, 'train[:98%]', 'train[98%:]', 'test'),
  'cifar100': (10_000, 'train[:98%]', 'train[98%:]', 'test'),
  'imagenet2012': (20_000, 'train[:99%]', 'train[99%:]', 'validation'),
  'oxford_iiit_pet': (500, 'train[:90%]', 'train[90%:]', 'test'),
  'oxford_flowers102': (500, 'train', 'validation', 'test'),
}


def _crop(model_name: str, size: int = 384) -> int:
  """384px, or the largest multiple of the model's patch stride below it: ViT-H_14 gets 378
  (a 27x27 grid), the grid the original's VALID patch convolution made of 384px inputs."""
  try:
    return size - size % models.get_model(model_name).stride
  except ValueError:  # an unknown name: setup_run reports it with the valid names.
    return size


def get_config(arg: str = 'ViT-B_16,cifar10'):
  """arg: '<model name>,<dataset>' with dataset one of DATASETS."""
  model_name, _, dataset = arg.partition(',')
  if dataset not in DATASETS:
    raise ValueError(
      f'configs/vit.py:{arg}: dataset must be one of {sorted(DATASETS)} '
      '(e.g. configs/vit.py:ViT-B_16,cifar10).'
    )
  total_steps, train_split, val_split, test_split = DATASETS[dataset]
  c = config_lib.base_config()
  c.model_name = model_name
  c.dataset = dataset
  c.train_split, c.val_split, c.test_split = train_split, val_split, test_split
  c.pp.crop = _crop(model_name)
  c.pp.area_min = 0.05
  c.pp.flip = True
  c.total_steps = total_steps
  c.warmup_steps = 500 if total_steps > 500 else 50
  c.batch = 512
  c.batch_eval = 512
  c.accum_steps = 8
  c.base_lr = 0.03
  c.decay_type = 'cosine'
  c.grad_norm_clip = 1.0
  c.optim.name = 'sgd'
  c.optim.momentum = 0.9
  c.optim.momentum_dtype = 'bfloat16'
  c.progress_every = 10
  c.eval_every = 1000 if total_steps > 500 else 100
  c.checkpoint_every = 1000 if total_steps > 500 else 250
  return c
