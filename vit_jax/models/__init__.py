"""Pure Flax models: ViT (+ hybrids) and MLP-Mixer, and the registry of named configurations.

    from vit_jax import models
    model = models.get_model('ViT-B_16', num_classes=10)
    variables = model.init(jax.random.key(0), jnp.zeros([1, 224, 224, 3]))
    logits = model.apply(variables, images, train=False)

`init` returns parameters boxed with their logical axis names (flax `LogicallyPartitioned`);
`flax.linen.meta.unbox` gives plain arrays, and `apply` accepts either.
"""

from vit_jax.models.mixer import MlpMixer
from vit_jax.models.registry import describe
from vit_jax.models.registry import get_model
from vit_jax.models.registry import MODEL_CONFIGS
from vit_jax.models.registry import model_names
from vit_jax.models.vit import VisionTransformer

__all__ = ['MODEL_CONFIGS', 'MlpMixer', 'VisionTransformer', 'describe', 'get_model', 'model_names']
