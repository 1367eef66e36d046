"""OPHash: organ-and-pathology hashing with semantic and relational pair similarity.

Pairs of a batch are typed from the organ and disease labels:

* type 1: same organ and same disease;
* type 2: same organ, different disease;
* type 3: different organ.

The semantic similarity s_ij = 1 for types 1 and 2 (same organ), 0 for type 3; the
relational similarity r_ij = 1 for type 1, 0 for type 2 (defined only where s_ij = 1).
With d_ij the relaxed Hamming distance of the real codes and s_hat = gamma/(gamma + d),
the objective is a weighted sum of switchable terms (`config.loss.weights`, 0 = off):

* ``organ_classification``: organ cross-entropy on the organ classifier logits;
* ``semantic`` (J1, a1): Cauchy BCE(s_hat, s) over all off-diagonal pairs;
* ``relational`` (J2, beta): Cauchy BCE(s_hat, r) over the pairs with s = 1. J1 pulls a
  type-2 pair together with a1 log(1 + d), J2 pushes it apart with beta log(1 + 1/d), so
  type-2 pairs settle at d = beta / a1 (gamma = 1) - between type 1 (d -> 0) and type 3;
* ``adversarial``: a pair discriminator on type-1 pairs (see below);
* ``target_distance``: the later three-level variant, mean log cosh((D - d) / K) with
  D = 0, K/2, K for types 1, 2, 3;
* quantization: mean log cosh(|h| - 1), the shared `config.loss.quantization` term that
  `dnh_jax.losses.get_loss` adds to every loss.

Adversarial pair discriminator, as a real min-max through a gradient-reversal layer. A
small MLP D(h_i, h_j) is shown every type-1 pair (i < j in batch order) as (h_i, h_j) with
label 1 and swapped as (h_j, h_i) with label 0, and trained to minimise that binary
cross-entropy. Its inputs pass through `gradient_reversal`: identity forward, gradient
times -lambda backward. One optimizer step on the summed loss therefore moves the
discriminator down its loss and the encoder *up* the same loss (Ganin and Lempitsky's
DANN construction), so the two have opposite objectives in a single update, with no
alternating schedule to tune. Against a discriminator that keeps adapting, the encoder's
only lasting defence is h_i = h_j, where the ordered and the swapped pair are the same
input and cannot be told apart; so the game pulls type-1 codes together. lambda
can ramp from 0 to 1 with DANN's schedule 2 / (1 + exp(-10 p)) - 1, p = step / ramp, so
the discriminator learns before the encoder feels it. Under Adam the term's weight scales
the encoder's reversed gradient relative to the other terms; the discriminator's own
update is invariant to it.

References:
  Cao, Long, Liu and Wang, "Deep Cauchy hashing for Hamming space retrieval", CVPR 2018
  (Cauchy similarity and cross-entropy).
  Ganin and Lempitsky, "Unsupervised domain adaptation by backpropagation", ICML 2015
  (gradient-reversal layer and the lambda schedule).
  Organ-and-pathology hashing (OPHash) of the IIT Kharagpur medical retrieval line of work
  (semantic / relational similarity, pair discriminator, three-level target distance;
  objective 1).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dnh_jax.data.schema import SINGLE, Schema
from dnh_jax.losses import common

TYPE1, TYPE2, TYPE3 = 1, 2, 3


# ----------------------------------------------------------------------------- pair typing

def pair_types(organ: jnp.ndarray, disease: jnp.ndarray) -> jnp.ndarray:
  """Pair types of a batch: 1 same organ and disease, 2 same organ only, 3 other organ.

  Args:
    organ: int[B] organ ids.
    disease: int[B] disease ids.

  Returns:
    int32[B, B], symmetric; the diagonal is type 1 (callers mask it out).
  """
  same_organ = organ[:, None] == organ[None, :]
  same_disease = disease[:, None] == disease[None, :]
  return jnp.where(same_organ, jnp.where(same_disease, TYPE1, TYPE2), TYPE3).astype(jnp.int32)


def semantic_similarity(types: jnp.ndarray) -> jnp.ndarray:
  """s_ij = 1 for types 1 and 2 (same organ), 0 for type 3. float32[B, B]."""
  return (types != TYPE3).astype(jnp.float32)


def relational_similarity(types: jnp.ndarray) -> jnp.ndarray:
  """r_ij = 1 for type 1, 0 otherwise (meaningful only where s_ij = 1). float32[B, B]."""
  return (types == TYPE1).astype(jnp.float32)


def target_distances(types: jnp.ndarray, bits: int) -> jnp.ndarray:
  """Three-level target Hamming distance D = 0, K/2, K for types 1, 2, 3. float32[B, B]."""
  levels = jnp.array([0.0, 0.0, 0.5 * bits, float(bits)], jnp.float32)
  return levels[types]


def batch_pair_types(labels: Mapping[str, jnp.ndarray], schema: Schema, organ: str,
                     disease: str) -> jnp.ndarray:
  """`pair_types` of a labels dict; checks both characteristics exist and are single-label.

  Args:
    labels: {characteristic: int32[B]}.
    schema: the dataset schema.
    organ: name of the organ characteristic (config.loss.organ).
    disease: name of the disease characteristic (config.loss.disease).

  Returns:
    int32[B, B] pair types.
  """
  for field, name in (("loss.organ", organ), ("loss.disease", disease)):
    if name not in schema:
      raise ValueError(f"config.{field}={name!r} is not a characteristic of this dataset; "
                       f"it has {list(schema.names)}")
    if schema[name].kind != SINGLE:
      raise ValueError(f"config.{field}={name!r} is a {schema[name].kind}-label "
                       "characteristic; OPHash pair typing needs single-label organ and "
                       "disease")
  return pair_types(labels[organ], labels[disease])


# ----------------------------------------------------------------------------- terms

def semantic_loss(d: jnp.ndarray, types: jnp.ndarray, gamma: float = 1.0) -> jnp.ndarray:
  """J1: mean over off-diagonal pairs of BCE(gamma / (gamma + d), s).

  Args:
    d: float32[B, B] relaxed Hamming distances.
    types: int32[B, B] pair types.
    gamma: Cauchy scale.

  Returns:
    float32 scalar.
  """
  mask = common.off_diagonal(d.shape[0])
  return common.masked_mean(common.cauchy_cross_entropy(d, semantic_similarity(types), gamma),
                            mask)


def relational_loss(d: jnp.ndarray, types: jnp.ndarray, gamma: float = 1.0) -> jnp.ndarray:
  """J2: mean over off-diagonal pairs with s = 1 of BCE(gamma / (gamma + d), r).

  Args:
    d: float32[B, B] relaxed Hamming distances.
    types: int32[B, B] pair types.
    gamma: Cauchy scale.

  Returns:
    float32 scalar (0 if the batch has no same-organ pair).
  """
  mask = common.off_diagonal(d.shape[0]) * semantic_similarity(types)
  return common.masked_mean(
      common.cauchy_cross_entropy(d, relational_similarity(types), gamma), mask)


def target_distance_loss(d: jnp.ndarray, types: jnp.ndarray, bits: int) -> jnp.ndarray:
  """Three-level variant: mean over off-diagonal pairs of log cosh((D - d) / K).

  Args:
    d: float32[B, B] relaxed Hamming distances.
    types: int32[B, B] pair types.
    bits: K.

  Returns:
    float32 scalar.
  """
  return common.target_distance_regression(d, target_distances(types, bits), bits,
                                           common.off_diagonal(d.shape[0]))


def organ_classification_loss(logits: jnp.ndarray, organ: jnp.ndarray) -> jnp.ndarray:
  """Mean softmax cross-entropy of organ logits float[B, V] against int ids [B]."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, organ[:, None].astype(jnp.int32), axis=-1))


def pair_type_distances(codes: jnp.ndarray, types: jnp.ndarray) -> dict[str, jnp.ndarray]:
  """Mean binary Hamming distance of sign(codes) per pair type (off-diagonal pairs).

  Args:
    codes: float[B, K] real codes.
    types: int32[B, B] pair types.

  Returns:
    {"dist_type1": , "dist_type2": , "dist_type3": } float32 scalars, NaN for a type with
    no pair in the batch (an honest "unknown", not a distance of 0).
  """
  b = common.binarize(codes.astype(jnp.float32))
  hamming = 0.5 * (b.shape[-1] - b @ b.T)
  off = common.off_diagonal(b.shape[0])
  out = {}
  for t in (TYPE1, TYPE2, TYPE3):
    mask = off * (types == t)
    count = jnp.sum(mask)
    out[f"dist_type{t}"] = jnp.where(count > 0, jnp.sum(hamming * mask) /
                                     jnp.maximum(count, 1.0), jnp.nan)
  return out


# ----------------------------------------------------------------------------- adversary

# The gradient-reversal layer and DANN's lambda schedule are shared with the invariance
# terms of objective 4 (losses/invariance.py): they live in losses/common.py.
gradient_reversal = common.gradient_reversal
reversal_scale = common.reversal_scale


def init_discriminator(key: jax.Array, bits: int, width: int = 64) -> dict[str, jnp.ndarray]:
  """Parameters of the pair discriminator MLP [h_i ; h_j] (2K) -> width -> ReLU -> 1.

  The first layer is stored as two K x width halves, one per pair member, so all B x B
  ordered pairs are scored from two [B, width] products (see `discriminator_logits`).

  Args:
    key: PRNG key.
    bits: K.
    width: hidden units.

  Returns:
    {"first": float32[K, width], "second": float32[K, width], "bias": float32[width],
     "out": float32[width], "out_bias": float32[]}.
  """
  k1, k2, k3 = jax.random.split(key, 3)
  # LeCun-normal scaling on the 2K fan-in of the concatenated pair.
  std = 1.0 / np.sqrt(2.0 * bits)
  return {"first": std * jax.random.normal(k1, (bits, width), jnp.float32),
          "second": std * jax.random.normal(k2, (bits, width), jnp.float32),
          "bias": jnp.zeros((width,), jnp.float32),
          "out": jax.random.normal(k3, (width,), jnp.float32) / np.sqrt(width),
          "out_bias": jnp.zeros((), jnp.float32)}


def discriminator_logits(params: Mapping[str, jnp.ndarray], codes: jnp.ndarray) -> jnp.ndarray:
  """Logits of D(h_i, h_j) for every ordered pair of a batch.

  Args:
    params: from `init_discriminator`.
    codes: float[B, K] real codes.

  Returns:
    float32[B, B]; entry [i, j] scores the ordered pair (h_i, h_j).
  """
  h = codes.astype(jnp.float32)
  left = h @ params["first"]                      # [B, W], contribution of h_i
  right = h @ params["second"]                    # [B, W], contribution of h_j
  hidden = jax.nn.relu(left[:, None, :] + right[None, :, :] + params["bias"])
  return hidden @ params["out"] + params["out_bias"]


def adversarial_loss(params: Mapping[str, jnp.ndarray], codes: jnp.ndarray,
                     types: jnp.ndarray, scale: jnp.ndarray | float = 1.0
                     ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Discriminator BCE on type-1 pairs, with the codes behind a gradient-reversal layer.

  For every type-1 pair i < j: -log sigmoid(D(h_i, h_j)) - log(1 - sigmoid(D(h_j, h_i))),
  averaged over those pairs and halved (the mean BCE of the 2P presented inputs).

  Args:
    params: discriminator parameters (`init_discriminator`).
    codes: float[B, K] real codes.
    types: int32[B, B] pair types.
    scale: gradient-reversal lambda for the encoder.

  Returns:
    (loss float32 scalar, discriminator accuracy float32 scalar over the 2P inputs; 0.5
    when the batch has no type-1 pair).
  """
  h = gradient_reversal(codes.astype(jnp.float32), jnp.asarray(scale, jnp.float32))
  logits = discriminator_logits(params, h)
  batch = codes.shape[0]
  upper = jnp.triu(jnp.ones((batch, batch), jnp.float32), k=1)
  mask = upper * relational_similarity(types)
  # Ordered (h_i, h_j) with label 1: softplus(-x); swapped (h_j, h_i) = logits.T with
  # label 0: softplus(x).
  per_pair = 0.5 * (jax.nn.softplus(-logits) + jax.nn.softplus(logits.T))
  loss = common.masked_mean(per_pair, mask)
  correct = 0.5 * ((logits > 0).astype(jnp.float32) + (logits.T < 0).astype(jnp.float32))
  accuracy = jnp.where(jnp.sum(mask) > 0, common.masked_mean(correct, mask), 0.5)
  return loss, accuracy


# ----------------------------------------------------------------------------- the loss

# loss.weights of "ophash" (registered in dnh_jax.losses.registry.DEFAULT_WEIGHTS). The
# published OPHash settings: a1 = 0.5 (semantic), beta = 0.5 (relational),
# gamma = 1, organ classification at weight 1. The adversary and the three-level variant
# are off by default; the quantization penalty is the shared `loss.quantization`.
DEFAULT_WEIGHTS = {
    "organ_classification": 1.0,   # organ cross-entropy
    "semantic": 0.5,               # J1, a1
    "relational": 0.5,             # J2, beta
    "adversarial": 0.0,            # pair discriminator (gradient reversal)
    "target_distance": 0.0,        # three-level log-cosh regression
    "gamma": 1.0,                  # Cauchy scale of J1 and J2
    "adversarial_ramp": 0.0,       # steps of the DANN lambda ramp (0: lambda = 1)
    "discriminator_width": 64.0,   # hidden units of the discriminator
}
TERMS = ("organ_classification", "semantic", "relational", "adversarial", "target_distance")


def resolve_weights(cfg: Any) -> dict[str, float]:
  """DEFAULT_WEIGHTS updated by cfg.weights; raises on unknown keys and negative weights."""
  return common.merge_weights(cfg, DEFAULT_WEIGHTS, "ophash")


class OPHashLoss:
  """The OPHash objective; every term weighted (0 = off) from `config.loss.weights`.

  An entry of `dnh_jax.losses.LOSSES`: called as
  `loss_fn(outputs, labels, *, cfg, schema, step, key, params)` with `cfg` the config's
  `loss` section. `init_params(key, outputs, cfg=...)` gives the discriminator's
  parameters, which the trainer optimises together with the model's.
  The characteristics that type the pairs are `cfg.organ` and `cfg.disease` when the
  config sets them, else "organ" and "disease".
  """

  def init_params(self, key: jax.Array, outputs: Mapping[str, Any], *, cfg: Any) -> dict:
    """{"discriminator": ...} for codes outputs["codes"] [B, K]; {} when it is off."""
    w = resolve_weights(cfg)
    if w["adversarial"] <= 0:
      return {}
    return {"discriminator": init_discriminator(key, outputs["codes"].shape[-1],
                                                int(w["discriminator_width"]))}

  def __call__(self, outputs: Mapping[str, Any], labels: Mapping[str, jnp.ndarray], *,
               cfg: Any, schema: Schema, step: jnp.ndarray | int = 0,
               key: jax.Array | None = None, params: Mapping[str, Any] | None = None
               ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Weighted sum of the active terms.

    Args:
      outputs: model outputs with "codes" float32[B, K] and, for the organ classification,
        "logits"[organ] float32[B, V_organ].
      labels: {characteristic: int32[B]}.
      cfg: config.loss.
      schema: the dataset schema.
      step: training step (for the adversarial lambda ramp).
      key: unused (the loss is deterministic).
      params: {"discriminator": ...} from `init_params` when the adversary is on.

    Returns:
      (loss, metrics): metrics hold every active term unweighted ("ophash/<term>"), the
      mean binary Hamming distance of each pair type ("dist_type1".."dist_type3"), the
      fraction of pairs of each type ("pairs/type1"..) and, with the adversary,
      "ophash/discriminator_accuracy" and "ophash/reversal_scale".
    """
    del key
    w = resolve_weights(cfg)
    organ, disease = cfg.organ, cfg.disease
    types = batch_pair_types(labels, schema, organ, disease)
    codes = outputs["codes"].astype(jnp.float32)
    d = common.relaxed_hamming(codes)
    terms: dict[str, jnp.ndarray] = {}
    metrics: dict[str, jnp.ndarray] = {}
    if w["organ_classification"] > 0:
      logits = outputs.get("logits") or {}
      if organ not in logits:
        raise ValueError("OPHash organ classification (loss.weights.organ_classification="
                         f"{w['organ_classification']}) needs outputs['logits'][{organ!r}]; "
                         "set model.classifier=True or the weight to 0")
      terms["organ_classification"] = organ_classification_loss(logits[organ], labels[organ])
    if w["semantic"] > 0:
      terms["semantic"] = semantic_loss(d, types, w["gamma"])
    if w["relational"] > 0:
      terms["relational"] = relational_loss(d, types, w["gamma"])
    if w["adversarial"] > 0:
      if not params or "discriminator" not in params:
        raise ValueError("OPHash adversarial term is on (loss.weights.adversarial="
                         f"{w['adversarial']}) but no discriminator parameters were passed; "
                         "the trainer must call init_params and pass params=")
      lam = reversal_scale(step, int(w["adversarial_ramp"]))
      terms["adversarial"], accuracy = adversarial_loss(params["discriminator"], codes,
                                                        types, lam)
      metrics["ophash/discriminator_accuracy"] = accuracy
      metrics["ophash/reversal_scale"] = lam
    if w["target_distance"] > 0:
      terms["target_distance"] = target_distance_loss(d, types, codes.shape[-1])
    loss = jnp.zeros((), jnp.float32)
    for name, value in terms.items():
      loss = loss + w[name] * value
      metrics[f"ophash/{name}"] = value
    metrics.update(jax.lax.stop_gradient(pair_type_distances(codes, types)))
    off = common.off_diagonal(codes.shape[0])
    for t in (TYPE1, TYPE2, TYPE3):
      metrics[f"pairs/type{t}"] = common.masked_mean((types == t).astype(jnp.float32), off)
    return loss, metrics


ophash_loss = OPHashLoss()


def register(losses: dict, default_weights: dict[str, dict[str, float]]):
  """Adds "ophash" to the registry's LOSSES and DEFAULT_WEIGHTS (updated in place)."""
  losses["ophash"] = ophash_loss
  default_weights["ophash"] = dict(DEFAULT_WEIGHTS)
