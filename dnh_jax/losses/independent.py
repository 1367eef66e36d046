"""Per-characteristic hashing losses: each sub-code learns only its own characteristic.

The independent sub-networks of objective 4 (`dnh_jax.models.independent`) must not learn
which characteristics occur together, or a combination never seen in training would be
mapped near the seen ones. So sub-code c is trained with a pair (or class-wise) hashing
loss whose similarity is "same label of characteristic c" and nothing else; the whole code
gets no term that compares all characteristics at once. With the independent model the
C terms then touch disjoint parameters, so the networks are trained exactly as C separate
jobs would train them, only inside one jitted step.

`per_characteristic(base_fn, base_name)` turns any loss of the registry that reads
`outputs["codes"]` (and optionally `outputs["code_preactivations"]`) into such a loss: for
each characteristic it calls the base loss on that characteristic's sub-code with
`loss.similarity` set to the characteristic's name, and sums the C results. Its weights
are the base loss's (`loss.weights`, checked against the base's DEFAULT_WEIGHTS). The
registry's wrapper adds the classifier cross-entropy (each network's classifier reads only
its own features) and the log-cosh quantization penalty (a per-bit mean), both of which
also stay within each sub-network.

References:
  Cao, Long, Liu and Wang, "Deep Cauchy hashing for Hamming space retrieval", CVPR 2018
  (DCH, the default base loss of configs/untrained_combo.py).
  Li, Wang and Kang, "Feature learning based deep supervised hashing with pairwise
  labels", IJCAI 2016 (DPSH).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from dnh_jax.data.schema import Schema

LossFn = Callable[..., tuple[jnp.ndarray, dict[str, jnp.ndarray]]]

# Base losses that act on a code alone (no code classifier, no whole-code class rule), so
# they can be applied to one sub-code with the characteristic as the similarity rule.
BASE_LOSSES = ("dpsh", "dsh", "hashnet", "dch", "csq", "orthohash")
PREFIX = "independent_"


def subcode_outputs(outputs: Mapping[str, Any], schema: Schema) -> dict[str, dict]:
  """Splits the model outputs into one {"codes", "code_preactivations"} per characteristic.

  Args:
    outputs: model outputs with "subcodes" {name: float32[B, K_c]} and optionally
      "code_preactivations" float32[B, K] (sub-codes concatenated in schema order).
    schema: the dataset schema.

  Returns:
    {name: {"codes": float32[B, K_c], "code_preactivations": float32[B, K_c]}}.

  Raises:
    ValueError: the model has no sub-codes (a flat head) or misses a characteristic.
  """
  if "subcodes" not in outputs:
    raise ValueError("a per-characteristic loss (loss.name='independent_*') needs "
                     "outputs['subcodes']; use model.head='independent' or 'structured', "
                     f"the model gave {sorted(outputs)}")
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


def per_characteristic(base_fn: LossFn, base_name: str) -> LossFn:
  """A loss that applies `base_fn` to each sub-code with its own characteristic's labels.

  Args:
    base_fn: a registry loss, called as base_fn(outputs, labels, *, cfg, schema, step, key)
      and reading `cfg.similarity` for its pair similarity or classes.
    base_name: its registry name (so `cfg.weights` resolves against its defaults).

  Returns:
    loss_fn(outputs, labels, *, cfg, schema, step, key) -> (float32 scalar, metrics):
    sum over characteristics c of base_fn(sub-code c, similarity=c). Metrics:
    "subcode/<c>" (each term) and the base loss's own metrics per characteristic as
    "<c>/<metric>". `cfg.similarity` is ignored (each term sets its own).
  """

  def loss_fn(outputs, labels, *, cfg, schema, step, key):
    parts = subcode_outputs(outputs, schema)
    sub_cfg = ml_collections.ConfigDict(cfg.to_dict())
    sub_cfg.name = base_name
    total, metrics = jnp.zeros((), jnp.float32), {}
    for i, name in enumerate(schema.names):
      sub_cfg.similarity = name
      value, sub_metrics = base_fn(parts[name], labels, cfg=sub_cfg, schema=schema,
                                   step=step, key=jax.random.fold_in(key, i))
      total = total + value
      metrics[f"subcode/{name}"] = value
      metrics.update({f"{name}/{k}": v for k, v in sub_metrics.items()})
    return total, metrics

  return loss_fn


def register(losses: dict[str, LossFn], default_weights: dict[str, dict[str, float]]):
  """Adds "independent_<base>" for every base in BASE_LOSSES to the registry dicts.

  Args:
    losses: the registry's LOSSES (updated in place).
    default_weights: the registry's DEFAULT_WEIGHTS (updated in place; each per-
      characteristic loss takes its base's weights).
  """
  for base in BASE_LOSSES:
    if base not in losses:
      raise ValueError(f"per-characteristic losses: base loss {base!r} is not registered; "
                       f"registered: {sorted(losses)}")
    losses[PREFIX + base] = per_characteristic(losses[base], base)
    default_weights[PREFIX + base] = dict(default_weights[base])
