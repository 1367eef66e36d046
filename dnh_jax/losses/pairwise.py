"""Pairwise baseline losses: DPSH, DSH, HashNet, DCH and IDHN.

Each takes the batch's real codes and a [B, B] pair similarity and averages over the
off-diagonal pairs (see `common`). Quantization terms are the papers' own; the generic
log-cosh penalty is added by the loss wrapper when `loss.quantization > 0`.
"""

from __future__ import annotations

import jax.numpy as jnp

from dnh_jax.losses import common


def _balance_weights(s: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """w_ij = |S| / |S1| for similar pairs and |S| / |S0| for dissimilar ones (HashNet, DCH)."""
  total = jnp.sum(mask)
  similar = jnp.sum(mask * s)
  dissimilar = total - similar
  return jnp.where(s > 0.5, total / jnp.maximum(similar, 1.0),
                   total / jnp.maximum(dissimilar, 1.0))


def _pair_weights(s: jnp.ndarray, mask: jnp.ndarray, balance: float) -> jnp.ndarray:
  """(1 - balance) + balance * `_balance_weights`: 1 everywhere at 0 (the papers' mean over
  pairs), similar and dissimilar pairs carrying equal total weight at 1."""
  if not balance:
    return jnp.ones_like(s)
  return (1.0 - balance) + balance * _balance_weights(s, mask)


def dpsh_loss(codes: jnp.ndarray, similarity: jnp.ndarray, *, eta: float = 0.1,
              balance: float = 0.0, cosine: bool = False) -> jnp.ndarray:
  """Deep pairwise-supervised hashing: pair likelihood on code inner products.

  theta_ij = h_i.h_j / 2; loss = mean_pairs [log(1 + e^theta) - s theta]
  + eta * mean (h - sign h)^2.

  Args:
    codes: float32[B, K] real codes h.
    similarity: float32[B, B] pair similarity s in {0, 1}.
    eta: weight of the quantization term.
    balance: 0 the paper's plain mean over pairs; 1 similar and dissimilar pairs
      re-weighted to equal total weight (|S|/|S1|, |S|/|S0|, as HashNet and DCH).
    cosine: theta_ij = (K/2) cos(h_i, h_j) instead of h_i.h_j / 2 (the same range for
      binary codes). d theta_ij / d h_i is then orthogonal to h_i: the many dissimilar pairs
      can no longer lower theta by shrinking every code towards 0, the collapse of the
      plain form (bench/pairwise_baselines.py; configs/baseline.py notes).

  Returns:
    float32 scalar.

  References:
    Li, Wang and Kang, "Feature learning based deep supervised hashing with pairwise
    labels", IJCAI 2016.
  """
  h = codes.astype(jnp.float32)
  if cosine:
    unit = h / jnp.sqrt(jnp.sum(h * h, axis=-1, keepdims=True) + 1e-12)
    theta = 0.5 * h.shape[-1] * unit @ unit.T
  else:
    theta = 0.5 * h @ h.T
  mask = common.off_diagonal(h.shape[0])
  weights = _pair_weights(similarity, mask, balance)
  nll = common.masked_mean(weights * common.pair_log_likelihood(theta, similarity), mask)
  return nll + eta * common.quantization_error(h)


def dsh_loss(codes: jnp.ndarray, similarity: jnp.ndarray, *, margin: float | None = None,
             alpha: float = 0.01, balance: float = 0.0) -> jnp.ndarray:
  """Deep supervised hashing: contrastive loss with a margin on squared distances.

  With D = |h_i - h_j|^2: loss = mean_pairs [s D/2 + (1 - s) max(m - D, 0)/2]
  + alpha * mean_i sum_k ||h_ik| - 1|.

  Args:
    codes: float32[B, K] real codes.
    similarity: float32[B, B] pair similarity s in {0, 1}.
    margin: m; default 2K (the paper's choice).
    alpha: weight of the L1 regulariser towards +-1.
    balance: pair re-weighting, as in `dpsh_loss` (0: the paper's plain mean).

  Returns:
    float32 scalar.

  References:
    Liu, Wang, Shan and Chen, "Deep supervised hashing for fast image retrieval",
    CVPR 2016.
  """
  h = codes.astype(jnp.float32)
  m = 2.0 * h.shape[-1] if margin is None else margin
  sq = jnp.sum(h * h, axis=-1)
  dist = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * h @ h.T, 0.0)
  pair = 0.5 * similarity * dist + 0.5 * (1.0 - similarity) * jnp.maximum(m - dist, 0.0)
  reg = jnp.mean(jnp.sum(jnp.abs(jnp.abs(h) - 1.0), axis=-1))
  mask = common.off_diagonal(h.shape[0])
  weights = _pair_weights(similarity, mask, balance)
  return common.masked_mean(weights * pair, mask) + alpha * reg


def hashnet_scale(step: jnp.ndarray, *, gamma: float = 0.005, power: float = 0.5,
                  step_size: int = 200) -> jnp.ndarray:
  """Continuation scale beta of HashNet's tanh(beta z): (1 + gamma * t)^power.

  t is the step rounded down to a multiple of `step_size` (beta grows in stages, as in the
  paper's schedule).

  Args:
    step: int scalar, the training step (may be traced).
    gamma, power, step_size: schedule constants.

  Returns:
    float32 scalar >= 1.

  References:
    Cao, Long, Wang and Yu, "HashNet: Deep learning to hash by continuation", ICCV 2017.
  """
  t = (jnp.asarray(step, jnp.int32) // step_size) * step_size
  return (1.0 + gamma * t.astype(jnp.float32)) ** power


def hashnet_loss(preactivations: jnp.ndarray, similarity: jnp.ndarray, *,
                 scale: jnp.ndarray | float = 1.0, alpha: float = 10.0) -> jnp.ndarray:
  """HashNet: weighted pair likelihood on continuation codes tanh(beta z).

  h = tanh(scale * z); theta_ij = (alpha / K) h_i.h_j; loss = weighted mean over pairs of
  [log(1 + e^theta) - s theta] with weights |S|/|S1| (similar) and |S|/|S0| (dissimilar)
  that balance the rare similar pairs.

  Args:
    preactivations: float32[B, K] hash-layer outputs z before tanh.
    similarity: float32[B, B] pair similarity s in {0, 1}.
    scale: continuation beta (see `hashnet_scale`); may be traced.
    alpha: sigmoid scale times K (the paper uses 10 / K).

  Returns:
    float32 scalar.

  References:
    Cao, Long, Wang and Yu, "HashNet: Deep learning to hash by continuation", ICCV 2017.
  """
  z = preactivations.astype(jnp.float32)
  h = jnp.tanh(scale * z)
  theta = (alpha / h.shape[-1]) * (h @ h.T)
  mask = common.off_diagonal(h.shape[0])
  weights = _balance_weights(similarity, mask)
  return common.masked_mean(weights * common.pair_log_likelihood(theta, similarity), mask)


def dch_loss(codes: jnp.ndarray, similarity: jnp.ndarray, *, gamma: float = 20.0,
             lam: float = 0.1) -> jnp.ndarray:
  """Deep Cauchy hashing: balanced Cauchy cross-entropy plus Cauchy quantization.

  d = relaxed Hamming distance; loss = weighted mean over pairs of
  BCE(gamma / (gamma + d), s) + lam * mean_i log(1 + d(|h_i|, 1) / gamma).

  Args:
    codes: float32[B, K] real codes.
    similarity: float32[B, B] pair similarity s in {0, 1}.
    gamma: Cauchy scale.
    lam: weight of the Cauchy quantization loss.

  Returns:
    float32 scalar.

  References:
    Cao, Long, Liu and Wang, "Deep Cauchy hashing for Hamming space retrieval",
    CVPR 2018.
  """
  h = codes.astype(jnp.float32)
  d = common.relaxed_hamming(h)
  mask = common.off_diagonal(h.shape[0])
  weights = _balance_weights(similarity, mask)
  pair = common.masked_mean(weights * common.cauchy_cross_entropy(d, similarity, gamma), mask)
  # d(|h|, 1) = (K/2)(1 - cos(|h|, 1)): distance of each code to the all-ones corner.
  ones = jnp.ones((1, h.shape[-1]), jnp.float32)
  d_quant = common.relaxed_hamming(jnp.abs(h), ones)[:, 0]
  return pair + lam * jnp.mean(jnp.log1p(d_quant / gamma))


def idhn_loss(codes: jnp.ndarray, similarity: jnp.ndarray, *, alpha: float = 10.0,
              gamma: float = 1.0, lam: float = 0.1, tolerance: float = 0.01) -> jnp.ndarray:
  """IDHN: pair likelihood on hard pairs, squared error on soft pairs (multi-label).

  theta_ij = (alpha / K) h_i.h_j. Pairs whose soft similarity s is within `tolerance` of
  0 or 1 are hard and use log(1 + e^theta) - s theta; the others regress the normalised
  inner product h_i.h_j / K onto 2s - 1. Both are averaged over all off-diagonal pairs;
  plus lam * mean ||h| - 1|.

  Args:
    codes: float32[B, K] real codes.
    similarity: float32[B, B] soft similarity in [0, 1] (`pairs.soft_similarity`).
    alpha: sigmoid scale times K.
    gamma: weight of the soft-pair term.
    lam: weight of the L1 quantization term.
    tolerance: how close to 0 or 1 a similarity must be to count as hard.

  Returns:
    float32 scalar.

  References:
    Zhang, Lai and Feng, "Improved deep hashing with soft pairwise similarity for
    multi-label image retrieval", IEEE Transactions on Multimedia 2019.
  """
  h = codes.astype(jnp.float32)
  bits = h.shape[-1]
  inner = h @ h.T
  mask = common.off_diagonal(h.shape[0])
  hard = ((similarity <= tolerance) | (similarity >= 1.0 - tolerance)).astype(jnp.float32)
  nll = common.pair_log_likelihood((alpha / bits) * inner, similarity)
  mse = jnp.square(inner / bits - (2.0 * similarity - 1.0))
  quant = jnp.mean(jnp.abs(jnp.abs(h) - 1.0))
  return (common.masked_mean(hard * nll, mask)
          + gamma * common.masked_mean((1.0 - hard) * mse, mask) + lam * quant)
