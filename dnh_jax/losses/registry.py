"""The uniform loss interface the trainer calls: LOSSES, DEFAULT_WEIGHTS, get_loss.

Every entry of LOSSES is called as::

  loss, metrics = LOSSES[name](outputs, labels, *, cfg, schema, step, key)

with `outputs` the model's output dict, `labels` {characteristic: int32[B] | uint8[B, V]},
`cfg` the config's `loss` section, `step` an int32 scalar and `key` a PRNG key; it returns
a float32 scalar and a dict of float32 scalars. `get_loss(cfg)` adds the shared terms
(classifier cross-entropy, log-cosh quantization penalty) and a "loss" metric.

Loss-specific hyperparameters live in `cfg.weights`; unset ones take DEFAULT_WEIGHTS, and
an unknown key raises (a typo must not silently train with a default).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax.numpy as jnp
import ml_collections
import optax

from dnh_jax.data.schema import MULTI, Schema
from dnh_jax.losses import common
from dnh_jax.losses import invariance
from dnh_jax.losses import multilabel
from dnh_jax.losses import ophash
from dnh_jax.losses import pairs
from dnh_jax.losses import pairwise
from dnh_jax.losses import pointwise
from dnh_jax.losses import structured

Metrics = dict[str, jnp.ndarray]
LossFn = Callable[..., tuple[jnp.ndarray, Metrics]]

# loss.weights defaults per loss (the papers' or their public code's settings).
DEFAULT_WEIGHTS: dict[str, dict[str, float]] = {
    # eta: quantization weight (mean (h - sign h)^2).
    # balance: 1 re-weights similar / dissimilar pairs to equal totals; cosine: 1 puts
    # the logits on code cosines (see pairwise.dpsh_loss; 0, 0 = the paper).
    "dpsh": {"eta": 0.1, "balance": 0.0, "cosine": 0.0},
    # margin_scale: margin m = margin_scale * K (paper: 2K); alpha: L1 regulariser.
    # linear: 1 feeds the hash layer's linear outputs (the paper; no tanh).
    "dsh": {"margin_scale": 2.0, "alpha": 0.01, "balance": 0.0, "linear": 0.0},
    # alpha: sigmoid scale x K (paper: 10/K); beta = (1 + gamma * t)^power, t the step
    # rounded down to step_size.
    "hashnet": {"alpha": 10.0, "gamma": 0.005, "power": 0.5, "step_size": 200.0},
    # gamma: Cauchy scale; lam: Cauchy quantization weight.
    "dch": {"gamma": 20.0, "lam": 0.1},
    # lam: quantization weight (mean (|h| - 1)^2).
    "csq": {"lam": 1e-4},
    # alpha: weight of the cubic penalty mean ||h| - 1|^3.
    "greedyhash": {"alpha": 0.1},
    # scale, margin: cosine logits s * (cos - m * target).
    "orthohash": {"scale": 8.0, "margin": 0.2},
    # alpha: sigmoid scale x K; gamma: soft-pair weight; lam: L1 quantization weight.
    "idhn": {"alpha": 10.0, "gamma": 1.0, "lam": 0.1},
}


def resolve_weights(cfg: ml_collections.ConfigDict) -> dict[str, float]:
  """DEFAULT_WEIGHTS[cfg.name] updated by cfg.weights (`common.merge_weights`); raises on
  unknown keys and on weights that are not finite and >= 0."""
  return common.merge_weights(cfg, DEFAULT_WEIGHTS[cfg.name], cfg.name)


def _require(outputs: Mapping[str, Any], key: str, name: str, hint: str):
  if key not in outputs:
    raise ValueError(f"loss {name!r} needs outputs[{key!r}] ({hint}); the model gave "
                     f"{sorted(outputs)}")
  return outputs[key]


def _similar_fraction(s: jnp.ndarray) -> jnp.ndarray:
  return common.masked_mean(s, common.off_diagonal(s.shape[0]))


def _dpsh(outputs, labels, *, cfg, schema, step, key):
  del step, key
  w = resolve_weights(cfg)
  s = pairs.pair_similarity(labels, schema, cfg.similarity)
  loss = pairwise.dpsh_loss(outputs["codes"], s, eta=w["eta"], balance=w["balance"],
                            cosine=bool(w["cosine"]))
  return loss, {"pairs/similar_fraction": _similar_fraction(s)}


def _dsh(outputs, labels, *, cfg, schema, step, key):
  del step, key
  w = resolve_weights(cfg)
  s = pairs.pair_similarity(labels, schema, cfg.similarity)
  margin = w["margin_scale"] * outputs["codes"].shape[-1]
  codes = (_require(outputs, "code_preactivations", "dsh", "pre-tanh hash outputs")
           if w["linear"] else outputs["codes"])
  loss = pairwise.dsh_loss(codes, s, margin=margin, alpha=w["alpha"],
                           balance=w["balance"])
  return loss, {"pairs/similar_fraction": _similar_fraction(s)}


def _hashnet(outputs, labels, *, cfg, schema, step, key):
  del key
  w = resolve_weights(cfg)
  s = pairs.pair_similarity(labels, schema, cfg.similarity)
  z = _require(outputs, "code_preactivations", "hashnet", "pre-tanh hash outputs")
  scale = pairwise.hashnet_scale(step, gamma=w["gamma"], power=w["power"],
                                 step_size=int(w["step_size"]))
  loss = pairwise.hashnet_loss(z, s, scale=scale, alpha=w["alpha"])
  return loss, {"pairs/similar_fraction": _similar_fraction(s), "hashnet/scale": scale}


def _dch(outputs, labels, *, cfg, schema, step, key):
  del step, key
  w = resolve_weights(cfg)
  s = pairs.pair_similarity(labels, schema, cfg.similarity)
  loss = pairwise.dch_loss(outputs["codes"], s, gamma=w["gamma"], lam=w["lam"])
  return loss, {"pairs/similar_fraction": _similar_fraction(s)}


def _idhn(outputs, labels, *, cfg, schema, step, key):
  del step, key
  w = resolve_weights(cfg)
  s = pairs.soft_similarity(labels, schema, cfg.similarity)
  loss = pairwise.idhn_loss(outputs["codes"], s, alpha=w["alpha"], gamma=w["gamma"],
                            lam=w["lam"])
  return loss, {"pairs/mean_similarity": common.masked_mean(
      s, common.off_diagonal(s.shape[0]))}


def _csq(outputs, labels, *, cfg, schema, step, key):
  del step, key
  w = resolve_weights(cfg)
  targets = pairs.class_targets(labels, schema, cfg.similarity)
  z = _require(outputs, "code_preactivations", "csq", "pre-tanh hash outputs")
  centers = pointwise.class_centers(targets, z.shape[-1],
                                    pairs.is_multilabel(schema, cfg.similarity))
  return pointwise.csq_loss(z, centers, lam=w["lam"]), {}


def _greedyhash(outputs, labels, *, cfg, schema, step, key):
  del step, key
  w = resolve_weights(cfg)
  targets = pairs.class_targets(labels, schema, cfg.similarity)
  logits = _require(outputs, "code_logits", "greedyhash",
                    f"set model.code_classifier={cfg.similarity!r}")
  if logits.shape[-1] != targets.shape[-1]:
    raise ValueError(f"loss 'greedyhash': outputs['code_logits'] has {logits.shape[-1]} "
                     f"classes but loss.similarity={cfg.similarity!r} has "
                     f"{targets.shape[-1]}; set model.code_classifier={cfg.similarity!r}")
  loss = pointwise.greedyhash_loss(outputs["codes"], logits, targets,
                                   multilabel=pairs.is_multilabel(schema, cfg.similarity),
                                   alpha=w["alpha"])
  return loss, {}


def _orthohash(outputs, labels, *, cfg, schema, step, key):
  del step, key
  w = resolve_weights(cfg)
  targets = pairs.class_targets(labels, schema, cfg.similarity)
  codebook = jnp.asarray(pointwise.hash_centers(targets.shape[-1],
                                                outputs["codes"].shape[-1]))
  loss = pointwise.orthohash_loss(outputs["codes"], codebook, targets,
                                  multilabel=pairs.is_multilabel(schema, cfg.similarity),
                                  scale=w["scale"], margin=w["margin"])
  return loss, {}


LOSSES: dict[str, LossFn] = {
    "dpsh": _dpsh,
    "dsh": _dsh,
    "hashnet": _hashnet,
    "dch": _dch,
    "csq": _csq,
    "greedyhash": _greedyhash,
    "orthohash": _orthohash,
    "idhn": _idhn,
}
multilabel.register(LOSSES, DEFAULT_WEIGHTS)  # "jaccard"
ophash.register(LOSSES, DEFAULT_WEIGHTS)  # "ophash"
structured.register(LOSSES, DEFAULT_WEIGHTS)  # "structured", "structured_<base>"


def classification_loss(logits: Mapping[str, jnp.ndarray], labels: Mapping[str, jnp.ndarray],
                        schema: Schema) -> tuple[jnp.ndarray, Metrics]:
  """Sum over characteristics of the classifier cross-entropies.

  Single-label: softmax cross-entropy with the integer label; multi-label: mean per-label
  sigmoid binary cross-entropy.

  Args:
    logits: {characteristic: float32[B, V]} (outputs["logits"]).
    labels: {characteristic: int32[B] | uint8[B, V]}.
    schema: the dataset schema.

  Returns:
    (float32 scalar, {"classification/<name>": float32 scalar}).
  """
  total, metrics = jnp.zeros((), jnp.float32), {}
  for name, lg in logits.items():
    lg = lg.astype(jnp.float32)
    if schema[name].kind == MULTI:
      ce = jnp.mean(optax.sigmoid_binary_cross_entropy(lg, labels[name].astype(jnp.float32)))
    else:
      ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
          lg, labels[name].astype(jnp.int32)))
    metrics[f"classification/{name}"] = ce
    total = total + ce
  return total, metrics


def validate(cfg: ml_collections.ConfigDict, schema: Schema | None = None) -> None:
  """Checks loss.name, loss.weights and (given a schema) loss.similarity; raises ValueError."""
  if cfg.name not in LOSSES:
    raise ValueError(f"loss.name={cfg.name!r} is not valid; choose one of {sorted(LOSSES)}")
  resolve_weights(cfg)
  if schema is not None:
    try:
      pairs.rule_characteristics(schema, cfg.similarity)
    except ValueError as e:
      raise ValueError(f"loss.similarity: {e}") from None
  for field in ("classification", "quantization", "adversary"):
    if float(cfg[field]) < 0:
      raise ValueError(f"loss.{field}={cfg[field]} must be >= 0")
  if float(cfg.adversary) > 0 and hasattr(LOSSES[cfg.name], "init_params"):
    raise ValueError(f"loss.adversary > 0 cannot be combined with loss.name={cfg.name!r}, "
                     "which trains an adversary of its own")


def get_loss(cfg: ml_collections.ConfigDict, schema: Schema | None = None) -> LossFn:
  """The loss function of the config's `loss` section.

  Args:
    cfg: `config.loss` (name, similarity, quantization, classification, weights).
    schema: if given, loss.similarity is checked against it now rather than at the first
      call.

  Returns:
    loss_fn(outputs, labels, *, cfg, schema, step, key) -> (loss, metrics): the named loss
    plus cfg.classification * classifier cross-entropy (needs outputs["logits"]) plus
    cfg.quantization * mean log cosh(|h| - 1) plus cfg.adversary * the conditional
    sub-code adversaries of `losses.invariance` (needs outputs["subcodes"]; their
    parameters come from `loss_fn.init_params`). metrics holds "loss" (the total),
    "loss/<name>", "loss/classification", "loss/quantization" (when weighted > 0) and
    loss-specific entries; all float32 scalars. Jittable: no Python control flow on
    traced values.

  Raises:
    ValueError: unknown loss name (listing valid ones), unknown weight keys, or an invalid
      similarity rule.
  """
  validate(cfg, schema)
  core = LOSSES[cfg.name]

  adversary = float(cfg.adversary)
  if adversary > 0 and schema is None:
    raise ValueError("loss.adversary > 0: get_loss needs the dataset schema")

  def loss_fn(outputs, labels, *, cfg, schema, step, key, **params):
    # params: the loss's own trained parameters (params=...), for losses with init_params.
    adversaries = params.pop("params")["adversaries"] if adversary > 0 else None
    main, metrics = core(outputs, labels, cfg=cfg, schema=schema, step=step, key=key,
                         **params)
    metrics = {**metrics, f"loss/{cfg.name}": main}
    total = main
    if float(cfg.classification) > 0:
      logits = _require(outputs, "logits", cfg.name,
                        "loss.classification > 0 needs model.classifier=True")
      ce, ce_metrics = classification_loss(logits, labels, schema)
      metrics.update(ce_metrics)
      metrics["loss/classification"] = ce
      total = total + float(cfg.classification) * ce
    if float(cfg.quantization) > 0:
      q = common.quantization_penalty(outputs["codes"])
      metrics["loss/quantization"] = q
      total = total + float(cfg.quantization) * q
    if adversary > 0:
      subcodes = _require(outputs, "subcodes", cfg.name,
                          "loss.adversary > 0 needs sub-codes: model.head='independent' "
                          "or 'structured'")
      lam = common.reversal_scale(step, int(cfg.adversary_ramp))
      adv, adv_metrics = invariance.conditional_adversary_loss(
          adversaries, subcodes, labels, schema, lam)
      metrics.update(adv_metrics)
      metrics["loss/adversary"] = adv
      total = total + adversary * adv
    metrics["loss"] = total
    return total, metrics

  if hasattr(core, "init_params"):  # e.g. OPHash's pair discriminator
    loss_fn.init_params = lambda key, outputs: core.init_params(key, outputs, cfg=cfg)
  elif adversary > 0:
    loss_fn.init_params = lambda key, outputs: {"adversaries": invariance.init_adversaries(
        key, _require(outputs, "subcodes", cfg.name, "loss.adversary > 0 needs sub-codes"),
        schema, int(cfg.adversary_width))}
  return loss_fn
