r"""The ViT paper's position-embedding ablation (Appendix D.4, Table 8) on real MNIST digits.

The same small ViT (class token, 7x7 grid of 4x4 patches on 28x28 digits) trained from
scratch with each position embedding (POSEMBS), three seeds each, 2,400 steps (or the steps
after the folder, e.g. `:/tmp/mnist,600`):

  python -m vit_jax.data.mnist_folder --out=/tmp/mnist  # downloads MNIST once
  python -m vit_jax.sweep --config=configs/posemb_ablation.py:/tmp/mnist --workdir=/tmp/ablation

One run: `python -m vit_jax.main --config=configs/posemb_ablation.py:/tmp/mnist
--config.model.posemb=none --config.seed=1 --workdir=DIR`. The sweep prints (and saves as
table.md / results.json in its workdir) the test accuracy as mean ± std over seeds per
position embedding; `--only=posemb=none_,posemb=relative_seed` runs some of them. The paper's
numbers (ViT-B/16, ImageNet 5-shot linear): none 0.614, 1-D learned 0.642, 2-D learned 0.640,
relative 0.640.
"""

from vit_jax.train import config as config_lib

# The paper's variants ('relative' is its 1-D relative attention), fixed 2-D sin-cos, and two
# more relative forms: 2-D relative attention and the per-head scalar bias of Swin / BEiT.
POSEMBS = ('none', 'learn', 'learn_2d', 'relative', 'sincos2d', 'relative_2d', 'relative_bias')
SEEDS = (0, 1, 2)
DEFAULT_STEPS = 2400


def _parse(arg: str) -> tuple[str, int]:
  folder, _, steps = arg.partition(',')
  if steps and not (steps.isdigit() and int(steps) > 0):
    raise ValueError(
      f'configs/posemb_ablation.py:{arg}: after the folder comes the number of '
      'training steps (e.g. configs/posemb_ablation.py:/tmp/mnist,600).'
    )
  return folder, int(steps) if steps else DEFAULT_STEPS


def get_config(arg: str = '/tmp/mnist'):
  """arg: '<MNIST image folder from vit_jax.data.mnist_folder>[,<training steps>]'."""
  folder, steps = _parse(arg)
  c = config_lib.base_config()
  c.dataset = folder
  c.pp.crop = 28
  c.pp.area_min = 0.85  # mild crops: digits stay where they are, roughly.
  c.pp.flip = False
  c.shuffle_buffer = 8_000

  c.model_name = 'ViT-Ti_16'
  c.model.patch_size = (4, 4)
  c.model.hidden_size = 64
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.mlp_dim = 128
  c.model.classifier = 'token'
  c.model.posemb = 'learn'

  # 2,400 steps of 64: ~19 epochs of the 8,000 training digits, ~3.5 minutes on a 2-core CPU.
  c.batch = 64
  c.batch_eval = 500
  c.total_steps = steps
  c.warmup_steps = steps // 10
  c.base_lr = 1e-3
  c.optim.name = 'adamw'
  c.optim.weight_decay = 1e-4
  c.grad_norm_clip = 1.0

  c.progress_every = max(1, steps // 3)
  c.eval_every = c.checkpoint_every = steps
  return c


def get_sweep(arg: str = '/tmp/mnist'):
  """The runs of `python -m vit_jax.sweep`: config overrides, one dict per run."""
  _parse(arg)  # a bad arg fails before any run starts.
  return [{'model.posemb': posemb, 'seed': seed} for posemb in POSEMBS for seed in SEEDS]
