"""The ViT papers' analyses: what patch filters and position embeddings learn, how far heads
attend, attention rollout, Fourier and noise analyses, Hessian spectra and loss landscapes.

Definitions follow "An Image is Worth 16x16 Words" (A1-A5) and "How Do Vision Transformers
Work?" (B1-B4). Each module holds pure functions on arrays (testable without a model); the
drivers that run a model live in `capture` and `vit_jax.analyze` (the command line).
"""
