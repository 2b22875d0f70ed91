"""Released checkpoints by name -> their public URL (downloaded once into a local cache).

Names (the file lists of google-research/vision_transformer: its README, the `gsutil ls` of
the buckets in vit_jax.ipynb, and the README's table of recommended AugReg checkpoints):

  i21k:<model>      gs://vit_models/imagenet21k/<model>.npz (Mixer: gs://mixer_models/...)
  i21k+i1k:<model>  gs://vit_models/imagenet21k+imagenet2012/<model>.npz (fine-tuned, 384px;
                    ViT-B_16-224 / ViT-L_16-224 at 224px)
  i1k:<Mixer>       gs://mixer_models/imagenet1k/<model>.npz
  sam:<model>, gsam:<Mixer>   gs://vit_models/sam/, gs://mixer_models/{sam,gsam}/
  augreg:<size>     the recommended AugReg ImageNet-21k checkpoint of a size (B_16, R_Ti_16,
                    R50_L_32, ...), augreg+i1k:<size> its ImageNet fine-tune at 384px
  augreg:<file>     any file of gs://vit_models/augreg (name without .npz, e.g.
                    `B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0`); the bare
                    file name works too

They are downloaded over HTTPS once into $VIT_JAX_CACHE (vit_jax.system.downloads).

  python -m vit_jax.weights.catalogue ['i21k+i1k:*']   # lists them: name, model, URL
"""

import argparse
import fnmatch
import re
from typing import Optional

_VIT = 'gs://vit_models'
_MIXER = 'gs://mixer_models'

_FOLDERS = {
  'i21k': {
    **{
      m: f'{_VIT}/imagenet21k'
      for m in (
        'ViT-B_16',
        'ViT-B_32',
        'ViT-B_8',
        'ViT-L_16',
        'ViT-L_32',
        'ViT-H_14',
        'R50+ViT-B_16',
        'R26+ViT-B_32',
        'R50+ViT-L_32',
      )
    },
    **{m: f'{_MIXER}/imagenet21k' for m in ('Mixer-B_16', 'Mixer-L_16')},
  },
  'i21k+i1k': {
    m: f'{_VIT}/imagenet21k+imagenet2012'
    for m in (
      'ViT-B_16',
      'ViT-B_16-224',
      'ViT-B_32',
      'ViT-B_8',
      'ViT-L_16',
      'ViT-L_16-224',
      'ViT-L_32',
      'R50+ViT-B_16',
    )
  },
  'i1k': {m: f'{_MIXER}/imagenet1k' for m in ('Mixer-B_16', 'Mixer-L_16')},
  'sam': {
    **{m: f'{_VIT}/sam' for m in ('ViT-B_16', 'ViT-B_32', 'ViT-L_16', 'ViT-L_32', 'ViT-S_16')},
    **{m: f'{_MIXER}/sam' for m in ('Mixer-B_16', 'Mixer-B_32')},
  },
  'gsam': {m: f'{_MIXER}/gsam' for m in ('Mixer-B_16', 'Mixer-B_32')},
}

# The recommended (best upstream) AugReg checkpoint per size: (ImageNet-21k file, ImageNet
# fine-tune learning rate at 384px, or None when the README lists no fine-tune).
_AUGREG = {
  'L_16': ('L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0', '0.01'),
  'B_16': ('B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0', '0.03'),
  'S_16': ('S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0', '0.03'),
  'R50_L_32': ('R50_L_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1', '0.01'),
  'R26_S_32': ('R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0', '0.01'),
  'Ti_16': ('Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0', '0.03'),
  'B_32': ('B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0', '0.01'),
  'S_32': ('S_32-i21k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0', '0.01'),
  'R_Ti_16': ('R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0', '0.03'),
  'B_8': ('B_8-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0', None),
}
# An AugReg file name: <size>-i21k-... or <size>-i1k-... (upstream), optionally
# --<dataset>-steps_... (a fine-tune).
_AUGREG_FILE = re.compile(r'^(R\d*_)?(Ti|S|B|L|H)_\d+-i(21|1)k-\d+ep-[\w.+-]+$')
# <R50_|R26_|R_>?<size>_<patch>: the model part of an AugReg size or file name.
_AUGREG_SIZE = re.compile(r'^(R\d*_)?(Ti|S|B|L|H)_(\d+)')


def names() -> list[str]:
  """Every catalogue name (AugReg files beyond the recommended ones are accepted too)."""
  out = [f'{prefix}:{model}' for prefix, models in _FOLDERS.items() for model in models]
  out += [f'augreg:{size}' for size in _AUGREG]
  out += [f'augreg+i1k:{size}' for size, (_, lr) in _AUGREG.items() if lr]
  return sorted(out)


def resolve(name: str) -> Optional[str]:
  """The gs:// URL of a catalogue name; None when `name` is not one (e.g. a file path).

  A `:sub/key` after a name selects a subtree, as for `.npz` paths (kept on the result).
  """
  prefix, sep, rest = name.partition(':')
  if not sep and _AUGREG_FILE.match(name):
    prefix, rest = 'augreg', name
  elif not sep:
    return None
  model, _, subtree = rest.partition(':')
  suffix = f':{subtree}' if subtree else ''
  if prefix in _FOLDERS and model in _FOLDERS[prefix]:
    return f'{_FOLDERS[prefix][model]}/{model}.npz{suffix}'
  if prefix in ('augreg', 'augreg+i1k') and model in _AUGREG:
    upstream, lr = _AUGREG[model]
    if prefix == 'augreg':
      return f'{_VIT}/augreg/{upstream}.npz{suffix}'
    if lr:
      return f'{_VIT}/augreg/{upstream}--imagenet2012-steps_20k-lr_{lr}-res_384.npz{suffix}'
  if prefix == 'augreg' and _AUGREG_FILE.match(model):
    return f'{_VIT}/augreg/{model}.npz{suffix}'
  if prefix in _FOLDERS or prefix in ('augreg', 'augreg+i1k'):
    known = [n for n in names() if n.startswith(prefix + ':')]
    raise ValueError(f'{name!r} is not in the catalogue; {prefix}: has {", ".join(known)}.')
  return None


def model_name(name: str) -> Optional[str]:
  """The registered model (vit_jax.models) a catalogue name holds, e.g. 'i21k+i1k:ViT-B_16-224'
  -> 'ViT-B_16', 'augreg:R_Ti_16' -> 'R+ViT-Ti_16'; None for a path or an unknown name."""
  prefix, sep, rest = name.partition(':')
  model = rest.partition(':')[0] if sep else name
  if prefix in _FOLDERS:
    return re.sub(r'-224$', '', model) if model in _FOLDERS[prefix] else None
  if sep and prefix not in ('augreg', 'augreg+i1k'):
    return None
  match = _AUGREG_SIZE.match(model)
  if not match or (model not in _AUGREG and not _AUGREG_FILE.match(model)):
    return None
  resnet, size, patch = match.groups()
  if resnet is None:
    return f'ViT-{size}_{patch}'
  return f'R+ViT-{size}_{patch}' if resnet == 'R_' else f'{resnet[:-1]}+ViT-{size}_{patch}'


def released(pattern: str = '*') -> list[tuple[str, str, str]]:
  """(name, registered model, URL) of each released checkpoint whose name matches `pattern`
  (shell-style, as timm's list_models): the names that `--config.pretrained_path`, `predict`,
  `export` and `analyze` take."""
  return [
    (name, model_name(name) or '?', resolve(name))
    for name in names()
    if fnmatch.fnmatchcase(name, pattern)
  ]


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description='Lists the released checkpoints.')
  parser.add_argument('pattern', nargs='?', default='*', help="e.g. 'i21k:*B_16*' (default: all)")
  pattern = parser.parse_args(argv).pattern
  found = released(pattern)
  if not found:
    parser.error(f'no released checkpoint matches {pattern!r}; leave PATTERN out to list all.')
  for name, model, url in found:
    print(f'{name:<28s} {model:<16s} {url}')


if __name__ == '__main__':
  main()
