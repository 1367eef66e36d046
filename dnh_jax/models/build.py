"""`build_model(model_cfg, schema)`: the config's `model` section -> a Flax module.

Choices resolve through explicit dicts (BACKBONES, HEADS, DTYPES) that raise with the valid
names, so a typo fails when the config is loaded, not mid-run. A head builder receives the
validated config and schema and returns the whole network; that is where a head with its
own trunks (one backbone per characteristic, no shared parameters) plugs in.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from dnh_jax.data.schema import Schema
from dnh_jax.losses import pairs
from dnh_jax.models import backbones
from dnh_jax.models import fuzzy
from dnh_jax.models import heads
from dnh_jax.models import independent

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
  rule = model_cfg.get("code_classifier", "")
  if not rule:
    return 0
  try:
    return pairs.num_classes(schema, rule)
  except ValueError as e:
    raise ValueError(f"model.code_classifier={rule!r}: {e}") from None


def pre_hash_factory(model_cfg: ml_collections.ConfigDict) -> heads.PreHashFactory | None:
  """The module inserted before each hash layer (None: plain dense -> tanh).

  model.fuzzy=True inserts the fuzzy inference layer (`dnh_jax.models.fuzzy`); its state
  is read with `fuzzy.fuzzy_states(model, variables, images)`.
  """
  return fuzzy.pre_hash_factory(model_cfg)


def _class_sizes(schema: Schema) -> tuple[tuple[str, int], ...]:
  return tuple((c.name, c.size) for c in schema.characteristics)


def _flat(model_cfg: ml_collections.ConfigDict, schema: Schema) -> nn.Module:
  dtype = compute_dtype(model_cfg)
  if int(model_cfg.bits) < 1:
    raise ValueError(f"model.bits={model_cfg.bits} must be >= 1")
  head = heads.FlatHead(int(model_cfg.bits), _class_sizes(schema),
                        classifier=bool(model_cfg.classifier),
                        code_classes=code_classes(model_cfg, schema),
                        pre_hash=pre_hash_factory(model_cfg), dtype=dtype, name="head")
  return heads.HashingNetwork(
      backbones.get_backbone(model_cfg.backbone, dtype, mixstyle_p=float(model_cfg.mixstyle)),
      head)


def _structured(model_cfg: ml_collections.ConfigDict, schema: Schema) -> nn.Module:
  dtype = compute_dtype(model_cfg)
  head = heads.StructuredHead(segments(model_cfg, schema), _class_sizes(schema),
                              branch_width=int(model_cfg.get("branch_width", 256)),
                              classifier=bool(model_cfg.classifier),
                              code_classes=code_classes(model_cfg, schema),
                              pre_hash=pre_hash_factory(model_cfg), dtype=dtype, name="head")
  return heads.HashingNetwork(
      backbones.get_backbone(model_cfg.backbone, dtype, mixstyle_p=float(model_cfg.mixstyle)),
      head)


# model.head -> builder(model_cfg, schema) -> the whole network.
HEADS: dict[str, Callable[[ml_collections.ConfigDict, Schema], nn.Module]] = {
    "flat": _flat,
    "structured": _structured,
    "independent": independent.build_independent,   # one backbone per characteristic
}


def build_model(model_cfg: ml_collections.ConfigDict, schema: Schema) -> nn.Module:
  """The network of the config's `model` section.

  Args:
    model_cfg: `config.model` (see `dnh_jax.config_lib.base_config`).
    schema: the dataset's characteristics.

  Returns:
    A linen module used as::

      variables = model.init({"params": k, "dropout": k}, images, train=False)
      outputs, state = model.apply(variables, images, train=True,
                                   rngs={"dropout": k}, mutable=["batch_stats"])

    with images float32[B, H, W, 1] and outputs a dict of float32 arrays:
    "codes" [B, K] (tanh), "code_preactivations" [B, K] (pre-tanh), "features" [B, F],
    "subcodes" {characteristic: [B, Kc]} (structured head), "logits"
    {characteristic: [B, V]} (model.classifier; softmax logits for single-label,
    per-label sigmoid logits for multi-label characteristics), "code_logits" [B, C]
    (model.code_classifier: a linear classifier on the straight-through sign of the codes).

  Raises:
    ValueError: unknown backbone / head / dtype, or inconsistent bits and segments; the
      message names the field and the valid choices.
  """
  if model_cfg.head not in HEADS:
    raise ValueError(f"model.head={model_cfg.head!r} is not valid; choose one of "
                     f"{sorted(HEADS)}")
  if model_cfg.backbone not in backbones.BACKBONES:
    raise ValueError(f"model.backbone={model_cfg.backbone!r} is not valid; choose one of "
                     f"{sorted(backbones.BACKBONES)}")
  compute_dtype(model_cfg)
  return HEADS[model_cfg.head](model_cfg, schema)
