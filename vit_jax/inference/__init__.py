"""Classifying images with a checkpoint: predictor.py (model, params, class names, the run's
eval preprocessing; built on vit_jax.weights.sources) and labels.py (class names)."""
