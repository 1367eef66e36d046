"""`build_model(model_cfg, schema)`: the config's `model` section -> a Flax module.

Choices resolve through explicit dicts (BACKBONES, HEADS, DTYPES) that raise with the valid
names, so a typo fails when the config is loaded, not mid-run. A head builder receives the
validated config and schema and returns the whole network; that is where a head with its
own trunks (one backbone per characteristic, no shared parameters) plugs in.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import ml_collections

from dnh_jax.data.schema import Schema
from dnh_jax.models import backbones
from dnh_jax.models import heads
from dnh_jax.models import independent
from dnh_jax.models.settings import (DTYPES, class_sizes, code_classes,  # noqa: F401
                                     compute_dtype, pre_hash_factory, segments)

def _shared_trunk(model_cfg: ml_collections.ConfigDict, head_cls, *args,
                  **kwargs) -> nn.Module:
  """One backbone feeding `head_cls(*args, ...)`, with the options every such head takes."""
  dtype = compute_dtype(model_cfg)
  head = head_cls(*args, classifier=bool(model_cfg.classifier),
                  pre_hash=pre_hash_factory(model_cfg), dtype=dtype, name="head", **kwargs)
  return heads.HashingNetwork(
      backbones.get_backbone(model_cfg.backbone, dtype, mixstyle_p=float(model_cfg.mixstyle)),
      head)


def _flat(model_cfg: ml_collections.ConfigDict, schema: Schema) -> nn.Module:
  if int(model_cfg.bits) < 1:
    raise ValueError(f"model.bits={model_cfg.bits} must be >= 1")
  return _shared_trunk(model_cfg, heads.FlatHead, int(model_cfg.bits), class_sizes(schema),
                       code_classes=code_classes(model_cfg, schema))


def _structured(model_cfg: ml_collections.ConfigDict, schema: Schema) -> nn.Module:
  return _shared_trunk(model_cfg, heads.StructuredHead, segments(model_cfg, schema),
                       class_sizes(schema), branch_width=int(model_cfg.branch_width),
                       code_classes=code_classes(model_cfg, schema))


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
