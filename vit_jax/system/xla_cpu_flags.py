"""XLA:CPU backend flags chosen for the dtype and the CPU, not inherited.

XLA:CPU picks its matmul library per op (YNNPACK by default for float32 dots in jax 0.10;
oneDNN only when asked), and which is fastest depends on the CPU's matrix units. RULES holds
the settings measured to win (benchmarks/vs_timm.py, ratios to timm on the same machine); any
CPU and dtype without a row keeps XLA's defaults. What was measured and left at the default:

  Intel Xeon, AVX-512 + AVX512-BF16, no AMX (2 cores, Ti/16 batch 32, 2026-12):
    float32  YNNPACK off (`--xla_cpu_experimental_ynn_fusion_type=`): infer 1.07x -> 0.84x,
             train 0.73x -> 0.64x timm: worse, default kept.
    bfloat16 oneDNN dot fusion: infer 0.96x -> 0.97x, train 0.95x -> 0.95x: the same, default.
  Intel Xeon with AMX (issue 21's measurement, one sitting, loaded machine):
    bfloat16 oneDNN dot fusion: train 0.98x -> 1.35x timm bf16 (oneDNN reaches AMX): RULES.
    float32  YNNPACK off: inference +13% (train not measured), not confirmed: default kept;
             the oneDNN flags crash float32 programs there (SIGILL, "partition compile
             failed"), so a process that also computes float32 gets no oneDNN flags.

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
  isa: str  # a /proc/cpuinfo flag the CPU must have, e.g. 'amx_bf16'.
  dtype: str  # the compute dtype ('float32', 'bfloat16') the flags are for.
  flags: tuple[str, ...]
  why: str


ONEDNN_DOTS = ('--xla_cpu_use_onednn=true', '--xla_cpu_experimental_onednn_fusion_type=dot')

RULES = (
  Rule(
    'amx_bf16',
    'bfloat16',
    ONEDNN_DOTS,
    'AMX Xeon, ViT-Ti/16 bf16 train step 0.98x -> 1.35x timm autocast bf16 (issue 21)',
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
  """The CPU's ISA flags ('avx512_bf16', 'amx_bf16', ...); empty where unknown."""
  return frozenset((cpuinfo_fields(cpuinfo) or {}).get('flags', '').split())


def choose(dtypes: Iterable, isa: Optional[frozenset[str]] = None) -> tuple[str, ...]:
  """The flags for a process computing in every dtype of `dtypes` on a CPU with `isa`.

  A flag is chosen only when every dtype's rule has it: flags measured for bfloat16 must not
  reach the float32 programs of a process that runs both (see the module docstring).
  """
  isa = cpu_isa() if isa is None else isa
  names = {jnp.dtype(d).name for d in dtypes} or {'float32'}
  per_dtype = [
    {f for r in RULES if r.dtype == name and r.isa in isa for f in r.flags} for name in names
  ]
  common = set.intersection(*per_dtype)
  return tuple(f for r in RULES for f in r.flags if f in common)


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
