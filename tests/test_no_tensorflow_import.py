"""The core (models, checkpoints) never imports TensorFlow: it must run where TF is absent."""

import subprocess
import sys

import pytest

CORE_MODULES = ['vit_jax', 'vit_jax.models', 'vit_jax.checkpoint', 'vit_jax.resample']


@pytest.mark.parametrize('module', CORE_MODULES)
def test_core_module_does_not_import_tensorflow(module):
  code = (f'import sys, {module}\n'
          "tf = sorted(m for m in sys.modules if m.split('.')[0] in "
          "('tensorflow', 'tensorflow_datasets'))\n"
          'print(tf[:5])\n'
          'sys.exit(1 if tf else 0)\n')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120, check=False)
  assert result.returncode == 0, f'{module} imported TensorFlow: {result.stdout}{result.stderr}'


def test_core_works_with_tensorflow_unimportable():
  # None in sys.modules makes `import tensorflow` fail and find_spec() report it absent,
  # as on a machine (like the GPU image) where TensorFlow is not installed.
  code = '''
import sys
sys.modules['tensorflow'] = sys.modules['tensorflow_datasets'] = None
import jax, numpy as np
from vit_jax import checkpoint, models
model = models.get_model('testing', num_classes=3)
variables = model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
checkpoint.save('PATH', variables['params'])
print(model.apply({'params': checkpoint.load('PATH')}, np.ones((1, 32, 32, 3))).shape)
'''
  import tempfile  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    code = code.replace('PATH', f'{tmp}/m.npz')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().endswith('(1, 3)')
