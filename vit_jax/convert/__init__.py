"""Checkpoints of other codebases in and out: big_vision, timm, Hugging Face, released names.

One concern per module; import the one you need (this package imports nothing, so that
`vit_jax.checkpoint` can use `big_vision` without pulling in the rest):

  big_vision.py    big_vision `.npz` trees (params/ prefix, top-level pos_embedding, `file:sub`)
  spec.py          a ViT's architecture read from its params (shapes and keys)
  torch_layout.py  PyTorch Linear / Conv2d weight layouts <-> ours (per-head q/k/v included)
  tensor_files.py  reading / writing `.safetensors` (NumPy) and `.pth` / `.bin` (PyTorch)
  timm.py          timm VisionTransformer state_dicts and folders, both ways
  hf.py            Hugging Face ViTForImageClassification / ViTModel folders, both ways
  catalogue.py     released names (`i21k:ViT-B_16`, AugReg) -> URLs, downloaded once to a cache
  sources.py       any of these paths or names -> params: the one place formats are told apart

PyTorch, safetensors and transformers are imported only inside the functions that need them.
"""
