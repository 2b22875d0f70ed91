"""Part (a) of benchmarks/accelerator_check.py: attention_impl='auto' against 'xla'.

For each case, one model with the same params and inputs is run with both implementations:
logits and the gradient of a cross-entropy loss with respect to every parameter, each compared
as max |auto - xla| / max |xla| (one jitted program per implementation). 'auto' is cuDNN's
fused attention on a GPU in bfloat16 (where cuDNN accepts the shapes, else xla:
vit_jax.models.dot_product.cudnn_refusal), 'per_head' on a CPU; the table says which it took.
"""

import time

# The bound per compute dtype. bfloat16: the two forms round differently (operands <= 2**-8
# relative, ~1e-2 after a few layers, as tests/test_model_attention.py's bfloat16 bound);
# float32: two float32 programs (LAYER_TOL there).
TOLERANCE = {'bfloat16': 3e-2, 'float32': 1e-5}


def cases(dry_run: bool) -> list[dict]:
  """The cases: ViT-B/16 widths (2 blocks: attention is what is compared, depth only adds
  compile time) at 224px (197 tokens) and 384px (577); a MAP head; a relative position bias.
  The dry run: the registry's 'testing' ViT at 32px / 48px (5 / 10 tokens)."""
  model, small, large = ('testing', 32, 48) if dry_run else ('ViT-B_16', 224, 384)
  layers = {} if dry_run else {'num_layers': 2}
  base = dict(model=model, image_size=small, overrides=layers, dtype='bfloat16')
  return [
    dict(base, name='class token', dtype='float32'),
    dict(base, name='class token'),
    dict(base, name='class token', image_size=large),
    dict(base, name='MAP head', overrides=dict(layers, classifier='map')),
    dict(base, name='relative bias', overrides=dict(layers, posemb='relative_bias')),
  ]


class _Decisions:
  """Records what 'auto' decided for each cuDNN-eligible attention call while tracing (wraps
  dot_product.cudnn_refusal, which `attend` calls only for 'auto' resolved to cudnn)."""

  def __init__(self, dot_product):
    self.module, self.original, self.refusals = dot_product, dot_product.cudnn_refusal, []

  def __enter__(self):
    def recording(*args):
      self.refusals.append(self.original(*args))
      return self.refusals[-1]

    self.module.cudnn_refusal = recording
    return self

  def __exit__(self, *exc):
    self.module.cudnn_refusal = self.original


def _took(resolved: str, refusals: list) -> tuple[str, str]:
  """(what 'auto' ran, a note) from the resolution and the recorded cuDNN decisions."""
  if resolved != 'cudnn':
    return resolved, ''
  refused = [r for r in refusals if r is not None]
  if not refused:
    return 'cudnn', f'{len(refusals)} attention calls'
  took = 'xla (fallback)' if len(refused) == len(refusals) else 'cudnn + xla (fallback)'
  return took, f'{len(refused)}/{len(refusals)} refused: {refused[0][:120]}'


def _random_params(shapes, rng):
  """Params for the ParamSpecs `shapes` (built on the host: no init program to compile),
  nothing zero, unlike at init (the head would block every gradient below it): kernels
  N(0, 1/fan_in) (fan_in = D for the [D, heads, head_dim] q/k/v kernels), LayerNorm scales 1,
  biases 0, embeddings, tokens and relative-bias tables N(0, 0.5**2)."""
  import flax.linen as nn
  import jax
  import numpy as np

  def value(path, spec):
    name = jax.tree_util.keystr(path)
    if name.endswith("['scale']"):
      return np.ones(spec.shape, spec.dtype)
    if name.endswith("['bias']"):
      return np.zeros(spec.shape, spec.dtype)
    if name.endswith("['kernel']"):
      heads = any(f"['{n}']" in name for n in ('query', 'key', 'value'))
      fan_in = spec.shape[0] if heads else np.prod(spec.shape[:-1])
      return rng.normal(0, fan_in**-0.5, spec.shape).astype(spec.dtype)
    return rng.normal(0, 0.5, spec.shape).astype(spec.dtype)

  return jax.device_put(jax.tree_util.tree_map_with_path(value, nn.meta.unbox(shapes)))


def _run_case(case: dict, batch: int) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from vit_jax import models
  from vit_jax.models import dot_product

  dtype = jnp.dtype(case['dtype'])
  make = lambda impl: models.get_model(
    case['model'], num_classes=10, dtype=dtype, attention_impl=impl, **case['overrides']
  )
  size = case['image_size']
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(-1, 1, (batch, size, size, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, batch), jnp.int32)
  params = _random_params(jax.eval_shape(make('xla').init, jax.random.key(0), images), rng)

  def logits_and_grads(impl):
    def loss(p):
      logits = make(impl).apply(p, images)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits

    return jax.jit(jax.grad(loss, has_aux=True))(params)

  with _Decisions(dot_product) as decisions:
    auto_grads, auto_logits = logits_and_grads('auto')
  xla_grads, xla_logits = logits_and_grads('xla')
  err = lambda a, b: float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
  flat = lambda tree: jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])
  probe = make('auto')
  resolved = dot_product.resolve_implementation('auto', dtype, probe.hidden_size // probe.num_heads)
  took, note = _took(resolved, decisions.refusals)
  prefix = 1 if probe.classifier == 'token' else 0
  return dict(
    tokens=prefix + (size // probe.patch_size[0]) ** 2,
    took=took,
    note=note,
    forward=err(auto_logits, xla_logits),
    gradient=err(flat(auto_grads), flat(xla_grads)),
  )


def run(dry_run: bool, batch: int) -> bool:
  """Prints part (a)'s table; True when every case is within its tolerance."""
  print('\n### (a) attention_impl=auto vs xla: logits and parameter gradients\n', flush=True)
  print(
    '| case | model | tokens | dtype | auto took | logits err | gradient err | tolerance | '
    'result | s | note |'
  )
  print('| --- | --- | ---: | --- | --- | ---: | ---: | ---: | --- | ---: | --- |')
  ok = True
  for case in cases(dry_run):
    start = time.perf_counter()
    try:
      r = _run_case(case, batch)
    except Exception as e:  # one failing case must not hide the others' numbers.
      ok = False
      message = f'{type(e).__name__}: {e}'.splitlines()[0][:200]
      print(
        f'| {case["name"]} | {case["model"]} | - | {case["dtype"]} | - | - | - | - | FAIL | '
        f'{time.perf_counter() - start:.1f} | {message} |',
        flush=True,
      )
      continue
    tol = TOLERANCE[case['dtype']]
    passed = r['forward'] <= tol and r['gradient'] <= tol
    ok &= passed
    print(
      f'| {case["name"]} | {case["model"]} | {r["tokens"]} | {case["dtype"]} | {r["took"]} | '
      f'{r["forward"]:.2e} | {r["gradient"]:.2e} | {tol:.0e} | {"PASS" if passed else "FAIL"} | '
      f'{time.perf_counter() - start:.1f} | {r["note"]} |',
      flush=True,
    )
  return ok
