r"""The default job: a small ViT trained from scratch on the built-in `sklearn_digits`.

Runs offline on a 2-core CPU in a few minutes and reaches >= 95% top-1 on the test split.

  python -m vit_jax.main --config=configs/default.py --workdir=/tmp/vit_default
"""

from vit_jax.train import config as config_lib


def get_config():
  c = config_lib.base_config()
  c.dataset = 'sklearn_digits'
  c.pp.crop = 16  # the 8x8 digits upsampled; 4x4 patches -> a 4x4 grid of tokens.
  c.pp.area_min = 0.6
  c.pp.flip = False  # mirrored digits are other digits (or none).
  c.shuffle_buffer = 2_000

  c.model_name = 'ViT-Ti_16'
  c.model.patch_size = (4, 4)
  c.model.hidden_size = 64
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.mlp_dim = 128
  c.model.classifier = 'gap'

  c.batch = 128
  c.batch_eval = 128
  c.total_steps = 1500
  c.warmup_steps = 100
  c.base_lr = 1e-3
  c.optim.name = 'adamw'
  c.optim.weight_decay = 1e-4
  c.grad_norm_clip = 1.0

  c.progress_every = 100
  c.eval_every = 500
  c.checkpoint_every = 500
  return c
