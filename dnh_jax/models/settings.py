"""Settings of the config's `model` section that every head builder shares.

The compute dtype, the sub-code lengths, the pre-hash layer and the code classifier's
classes: `build.py` (flat and structured heads) and `independent.py` (one network per
characteristic) both read them from here, so neither imports the other.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from dnh_jax.data import similarity
from dnh_jax.data.schema import Schema
from dnh_jax.models import fuzzy
from dnh_jax.models import heads

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(model_cfg: ml_collections.ConfigDict):
  """model.dtype -> jnp dtype; raises a ValueError listing valid names."""
  if model_cfg.dtype not in DTYPES:
    raise ValueError(f"model.dtype={model_cfg.dtype!r} is not valid; choose one of "
                     f"{sorted(DTYPES)}")
  return DTYPES[model_cfg.dtype]


def segments(model_cfg: ml_collections.ConfigDict, schema: Schema) -> tuple[int, ...]:
  """Sub-code lengths, one per characteristic in schema order.

  `model.segments` when given (must have one entry per characteristic, each >= 1, summing
  to `model.bits`); otherwise `model.bits` split equally, the first `bits % n`
  characteristics getting one extra bit (48 bits, 3 characteristics: 16, 16, 16;
  16 bits: 6, 5, 5).
  """
  n = len(schema.names)
  bits = int(model_cfg.bits)
  given = tuple(int(s) for s in model_cfg.segments)
  if given:
    if len(given) != n or min(given) < 1 or sum(given) != bits:
      raise ValueError(
          f"model.segments={given} must give one length >= 1 per characteristic "
          f"{list(schema.names)} summing to model.bits={bits}")
    return given
  if bits < n:
    raise ValueError(f"model.bits={bits} is fewer than one bit per characteristic "
                     f"{list(schema.names)}")
  return tuple(bits // n + (1 if i < bits % n else 0) for i in range(n))


def code_classes(model_cfg: ml_collections.ConfigDict, schema: Schema) -> int:
  """Width of outputs["code_logits"]: classes of the rule `model.code_classifier` (0: none)."""
  rule = model_cfg.code_classifier
  if not rule:
    return 0
  try:
    return similarity.num_classes(schema, rule)
  except ValueError as e:
    raise ValueError(f"model.code_classifier={rule!r}: {e}") from None


def pre_hash_factory(model_cfg: ml_collections.ConfigDict) -> heads.PreHashFactory | None:
  """The module inserted before each hash layer (None: plain dense -> tanh).

  model.fuzzy=True inserts the fuzzy inference layer (`dnh_jax.models.fuzzy`); its state
  is read with `fuzzy.fuzzy_states(model, variables, images)`.
  """
  return fuzzy.pre_hash_factory(model_cfg)


def class_sizes(schema: Schema) -> tuple[tuple[str, int], ...]:
  return tuple((c.name, c.size) for c in schema.characteristics)
