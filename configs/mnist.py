r"""A ViT or a ResNet of similar accuracy trained on real MNIST digits: the models that the
README's "What the analyses show" section analyses (`python -m vit_jax.analyze`).

  python -m vit_jax.data.mnist_folder --out=/tmp/mnist  # downloads MNIST once
  python -m vit_jax.main --config=configs/mnist.py:/tmp/mnist,vit --workdir=/tmp/mnist_vit
  python -m vit_jax.main --config=configs/mnist.py:/tmp/mnist,resnet --workdir=/tmp/mnist_resnet
  python -m vit_jax.analyze --checkpoint=/tmp/mnist_vit --out=/tmp/mnist_vit/analysis

vit:    6 blocks of width 64 (4 heads), class token, learned 1-D position embedding, 4x4
        patches of the 28x28 digits (a 7x7 grid), 1,500 steps of 64 (~12 epochs).
resnet: `ResNet-tiny` (BiT bottlenecks, stages of 2 units, 16-64-128 wide), 400 steps of 64.
Both: AdamW (lr 1e-3, weight decay 1e-4), mild random crops, no flips.
"""

from vit_jax.train import config as config_lib

MODELS = ('vit', 'resnet')


def get_config(arg: str = '/tmp/mnist,vit'):
  """arg: '<MNIST image folder from vit_jax.data.mnist_folder>,<vit|resnet>'."""
  folder, _, kind = arg.partition(',')
  kind = kind or 'vit'
  if kind not in MODELS:
    raise ValueError(
      f'configs/mnist.py:{arg}: the model must be one of {MODELS} '
      '(e.g. configs/mnist.py:/tmp/mnist,vit).'
    )
  c = config_lib.base_config()
  c.dataset = folder
  c.pp.crop = 28
  c.pp.area_min = 0.85
  c.pp.flip = False
  c.shuffle_buffer = 8_000

  if kind == 'vit':
    c.model_name = 'ViT-Ti_16'
    c.model.patch_size = (4, 4)
    c.model.hidden_size = 64
    c.model.num_layers = 6
    c.model.num_heads = 4
    c.model.mlp_dim = 128
    c.model.classifier = 'token'
    c.total_steps = 1500
  else:
    c.model_name = 'ResNet-tiny'
    c.total_steps = 400

  c.batch = 64
  c.batch_eval = 500
  c.warmup_steps = 100
  c.base_lr = 1e-3
  c.optim.name = 'adamw'
  c.optim.weight_decay = 1e-4
  c.grad_norm_clip = 1.0

  c.progress_every = 250
  c.eval_every = c.total_steps
  c.checkpoint_every = c.total_steps
  return c
