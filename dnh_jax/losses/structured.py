"""Structured codes (modality | organ | disease): a hashing loss per sub-code plus one on
the whole code.

The structured head (`dnh_jax.models.heads.StructuredHead`) emits one sub-code per
characteristic, b = [b_modality ; b_organ ; b_disease]. Each sub-code is trained by a
hashing loss on *its own* characteristic (pairs are similar when they agree on it), so
the Hamming distance of a sub-code measures agreement on that characteristic; this is
what makes weighting the sub-distances at query time (preferential retrieval)
meaningful. The whole code is trained by the same base loss on the full-label similarity
(`loss.similarity`, "all" by default: every characteristic equal). The per-branch
classifiers get their cross-entropy from the shared `loss.classification` term that
`dnh_jax.losses.get_loss` adds to every loss.

The public reference code of MODHash trains its hash heads with no hashing loss at all
(only the classifiers); here every sub-code has one.

Loss names: "structured_<base>" for every base in BASE_LOSSES, and "structured" (base
DCH). loss.weights holds the base loss's weights plus
  subcode [1.0]: weight of the mean over characteristics of the sub-code losses;
  whole [1.0]: weight of the whole-code loss.
With a flat head and loss.weights.subcode = 0 the same loss is the matching flat-code
baseline: the base loss on full-label similarity plus the classifiers. With
loss.weights.whole = 0 and the independent sub-networks (`dnh_jax.models.independent`,
objective 4) every term touches one sub-network only: sub-code c is trained on "same
label of characteristic c" and nothing else, as C separate jobs would train them.

References:
  MODHash: structured modality / organ / disease hash codes for preferential medical
  image retrieval, Scientific Reports 2025 (objective 2).
  Cao, Long, Liu and Wang, "Deep Cauchy hashing for Hamming space retrieval", CVPR 2018
  (DCH, the default base loss).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from dnh_jax.data import similarity as pairs
from dnh_jax.data.schema import Schema
from dnh_jax.losses import common

LossFn = Callable[..., tuple[jnp.ndarray, dict[str, jnp.ndarray]]]

# Base losses that act on a code alone (no code classifier, no whole-code class rule), so
# they apply to a sub-code with the characteristic as the similarity rule.
BASE_LOSSES = ("dpsh", "dsh", "hashnet", "dch", "csq", "orthohash")
PREFIX = "structured_"
DEFAULT_BASE = "dch"
# Weights of the structured combination, on top of the base loss's own.
STRUCTURE_WEIGHTS = {"subcode": 1.0, "whole": 1.0}


def subcode_outputs(outputs: Mapping[str, Any], schema: Schema) -> dict[str, dict]:
  """Splits the model outputs into one {"codes", "code_preactivations"} per characteristic.

  Args:
    outputs: model outputs with "subcodes" {name: float32[B, K_c]} and optionally
      "code_preactivations" float32[B, K] (sub-codes concatenated in schema order).
    schema: the dataset schema.

  Returns:
    {name: {"codes": float32[B, K_c], "code_preactivations": float32[B, K_c]}}
    ("code_preactivations" only when the outputs have them).

  Raises:
    ValueError: the model has no sub-codes (a flat head) or misses a characteristic.
  """
  if "subcodes" not in outputs:
    raise ValueError("a per-characteristic loss needs outputs['subcodes']; use "
                     "model.head='independent' or 'structured'; the model gave "
                     f"{sorted(outputs)}")
  subcodes = outputs["subcodes"]
  missing = [n for n in schema.names if n not in subcodes]
  if missing:
    raise ValueError(f"outputs['subcodes'] lacks characteristics {missing}; "
                     f"got {sorted(subcodes)}")
  out, offset = {}, 0
  z = outputs.get("code_preactivations")
  for name in schema.names:
    bits = subcodes[name].shape[-1]
    out[name] = {"codes": subcodes[name]}
    if z is not None:
      out[name]["code_preactivations"] = z[:, offset:offset + bits]
    offset += bits
  return out


def split_weights(cfg: Any) -> tuple[dict[str, float], ml_collections.ConfigDict]:
  """Separates loss.weights into the structure weights and the base loss's weights.

  Args:
    cfg: config.loss.

  Returns:
    ({"subcode": w, "whole": w}, a copy of cfg whose weights hold only the rest).

  Raises:
    ValueError: a negative structure weight.
  """
  given = cfg.get("weights", None)
  given = given.to_dict() if hasattr(given, "to_dict") else dict(given or {})
  structure = {k: float(given.pop(k, v)) for k, v in STRUCTURE_WEIGHTS.items()}
  for k, v in structure.items():
    if not v >= 0:
      raise ValueError(f"loss.weights.{k}={v} must be >= 0")
  base_cfg = ml_collections.ConfigDict(cfg.to_dict() if hasattr(cfg, "to_dict") else
                                       dict(cfg))
  base_cfg.weights = ml_collections.ConfigDict(given)
  return structure, base_cfg


def subcode_distances(subcode: jnp.ndarray, s: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Mean binary Hamming distance of a sub-code over agreeing / disagreeing pairs.

  Args:
    subcode: float[B, Kc] real sub-codes.
    s: float32[B, B] pair similarity on the sub-code's characteristic.

  Returns:
    (same, other) float32 scalars over the off-diagonal pairs (0 where there is none).
  """
  b = common.binarize(subcode.astype(jnp.float32))
  hamming = 0.5 * (b.shape[-1] - b @ b.T)
  off = common.off_diagonal(b.shape[0])
  return common.masked_mean(hamming, off * s), common.masked_mean(hamming, off * (1.0 - s))


def structured(base_fn: LossFn, base_name: str) -> LossFn:
  """The structured loss over a registry base loss.

  Args:
    base_fn: a registry loss, called as base_fn(outputs, labels, *, cfg, schema, step, key)
      and reading `cfg.similarity` for its pair similarity or classes.
    base_name: its registry name (the base's weights resolve against its defaults).

  Returns:
    loss_fn(outputs, labels, *, cfg, schema, step, key) -> (loss, metrics) with
    loss = subcode * mean_c base(sub-code c, similarity=c)
         + whole * base(whole code, similarity=cfg.similarity).
    Metrics: "structured/subcode_<c>", "structured/whole" (unweighted), and
    "dist/<c>_same", "dist/<c>_other": the mean binary Hamming distance of sub-code c over
    pairs that agree / disagree on c. A flat head (no sub-codes) needs subcode = 0.
  """

  def loss_fn(outputs: Mapping[str, Any], labels: Mapping[str, jnp.ndarray], *, cfg: Any,
              schema: Schema, step: jnp.ndarray, key: jax.Array):
    structure, base_cfg = split_weights(cfg)
    base_cfg.name = base_name
    total, metrics = jnp.zeros((), jnp.float32), {}
    if structure["subcode"] > 0:
      if "subcodes" not in outputs:
        raise ValueError(f"loss {cfg.name!r} with loss.weights.subcode="
                         f"{structure['subcode']} needs sub-codes (outputs['subcodes']); "
                         "set model.head='structured', or loss.weights.subcode=0 for a "
                         "flat code")
      parts = subcode_outputs(outputs, schema)
      per_char = []
      for i, name in enumerate(schema.names):
        base_cfg.similarity = name
        value, _ = base_fn(parts[name], labels, cfg=base_cfg, schema=schema, step=step,
                           key=jax.random.fold_in(key, i))
        per_char.append(value)
        metrics[f"structured/subcode_{name}"] = value
        s = pairs.pair_similarity(labels, schema, name)
        same, other = subcode_distances(jax.lax.stop_gradient(parts[name]["codes"]), s)
        metrics[f"dist/{name}_same"], metrics[f"dist/{name}_other"] = same, other
      total = total + structure["subcode"] * sum(per_char) / len(per_char)
    if structure["whole"] > 0:
      base_cfg.similarity = cfg.similarity
      value, _ = base_fn(outputs, labels, cfg=base_cfg, schema=schema, step=step,
                         key=jax.random.fold_in(key, len(schema.names)))
      metrics["structured/whole"] = value
      total = total + structure["whole"] * value
    return total, metrics

  return loss_fn


def register(losses: dict[str, LossFn], default_weights: dict[str, dict[str, float]]):
  """Adds "structured_<base>" for every base in BASE_LOSSES and "structured" (DCH).

  Args:
    losses: the registry's LOSSES (updated in place).
    default_weights: the registry's DEFAULT_WEIGHTS (updated in place: the base's weights
      plus STRUCTURE_WEIGHTS).
  """
  for base in BASE_LOSSES:
    if base not in losses:
      raise ValueError(f"structured losses: base loss {base!r} is not registered; "
                       f"registered: {sorted(losses)}")
    for name in ([PREFIX + base] + (["structured"] if base == DEFAULT_BASE else [])):
      losses[name] = structured(losses[base], base)
      default_weights[name] = {**default_weights[base], **STRUCTURE_WEIGHTS}
