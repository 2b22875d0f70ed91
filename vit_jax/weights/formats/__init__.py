"""Other codebases' checkpoint formats, both ways, as flat params in the released layout.

  big_vision.py    big_vision `.npz` trees (params/ prefix, top-level pos_embedding, `file:sub`)
  timm.py          timm VisionTransformer state_dicts
  timm_hub.py      how timm builds the same ViT: its files, Hub folders and their config.json
  hf.py            Hugging Face ViTForImageClassification / ViTModel folders
  torch_layout.py  PyTorch Linear / Conv2d weight layouts <-> ours (per-head q/k/v included)
  tensor_files.py  `.safetensors` (the safetensors library, NumPy API) and `.pth` / `.bin`

PyTorch and transformers are never imported here (PyTorch only to read or write .pth / .bin).
"""
