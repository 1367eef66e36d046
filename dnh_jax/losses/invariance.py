"""Invariance terms of objective 4: conditional adversaries on the sub-codes.

A sub-code should tell its own characteristic and nothing else. For each ordered pair of
single-label characteristics (c, o), c != o, a small MLP A_co reads sub-code h_c through a
gradient-reversal layer, together with the one-hot label of c, and predicts o:

    L_adv = mean over (c, o) of CE(A_co([GR(h_c) ; onehot(y_c)]), y_o).

One optimizer step moves A_co down this cross-entropy and, through the reversed gradient,
network c *up* it (Ganin and Lempitsky's DANN construction, as OPHash's discriminator in
`losses/ophash.py`). Conditioning on y_c is what keeps the term honest: whatever y_c
itself says about y_o (a brain image is never a retina disease) costs the sub-code
nothing, so the only information removed is what h_c knows about o *beyond* its own label
- the modality texture an organ network picked up, the organ layout a modality network
reads. The reversal scale follows DANN's ramp 2 / (1 + exp(-10 p)) - 1, p = step / ramp.

Switched on by `loss.adversary > 0` (the term's weight; `loss.adversary_ramp` steps of
ramp, `loss.adversary_width` hidden units), for models with sub-codes (independent or
structured heads).

References:
  Ganin and Lempitsky, "Unsupervised domain adaptation by backpropagation", ICML 2015
  (gradient reversal, the lambda schedule).
  Louizos, Swersky, Li, Welling and Zemel, "The variational fair autoencoder", ICLR 2016,
  and Xie, Dai, Du, Hovy and Neubig, "Controllable invariance through adversarial feature
  learning", NeurIPS 2017 (adversarial removal of a nuisance factor from a representation).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax

from dnh_jax.data.schema import SINGLE, Schema
from dnh_jax.losses import common


def adversary_pairs(schema: Schema) -> list[tuple[str, str]]:
  """(c, o) for every ordered pair of distinct single-label characteristics."""
  names = [c.name for c in schema.characteristics if c.kind == SINGLE]
  return [(c, o) for c in names for o in names if c != o]


def init_adversaries(key: jax.Array, subcodes: Mapping[str, Any], schema: Schema,
                     width: int = 64) -> dict[str, dict[str, jnp.ndarray]]:
  """Parameters of every A_co: [K_c + V_c] -> width -> ReLU -> V_o (He-normal weights).

  Args:
    key: PRNG key.
    subcodes: {name: float[B, K_c]} (shapes only are used).
    schema: the dataset schema.
    width: hidden units.

  Returns:
    {"<c>-><o>": {"w1", "b1", "w2", "b2"}}.
  """
  params = {}
  for i, (c, o) in enumerate(adversary_pairs(schema)):
    k1, k2 = jax.random.split(jax.random.fold_in(key, i))
    fan_in = subcodes[c].shape[-1] + schema[c].size
    params[f"{c}->{o}"] = {
        "w1": jax.random.normal(k1, (fan_in, width)) * jnp.sqrt(2.0 / fan_in),
        "b1": jnp.zeros((width,)),
        "w2": jax.random.normal(k2, (width, schema[o].size)) * jnp.sqrt(1.0 / width),
        "b2": jnp.zeros((schema[o].size,))}
  return params


def conditional_adversary_loss(params: Mapping[str, Mapping[str, jnp.ndarray]],
                               subcodes: Mapping[str, jnp.ndarray],
                               labels: Mapping[str, jnp.ndarray], schema: Schema,
                               scale: jnp.ndarray) -> tuple[jnp.ndarray, dict]:
  """L_adv (module docstring) and each adversary's accuracy.

  Args:
    params: from `init_adversaries`.
    subcodes: {name: float32[B, K_c]} real sub-codes.
    labels: {name: int32[B]}.
    schema: the dataset schema.
    scale: float32 scalar reversal scale lambda >= 0.

  Returns:
    (float32 scalar mean cross-entropy, {"adversary/<c>-><o>_accuracy": float32 scalar}).
  """
  total, metrics, pairs = jnp.zeros((), jnp.float32), {}, adversary_pairs(schema)
  for c, o in pairs:
    p = params[f"{c}->{o}"]
    h = common.gradient_reversal(subcodes[c].astype(jnp.float32),
                                 jnp.asarray(scale, jnp.float32))
    x = jnp.concatenate([h, jax.nn.one_hot(labels[c], schema[c].size)], axis=-1)
    logits = jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    target = labels[o].astype(jnp.int32)
    total = total + jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, target))
    metrics[f"adversary/{c}->{o}_accuracy"] = jax.lax.stop_gradient(
        jnp.mean(jnp.argmax(logits, -1) == target))
  return total / max(len(pairs), 1), metrics
