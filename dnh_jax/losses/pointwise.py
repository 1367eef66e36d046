"""Class-wise (pointwise) baseline losses: CSQ, GreedyHash and OrthoHash.

Each image is pulled towards a target derived from its class(es) instead of being
compared with the other images of the batch. Class targets are one-hot (single-label
classes) or multi-hot (multi-label), see `pairs.class_targets`.

Class codes (CSQ's hash centres, OrthoHash's codebook) are fixed and deterministic: rows
of a Hadamard matrix and of its negation when there are at most 2K classes and a Hadamard
matrix of order K is known (Sylvester for powers of two, Paley I for q + 1 with q a prime
3 mod 4, e.g. 12, 20, 24, 44, 48), otherwise a seeded Bernoulli(1/2) draw without
duplicate rows.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dnh_jax.losses import common

CENTER_SEED = 20200613  # Fixed: the centres are a property of (C, K), not of a run.


def _is_prime(n: int) -> bool:
  return n >= 2 and all(n % p for p in range(2, int(n**0.5) + 1))


@functools.lru_cache(maxsize=None)
def hadamard(order: int) -> np.ndarray | None:
  """A Hadamard matrix H (H H^T = n I, entries +-1) of the given order, or None.

  Sylvester's construction for powers of two; Paley's construction I for order q + 1 with
  q a prime congruent to 3 mod 4.

  Args:
    order: n >= 1.

  Returns:
    int8[n, n] or None when neither construction applies.
  """
  if order >= 1 and order & (order - 1) == 0:
    h = np.ones((1, 1), np.int8)
    while h.shape[0] < order:
      h = np.block([[h, h], [h, -h]])
    return h
  q = order - 1
  if _is_prime(q) and q % 4 == 3:
    squares = {(x * x) % q for x in range(1, q)}
    chi = np.array([0] + [1 if a in squares else -1 for a in range(1, q)], np.int64)
    jacobsthal = chi[(np.arange(q)[None, :] - np.arange(q)[:, None]) % q]
    s = np.zeros((order, order), np.int64)
    s[0, 1:] = 1
    s[1:, 0] = -1
    s[1:, 1:] = jacobsthal
    return (s + np.eye(order, dtype=np.int64)).astype(np.int8)
  return None


@functools.lru_cache(maxsize=None)
def hash_centers(num_classes: int, bits: int) -> np.ndarray:
  """Deterministic class codes: Hadamard rows when possible, else Bernoulli.

  Rows of [H; -H] are mutually at Hamming distance K/2 (or K for a row and its negation).

  Args:
    num_classes: C.
    bits: K.

  Returns:
    float32[C, K] of -1/+1 (read-only).

  References:
    Yuan et al., "Central similarity quantization for efficient image and video
    retrieval", CVPR 2020.
  """
  h = hadamard(bits)
  if h is not None and num_classes <= 2 * bits:
    centers = np.concatenate([h, -h])[:num_classes].astype(np.float32)
  else:
    if bits < 63 and num_classes > 2**bits:
      raise ValueError(f"{num_classes} classes cannot have distinct {bits}-bit hash centres")
    rng = np.random.default_rng(CENTER_SEED)
    rows, seen = [], set()
    while len(rows) < num_classes:  # Redraw duplicates: two classes must never share one.
      row = rng.random(bits) < 0.5
      if row.tobytes() not in seen:
        seen.add(row.tobytes())
        rows.append(row)
    centers = np.where(np.stack(rows), 1.0, -1.0).astype(np.float32)
  centers.setflags(write=False)
  return centers


@functools.lru_cache(maxsize=None)
def _tie_breaker(bits: int) -> np.ndarray:
  rng = np.random.default_rng(CENTER_SEED + 1)
  return np.where(rng.random(bits) < 0.5, -1.0, 1.0).astype(np.float32)


def multilabel_centers(targets: jnp.ndarray, centers: jnp.ndarray) -> jnp.ndarray:
  """Centre of a label set: sign of the summed centres of its labels.

  Bits where the sum is 0 (and images without labels) take a fixed random +-1 vector,
  as in CSQ.

  Args:
    targets: float32[B, C] multi-hot labels.
    centers: float32[C, K] class centres.

  Returns:
    float32[B, K] of -1/+1.
  """
  total = targets @ centers
  tie = jnp.asarray(_tie_breaker(centers.shape[-1]))
  return jnp.where(total > 0, 1.0, jnp.where(total < 0, -1.0, tie))


def csq_loss(preactivations: jnp.ndarray, centers: jnp.ndarray, *,
             lam: float = 1e-4) -> jnp.ndarray:
  """Central similarity quantization: bit-wise cross-entropy to the hash centre.

  With h = tanh(z) and centre c in {-1, 1}^K: loss = mean_{i,k} BCE((1 + h)/2, (1 + c)/2)
  + lam * mean (|h| - 1)^2. Since (1 + tanh z)/2 = sigmoid(2z), the BCE is computed from
  the logits 2z, which stays finite when codes saturate.

  Args:
    preactivations: float32[B, K] hash-layer outputs z before tanh.
    centers: float32[B, K] each image's hash centre (-1/+1).
    lam: weight of the quantization term.

  Returns:
    float32 scalar.

  References:
    Yuan, Wang, Zhou, Liu, Feng and Yan, "Central similarity quantization for efficient
    image and video retrieval", CVPR 2020.
  """
  z = preactivations.astype(jnp.float32)
  bce = optax.sigmoid_binary_cross_entropy(2.0 * z, 0.5 * (centers + 1.0))
  h = jnp.tanh(z)
  return jnp.mean(bce) + lam * jnp.mean(jnp.square(jnp.abs(h) - 1.0))


def _class_cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray,
                         multilabel: bool) -> jnp.ndarray:
  """Softmax cross-entropy (one-hot targets) or mean per-label sigmoid BCE (multi-hot)."""
  if multilabel:
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets))
  return jnp.mean(optax.softmax_cross_entropy(logits, targets))


def greedyhash_loss(codes: jnp.ndarray, code_logits: jnp.ndarray, targets: jnp.ndarray, *,
                    multilabel: bool = False, alpha: float = 0.1) -> jnp.ndarray:
  """GreedyHash: classify from sign(h) (straight-through), plus a cubic penalty.

  loss = CE(code_logits, targets) + alpha * mean ||h| - 1|^3, where the model computes
  code_logits from sign(h) with a straight-through gradient
  (`dnh_jax.models.sign_straight_through`).

  Args:
    codes: float32[B, K] real codes h.
    code_logits: float32[B, C] class logits of the binarised codes.
    targets: float32[B, C] one-hot or multi-hot class targets.
    multilabel: per-class sigmoid BCE instead of a softmax cross-entropy.
    alpha: weight of the cubic penalty.

  Returns:
    float32 scalar.

  References:
    Su, Zhang, Wang, Zhang and Tian, "Greedy Hash: Towards fast optimization for accurate
    hash coding in CNN", NeurIPS 2018.
  """
  h = codes.astype(jnp.float32)
  ce = _class_cross_entropy(code_logits.astype(jnp.float32), targets, multilabel)
  return ce + alpha * jnp.mean(jnp.abs(jnp.abs(h) - 1.0) ** 3)


def orthohash_loss(codes: jnp.ndarray, codebook: jnp.ndarray, targets: jnp.ndarray, *,
                   multilabel: bool = False, scale: float = 8.0,
                   margin: float = 0.2) -> jnp.ndarray:
  """OrthoHash: cosine-margin classification against fixed orthogonal class codes.

  logits_ic = scale * (cos(h_i, o_c) - margin * t_ic), then a softmax cross-entropy
  (one-hot targets) or per-class sigmoid BCE (multi-hot targets). Maximising the cosine
  to the class code maximises the agreement of sign(h) with it.

  Args:
    codes: float32[B, K] real codes.
    codebook: float32[C, K] fixed -1/+1 class codes (`hash_centers`).
    targets: float32[B, C] one-hot or multi-hot.
    multilabel: whether targets are multi-hot.
    scale: logit scale s.
    margin: additive cosine margin m on the target classes.

  Returns:
    float32 scalar.

  References:
    Hoe, Ng, Gu, Aguiar, Kasai and Chan, "One loss for all: Deep hashing with a single
    cosine similarity based learning objective", NeurIPS 2021.
  """
  cos = common.cosine_similarity(codes.astype(jnp.float32), codebook)
  logits = scale * (cos - margin * targets)
  return _class_cross_entropy(logits, targets, multilabel)


def class_centers(targets: jnp.ndarray, bits: int, multilabel: bool) -> jnp.ndarray:
  """Each image's hash centre from its class targets (CSQ).

  Args:
    targets: float32[B, C] one-hot or multi-hot class targets.
    bits: K.
    multilabel: multi-hot targets (centre = sign of summed centres).

  Returns:
    float32[B, K] of -1/+1.
  """
  centers = jnp.asarray(hash_centers(targets.shape[-1], bits))
  if multilabel:
    return multilabel_centers(targets, centers)
  return jax.lax.stop_gradient(targets @ centers)
