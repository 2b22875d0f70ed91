"""The core (models, checkpoints) never imports TensorFlow, nor PyTorch and its ecosystem: it
must run where they are absent. Only vit_jax.data imports TF; only the converters' .pth / .bin
readers import torch, and writing .safetensors imports the safetensors package."""

import json
import os
import subprocess
import sys

import pytest

from helpers import command_env

CORE_MODULES = [
  'vit_jax',
  'vit_jax.models',
  'vit_jax.weights.released',
  'vit_jax.weights.fit',
  'vit_jax.weights.resample',
  'vit_jax.system.sharding',
  'vit_jax.train.step',
  'vit_jax.train.loop',
  'vit_jax.run.orbax_io',
  'vit_jax.run.workdir',
  'vit_jax.train.metrics',
  'vit_jax.main',
  'vit_jax.inference_time',
  'vit_jax.data',
  'vit_jax.predict',
  'vit_jax.inference.predictor',
  'vit_jax.weights.sources',
  'vit_jax.export',
  'vit_jax.analysis.report',
  'vit_jax.experiment',
]
# More commands: each defines absl flags that clash with main's when imported together, so
# they are only checked one per process (for TensorFlow).
COMMANDS = ['vit_jax.analyze', 'vit_jax.sweep']
TORCH_WORLD = ('torch', 'transformers', 'safetensors', 'timm')
TENSORFLOW = ('tensorflow', 'tensorflow_datasets')


def _loaded_by_each(modules, packages):
  """{module: the first modules of `packages` that importing it loaded}, importing `modules`
  one after another in one fresh interpreter (a start costs ~2.5 s; this is one for all)."""
  code = (
    'import importlib, json, sys\n'
    f'packages = {tuple(packages)!r}\n'
    'loaded = lambda: {m for m in sys.modules if m.split(".")[0] in packages}\n'
    'result = {}\n'
    f'for name in {list(modules)!r}:\n'
    '  before = loaded()\n'
    '  importlib.import_module(name)\n'
    '  result[name] = sorted(loaded() - before)[:5]\n'
    'print(json.dumps(result))\n'
  )
  result = subprocess.run(
    [sys.executable, '-c', code], capture_output=True, text=True, timeout=120, check=False
  )
  assert result.returncode == 0, result.stderr[-2000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def tensorflow_loaded_by():
  """What importing each core module loads of TensorFlow, as if imported alone: the modules in
  one interpreter; those after a module that loaded TensorFlow (whose own import could then
  not show it) each in a fresh one; each command in its own (their absl flags clash)."""
  loaded = _loaded_by_each(CORE_MODULES, TENSORFLOW)
  offenders = [i for i, m in enumerate(CORE_MODULES) if loaded[m]]
  alone = CORE_MODULES[offenders[0] + 1 :] if offenders else []
  for module in alone + COMMANDS:
    loaded.update(_loaded_by_each([module], TENSORFLOW))
  return loaded


@pytest.mark.parametrize('module', CORE_MODULES + COMMANDS)
def test_core_module_does_not_import_tensorflow(tensorflow_loaded_by, module):
  assert not tensorflow_loaded_by[module], f'{module} imported {tensorflow_loaded_by[module]}'


def test_core_works_with_tensorflow_unimportable():
  # None in sys.modules makes `import tensorflow` fail and find_spec() report it absent,
  # as on a machine (like the GPU image) where TensorFlow is not installed.
  code = """
import sys
sys.modules['tensorflow'] = sys.modules['tensorflow_datasets'] = None
import jax, numpy as np
from vit_jax import models
from vit_jax.weights import released
model = models.get_model('testing', num_classes=3)
variables = model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
released.save('PATH', variables['params'])
print(model.apply({'params': released.load('PATH')}, np.ones((1, 32, 32, 3))).shape)
# The training core: sharded state, one jitted step, an Orbax save and restore.
from vit_jax.run import orbax_io
from vit_jax.system import sharding
from vit_jax.train import config as config_lib
from vit_jax.train import optim, state as state_lib, step as step_lib
rules = config_lib.SHARDING_RULES['fsdp']
mesh = sharding.make_mesh({'data': 1, 'fsdp': -1, 'model': 1})
schedule = optim.make_schedule(0.1, 10, 1, 'cosine')
tx = optim.make_optimizer(config_lib.base_config(), schedule)
init = state_lib.init_fn(model, tx, (1, 32, 32, 3))
abstract, shardings = state_lib.abstract_state_and_shardings(init, mesh, rules)
state = state_lib.create_sharded(init, jax.random.key(0), shardings)
step = jax.jit(step_lib.make_train_step(model, tx, schedule, num_classes=3))
state, metrics = step(state, {'image': np.ones((2, 32, 32, 3), np.float32),
                              'label': np.array([0, 1])})
io = orbax_io.CheckpointIO('DIR/run')
io.save(state, {})
io.close()
restored, _ = orbax_io.CheckpointIO('DIR/run').restore(abstract)
loaded = sorted(m for m, v in sys.modules.items() if m.startswith('tensorflow') and v)
print(int(restored.step), loaded)
"""
  import tempfile

  # Two devices: a real (2-way FSDP) mesh, cheaper to compile for than the tests' eight.
  env = command_env(devices=2)
  with tempfile.TemporaryDirectory() as tmp:
    code = code.replace('PATH', f'{tmp}/m.npz').replace('DIR', tmp)
    result = subprocess.run(
      [sys.executable, '-c', code],
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
      env=env,
    )
  assert result.returncode == 0, result.stderr[-2000:]
  assert '(1, 3)' in result.stdout and result.stdout.strip().endswith('1 []')


def test_core_and_converters_do_not_import_torch():
  loaded = _loaded_by_each([m for m in CORE_MODULES if m != 'vit_jax.data'], TORCH_WORLD)
  assert not any(loaded.values()), {m: got for m, got in loaded.items() if got}


def test_safetensors_in_and_hf_out_work_without_torch():
  # A timm state_dict in .safetensors is read without torch (the safetensors library's NumPy
  # API) and exported to a Hugging Face folder; a .pth says that it needs torch.
  code = """
import sys
sys.modules['torch'] = sys.modules['transformers'] = sys.modules['timm'] = None
import numpy as np
from safetensors import numpy as st
from vit_jax import export
d, m = 16, 32
rng = np.random.default_rng(0)
sd = {'cls_token': np.ones((1, 1, d)), 'pos_embed': np.ones((1, 5, d)),
      'patch_embed.proj.weight': np.ones((d, 3, 16, 16)), 'patch_embed.proj.bias': np.ones(d),
      'norm.weight': np.ones(d), 'norm.bias': np.ones(d), 'head.weight': np.ones((3, d)),
      'head.bias': np.ones(3)}
for n, shape in [('norm1', (d,)), ('norm2', (d,)), ('attn.qkv', (3 * d, d)),
                 ('attn.proj', (d, d)), ('mlp.fc1', (m, d)), ('mlp.fc2', (d, m))]:
  sd[f'blocks.0.{n}.weight'] = rng.normal(size=shape)
  sd[f'blocks.0.{n}.bias'] = rng.normal(size=shape[:1])
# A timm Hub folder: its config.json gives the heads that the fused qkv does not.
st.save_file({k: v.astype(np.float32) for k, v in sd.items()}, 'DIR/timm/model.safetensors')
open('DIR/timm/config.json', 'w').write('{"architecture": "vit_base_patch16_224", '
                                        '"model_args": {"num_heads": 2}}')
print(export.export('DIR/timm', 'hf', 'DIR/hf'))
try:
  export.export('DIR/w.pth', 'npz', 'DIR/x.npz')
except ValueError as e:
  print(e)
loaded = sorted(m for m, v in sys.modules.items() if m.split('.')[0] in ('torch', 'timm') and v)
print(loaded)
"""
  import tempfile

  with tempfile.TemporaryDirectory() as tmp:
    open(f'{tmp}/w.pth', 'wb').close()
    os.mkdir(f'{tmp}/timm')
    result = subprocess.run(
      [sys.executable, '-c', code.replace('DIR', tmp)],
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
    )
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.strip().splitlines()
  assert lines[0].startswith('transformers.ViTForImageClassification.from_pretrained(')
  assert 'needs PyTorch (pip install torch)' in lines[1] and lines[2] == '[]'
