"""Building blocks shared by the hashing losses, written once.

Notation: K bits; h = tanh(z) real codes in (-1, 1)^K; b = sign(h) with sign(0) = +1.
Pair losses average over the off-diagonal pairs of a batch: an image paired with itself
carries no information and only adds a constant pull.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp

_LOG2 = 0.6931471805599453


def binarize(h: jnp.ndarray) -> jnp.ndarray:
  """b = sign(h) in {-1, +1} with sign(0) = +1 (never a 0 bit); no gradient.

  Args:
    h: float[..., K] real codes.

  Returns:
    float[..., K] of -1/+1, same dtype.
  """
  return jax.lax.stop_gradient(jnp.where(h >= 0, 1.0, -1.0).astype(h.dtype))


def off_diagonal(batch: int) -> jnp.ndarray:
  """float32[B, B] mask: 1 off the diagonal, 0 on it."""
  return 1.0 - jnp.eye(batch, dtype=jnp.float32)


def masked_mean(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """sum(x * mask) / max(sum(mask), 1): a mean over the selected entries (0 if none)."""
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def log_cosh(x: jnp.ndarray) -> jnp.ndarray:
  """log(cosh(x)), stable for large |x|: |x| + log1p(exp(-2|x|)) - log 2."""
  a = jnp.abs(x)
  return a + jnp.log1p(jnp.exp(-2.0 * a)) - _LOG2


def _unit(h: jnp.ndarray, eps: float) -> jnp.ndarray:
  return h / jnp.sqrt(jnp.sum(h * h, axis=-1, keepdims=True) + eps)


def cosine_similarity(h1: jnp.ndarray, h2: jnp.ndarray | None = None,
                      eps: float = 1e-12) -> jnp.ndarray:
  """Pairwise cosine similarity; eps keeps the gradient finite at h = 0.

  Args:
    h1: float[B1, K].
    h2: float[B2, K] (default: h1).
    eps: added to the squared norms.

  Returns:
    float32[B1, B2].
  """
  u1 = _unit(h1.astype(jnp.float32), eps)
  u2 = u1 if h2 is None else _unit(h2.astype(jnp.float32), eps)
  return u1 @ u2.T


def relaxed_hamming(h1: jnp.ndarray, h2: jnp.ndarray | None = None,
                    eps: float = 1e-12) -> jnp.ndarray:
  """Relaxed Hamming distance d = (K/2)(1 - cos(h_i, h_j)), clipped at 0.

  For binary codes b it equals the Hamming distance (K - b_i.b_j)/2 exactly.

  Args:
    h1: float[B1, K] real codes.
    h2: float[B2, K] real codes (default: h1).
    eps: added to the squared norms.

  Returns:
    float32[B1, B2] in [0, K].

  References:
    Cao et al., "Deep Cauchy Hashing for Hamming space retrieval", CVPR 2018.
  """
  bits = h1.shape[-1]
  return jnp.maximum(0.5 * bits * (1.0 - cosine_similarity(h1, h2, eps)), 0.0)


def cauchy_similarity(d: jnp.ndarray, gamma: float = 1.0) -> jnp.ndarray:
  """s_hat = gamma / (gamma + d): probability that a pair at distance d is similar.

  Args:
    d: float[...] distances >= 0.
    gamma: scale of the Cauchy distribution (smaller: sharper).

  Returns:
    float[...] in (0, 1].

  References:
    Cao et al., "Deep Cauchy Hashing for Hamming space retrieval", CVPR 2018.
  """
  return gamma / (gamma + d)


def cauchy_cross_entropy(d: jnp.ndarray, s: jnp.ndarray, gamma: float = 1.0,
                         eps: float = 1e-6) -> jnp.ndarray:
  """Binary cross-entropy between s_hat = gamma/(gamma + d) and a target s, per pair.

  -s log s_hat - (1 - s) log(1 - s_hat) = s log(1 + d/gamma) + (1 - s) log(1 + gamma/d),
  evaluated in that log1p form; `eps` bounds the dissimilar term at d = 0.

  Args:
    d: float[...] relaxed Hamming distances.
    s: float[...] targets in [0, 1] (broadcastable to d).
    gamma: Cauchy scale.
    eps: added to d in the dissimilar term.

  Returns:
    float[...] per-pair losses (reduce with `masked_mean`).

  References:
    Cao et al., "Deep Cauchy Hashing for Hamming space retrieval", CVPR 2018.
  """
  return s * jnp.log1p(d / gamma) + (1.0 - s) * jnp.log1p(gamma / (d + eps))


def pair_log_likelihood(theta: jnp.ndarray, s: jnp.ndarray) -> jnp.ndarray:
  """Negative log-likelihood of s under p(s=1) = sigmoid(theta), per pair.

  log(1 + exp(theta)) - s * theta, computed with a stable softplus.

  Args:
    theta: float[...] pair logits (e.g. scaled code inner products).
    s: float[...] targets in [0, 1].

  Returns:
    float[...] per-pair losses.

  References:
    Li et al., "Feature learning based deep supervised hashing with pairwise labels"
    (DPSH), IJCAI 2016.
  """
  return jax.nn.softplus(theta) - s * theta


def target_distance_regression(d: jnp.ndarray, target: jnp.ndarray, bits: int,
                               mask: jnp.ndarray) -> jnp.ndarray:
  """Mean over the masked pairs of log cosh((D_ij - d_ij) / K).

  The papers sum over pairs; the mean keeps the weight independent of the batch size.

  Args:
    d: float32[B, B] relaxed Hamming distances.
    target: float32[B, B] target Hamming distances D in [0, K].
    bits: K.
    mask: float32[B, B] pairs to include (e.g. `off_diagonal(B)`).

  Returns:
    float32 scalar.
  """
  return masked_mean(log_cosh((target - d) / bits), mask)


def quantization_penalty(h: jnp.ndarray) -> jnp.ndarray:
  """Mean log cosh(|h| - 1): pulls real codes towards the binary corners.

  Equal to mean log cosh(h - sign h) (log cosh is even), the other published form.

  Args:
    h: float[B, K] real codes.

  Returns:
    float32 scalar.
  """
  return jnp.mean(log_cosh(jnp.abs(h.astype(jnp.float32)) - 1.0))


def quantization_error(h: jnp.ndarray) -> jnp.ndarray:
  """Mean squared distance to the binary codes, mean (h - sign h)^2 (a health metric)."""
  h = h.astype(jnp.float32)
  return jnp.mean(jnp.square(h - binarize(h)))


def merge_weights(cfg: Any, defaults: Mapping[str, float], loss_name: str) -> dict[str, float]:
  """`defaults` updated by `cfg.weights` (loss config); raises on unknown keys or weights
  that are not finite and >= 0, naming the loss and the valid keys."""
  given = cfg.get("weights", None)
  given = given.to_dict() if hasattr(given, "to_dict") else dict(given or {})
  unknown = sorted(set(given) - set(defaults))
  if unknown:
    raise ValueError(f"loss.weights has unknown keys {unknown} for loss {loss_name!r}; "
                     f"valid keys: {sorted(defaults)}")
  out = {k: float(given.get(k, v)) for k, v in defaults.items()}
  for k, v in out.items():
    if not math.isfinite(v) or v < 0:
      raise ValueError(f"loss.weights.{k}={v} must be >= 0 and finite")
  return out


# ----------------------------------------------------------------------------- adversaries

@jax.custom_vjp
def gradient_reversal(x: jnp.ndarray, scale: jnp.ndarray) -> jnp.ndarray:
  """Identity forward; the backward pass multiplies the incoming gradient by -scale.

  Args:
    x: float[...] any array.
    scale: float32 scalar lambda >= 0 (receives no gradient).

  Returns:
    x, unchanged.

  References:
    Ganin and Lempitsky, "Unsupervised domain adaptation by backpropagation", ICML 2015.
  """
  del scale
  return x


def _reversal_fwd(x, scale):
  return x, scale


def _reversal_bwd(scale, g):
  return (-scale * g).astype(g.dtype), jnp.zeros_like(scale)


gradient_reversal.defvjp(_reversal_fwd, _reversal_bwd)


def reversal_scale(step: jnp.ndarray, ramp_steps: int) -> jnp.ndarray:
  """lambda(step) = 2 / (1 + exp(-10 p)) - 1 with p = step / ramp_steps (1 if ramp = 0)."""
  if ramp_steps <= 0:
    return jnp.float32(1.0)
  p = jnp.clip(jnp.asarray(step, jnp.float32) / float(ramp_steps), 0.0, 1.0)
  return 2.0 / (1.0 + jnp.exp(-10.0 * p)) - 1.0
