"""XLA:CPU backend flags chosen for the dtype and the CPU, not inherited.

XLA:CPU picks a library per op (YNNPACK fusions for dots by default in jax 0.10, oneDNN only
when asked, its own Eigen kernels otherwise), and which is fastest depends on the CPU's
matrix units. RULES holds the settings measured to win (benchmarks/vs_timm.py, ratios to timm
in the same sitting; one device per core, batch 32); any CPU and dtype without a rule keeps
XLA's defaults. What was measured:

  Intel Xeon, AVX-512 + AVX512-BF16, no AMX (2 cores, 2026-12):
    bfloat16 YNNPACK off, two sittings: Ti/16 infer 0.96x -> 1.14x / 1.12x, train 0.97x /
             0.96x -> 0.94x / 0.92x (a small loss); S/16 infer 1.05x / 1.02x -> 1.32x /
             1.17x, train 0.66x / 1.03x -> 1.13x timm autocast bf16, and S/16 train's peak
             memory 14-16 -> 8.2 GB: RULES. Single bf16 matmuls of ViT-S/16 ([6304x384]x[384x1536]): YNNPACK
             156 GFLOP/s, Eigen 206, oneDNN 147, torch 187 (benchmarks/bf16_matmul.py).
    float32  YNNPACK off: infer 1.07x -> 0.84x, train 0.73x -> 0.64x: worse, default kept.
             oneDNN dot fusion: crashes float32 inference (SIGILL after "partition compile
             failed"; ViT-Ti/16 and S/16), never used for float32.
    bfloat16 oneDNN dot fusion: infer 0.96x -> 0.97x, train 0.95x -> 0.95x: no gain.
  Intel Xeon with AMX (issue 21's measurement, one sitting, loaded machine):
    bfloat16 oneDNN dot fusion: train 0.98x -> 1.35x timm bf16 (oneDNN reaches AMX): RULES.
    float32  YNNPACK off: inference +13% (train not measured), not confirmed: default kept;
             oneDNN crashes float32 programs there too.
  AMD Zen 4 (AVX512-BF16, no AMX): nothing measured against the defaults, so no rule (the
  Intel rule names its vendor rather than guess).
A process computing float32 and bfloat16 gets only flags every dtype's rules share.

Where vit_jax owns the process (`main`, `predict`, `analyze`, `inference_time`, the
benchmarks; `experiment` and `Session` when called before JAX starts) `cpu_devices.prepare`
applies them; library users call `vit_jax.system.cpu_devices.prepare(dtypes=...)` first thing.
A user's XLA_FLAGS naming a YNNPACK or oneDNN flag wins: nothing is added then.
"""

import dataclasses
import mmap
import os
from typing import Iterable, Optional

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Rule:
  needs: tuple[str, ...]  # /proc/cpuinfo flags (and 'vendor:<vendor_id>') the CPU must have.
  lacks: tuple[str, ...]  # flags it must not have.
  dtype: str  # the compute dtype ('float32', 'bfloat16') the flags are for.
  flags: tuple[str, ...]
  why: str

  def matches(self, cpu: frozenset[str], dtype: str) -> bool:
    return dtype == self.dtype and cpu.issuperset(self.needs) and not cpu.intersection(self.lacks)


ONEDNN_DOTS = ('--xla_cpu_use_onednn=true', '--xla_cpu_experimental_onednn_fusion_type=dot')
YNNPACK_OFF = ('--xla_cpu_experimental_ynn_fusion_type=',)

RULES = (
  Rule(
    ('amx_bf16',),
    (),
    'bfloat16',
    ONEDNN_DOTS,
    'AMX Xeon, ViT-Ti/16 bf16 train step 0.98x -> 1.35x timm autocast bf16 (issue 21)',
  ),
  Rule(
    ('vendor:GenuineIntel', 'avx512_bf16'),
    ('amx_bf16',),
    'bfloat16',
    YNNPACK_OFF,
    'Xeon with AVX512-BF16, no AMX: ViT-S/16 bf16 infer 1.05x -> 1.32x, train 0.66x -> 1.13x',
  ),
)

# Flag families a user's XLA_FLAGS may already decide (then vit_jax adds none of RULES').
_USER_DECIDES = ('ynn', 'onednn')


def cpuinfo_fields(cpuinfo: Optional[str] = None) -> Optional[dict[str, str]]:
  """The first processor's fields of /proc/cpuinfo (`cpuinfo`: its text); None where there is
  none (not Linux)."""
  if cpuinfo is None:
    try:
      with open('/proc/cpuinfo', encoding='utf-8') as f:
        cpuinfo = f.read()
    except OSError:
      return None
  fields = {}
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(':')
    fields.setdefault(key.strip(), value.strip())
  return fields


def cpu_isa(cpuinfo: Optional[str] = None) -> frozenset[str]:
  """The CPU's ISA flags ('avx512_bf16', 'amx_bf16', ...) and 'vendor:<vendor_id>' (e.g.
  'vendor:GenuineIntel'), as RULES name them; empty where unknown."""
  fields = cpuinfo_fields(cpuinfo) or {}
  vendor = [f'vendor:{fields["vendor_id"]}'] if fields.get('vendor_id') else []
  return frozenset(fields.get('flags', '').split() + vendor)


def choose(dtypes: Iterable, isa: Optional[frozenset[str]] = None) -> tuple[str, ...]:
  """The flags for a process computing in every dtype of `dtypes` on a CPU with `isa`.

  A flag is chosen only when every dtype's rule has it: flags measured for bfloat16 must not
  reach the float32 programs of a process that runs both (see the module docstring).
  """
  isa = cpu_isa() if isa is None else isa
  names = {jnp.dtype(d).name for d in dtypes} or {'float32'}
  per_dtype = [{f for r in RULES if r.matches(isa, name) for f in r.flags} for name in names]
  common = set.intersection(*per_dtype)
  return tuple(dict.fromkeys(f for r in RULES for f in r.flags if f in common))


def known_to_jaxlib(flag: str) -> bool:
  """Whether the installed jaxlib names `flag` (XLA aborts the process on an unknown flag in
  XLA_FLAGS, so a flag that a later jaxlib drops must not be passed)."""
  import jaxlib

  name = flag.lstrip('-').split('=')[0].encode()
  folder = os.path.dirname(jaxlib.__file__)
  for file in sorted(os.listdir(folder)):
    if not file.endswith('.so'):
      continue
    with open(os.path.join(folder, file), 'rb') as f:
      try:
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
          if data.find(name) >= 0:
            return True
      except ValueError:  # an empty file cannot be mapped.
        continue
  return False


def user_decides() -> bool:
  """Whether XLA_FLAGS already names a YNNPACK or oneDNN flag (the user's choice wins)."""
  return any(word in os.environ.get('XLA_FLAGS', '') for word in _USER_DECIDES)


def apply(dtypes: Iterable, isa: Optional[frozenset[str]] = None) -> tuple[str, ...]:
  """Adds `choose(dtypes, isa)` to XLA_FLAGS (before the CPU backend starts: it reads them
  once). Returns the flags added: none when the user's XLA_FLAGS decides the matmul library
  or the installed jaxlib does not know a flag."""
  if user_decides():
    return ()
  current = os.environ.get('XLA_FLAGS', '')
  flags = choose(dtypes, isa)
  if not flags or not all(known_to_jaxlib(f) for f in flags):
    return ()
  os.environ['XLA_FLAGS'] = ' '.join([current, *flags]).strip()
  return flags
