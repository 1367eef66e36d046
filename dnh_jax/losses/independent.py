"""Sub-code views of model outputs, for losses that train each sub-code on its own
characteristic.

The independent sub-networks of objective 4 (`dnh_jax.models.independent`) must not learn
which characteristics occur together, or a combination never seen in training would be
mapped near the seen ones. So sub-code c is trained by a hashing loss whose similarity is
"same label of characteristic c" and nothing else, with no term that compares all
characteristics of the whole code at once. That loss is the structured loss
(`dnh_jax.losses.structured`, "structured_<base>") with `loss.weights.whole = 0`: the mean
over characteristics of base(sub-code c, similarity = c). The registry's wrapper adds the
classifier cross-entropy (each network's classifier reads only its own features) and the
log-cosh quantization penalty (a per-bit mean), so with the independent model every term
touches the parameters of one sub-network only: the networks are trained exactly as C
separate jobs would train them, only inside one jitted step.

This module holds what both need: which base losses apply to a sub-code alone, and the
split of the model outputs into one code per characteristic.

References:
  Cao, Long, Liu and Wang, "Deep Cauchy hashing for Hamming space retrieval", CVPR 2018
  (DCH, the default base loss of configs/untrained_combo.py).
"""

from __future__ import annotations

from typing import Any, Mapping

from dnh_jax.data.schema import Schema

# Base losses that act on a code alone (no code classifier, no whole-code class rule), so
# they can be applied to one sub-code with the characteristic as the similarity rule.
BASE_LOSSES = ("dpsh", "dsh", "hashnet", "dch", "csq", "orthohash")


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
