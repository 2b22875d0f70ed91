"""Every way parameters enter or leave vit_jax.

sources.py    ONE entry: a path or name -> params (released names, .npz, timm, Hugging Face,
              a vit_jax run), and what the source says about them
spec.py       ONE architecture guesser: what a checkpoint's params say about the model
fit.py        pre-trained params fitted onto a new model (load_pretrained)
resample.py   position-embedding grids resampled to a new resolution
released.py   the released (and big_vision) `.npz` files: load / save
tree.py       a param tree's flat form ('a/b/c' keys, released numbering)
catalogue.py  released names -> URLs, downloaded once with progress and checks
formats/      big_vision, timm, Hugging Face and PyTorch layouts, both ways

  from vit_jax.weights import fit, released
  params = released.load('ViT-B_16.npz')
  params = fit.load_pretrained('i21k:ViT-B_16', init_params)   # fine-tuning
"""
