"""Hash heads: trunk features -> real codes h = tanh(z), classifier logits, code logits.

A head is called as ``head(features, train) -> outputs`` (the output dict of
`dnh_jax.models.build_model`, without "features"). The pieces:

* `HashLayer`: optional pre-hash transform (the fuzzy inference layer plugs in here), then
  dense -> tanh. It returns both the codes and their pre-activations z, which losses with
  a continuation (HashNet: tanh(beta z)) or a stable bit-wise cross-entropy (CSQ) need.
* `FlatHead`: one code of `bits` bits from the shared features; one classifier per
  characteristic on the features.
* `StructuredHead`: one branch per characteristic (dense + ReLU), each with its own
  classifier and its own hash layer of `segments[i]` bits (MODHash); the code is the
  concatenation of the sub-codes in schema order.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
# A factory returning a fresh module that maps features [B, F] -> [B, F'] before the hash
# layer (e.g. a fuzzy inference system); called with name=... inside the head.
PreHashFactory = Callable[..., nn.Module]


def sign_straight_through(x: jnp.ndarray) -> jnp.ndarray:
  """sign(x) in {-1, +1} (sign(0) = +1) forward; identity gradient backward.

  Args:
    x: float[...] real codes.

  Returns:
    float[...] of -1/+1, with d(out)/dx = 1 (straight-through estimator).

  References:
    Bengio et al., "Estimating or propagating gradients through stochastic neurons", 2013;
    Su et al., "Greedy Hash: Towards fast optimization for accurate hash coding in CNN",
    NeurIPS 2018.
  """
  b = jnp.where(x >= 0, 1.0, -1.0).astype(x.dtype)
  return x + jax.lax.stop_gradient(b - x)


class HashLayer(nn.Module):
  """[pre-hash transform ->] dense(bits) -> tanh.

  Attributes:
    bits: code length of this layer.
    pre_hash: optional factory of a features -> features module applied first.
    dtype: compute dtype; outputs are float32.
  """

  bits: int
  pre_hash: PreHashFactory | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: jnp.ndarray, train: bool = False):
    """Returns (codes float32[B, bits], pre-activations float32[B, bits])."""
    x = features
    if self.pre_hash is not None:
      x = self.pre_hash(name="pre_hash")(x, train)
    z = nn.Dense(self.bits, dtype=self.dtype, name="dense")(x).astype(jnp.float32)
    return jnp.tanh(z), z


def _classifier(name: str, size: int, dtype: Dtype) -> nn.Dense:
  return nn.Dense(size, dtype=dtype, name=name)


class _CodeClassifier(nn.Module):
  """Linear classifier on the straight-through binarised codes (GreedyHash)."""

  num_classes: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, codes: jnp.ndarray) -> jnp.ndarray:
    b = sign_straight_through(codes)
    return nn.Dense(self.num_classes, dtype=self.dtype, name="dense")(b).astype(jnp.float32)


class FlatHead(nn.Module):
  """One flat code and (optionally) one classifier per characteristic.

  Attributes:
    bits: code length K.
    class_sizes: vocabulary size per characteristic (schema order), as (name, size) pairs.
    classifier: add the per-characteristic classifiers (outputs["logits"]).
    code_classes: width C of outputs["code_logits"] (0: none).
    pre_hash: optional pre-hash module factory (fuzzy layer).
    dtype: compute dtype.
  """

  bits: int
  class_sizes: Sequence[tuple[str, int]]
  classifier: bool = True
  code_classes: int = 0
  pre_hash: PreHashFactory | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: jnp.ndarray, train: bool = False) -> dict:
    codes, z = HashLayer(self.bits, self.pre_hash, self.dtype, name="hash")(features, train)
    out = {"codes": codes, "code_preactivations": z}
    if self.classifier:
      out["logits"] = {c: _classifier(f"classifier_{c}", v, self.dtype)(features)
                       .astype(jnp.float32) for c, v in self.class_sizes}
    if self.code_classes:
      out["code_logits"] = _CodeClassifier(self.code_classes, self.dtype,
                                           name="code_classifier")(codes)
    return out


class StructuredHead(nn.Module):
  """Shared trunk features -> one branch per characteristic -> concatenated sub-codes.

  Each branch is dense(branch_width) + ReLU; its classifier and its hash layer (of
  segments[i] bits) both read the branch features, so each sub-code is tied to its own
  characteristic (MODHash, Sci. Rep. 2025; the public reference code's hash branches got no
  hashing loss, here the losses act on the codes).

  Attributes:
    segments: sub-code lengths, one per characteristic (schema order).
    class_sizes: (name, vocabulary size) per characteristic (schema order).
    branch_width: width of each branch's hidden layer.
    classifier: add the per-branch classifiers (outputs["logits"]).
    code_classes: width C of outputs["code_logits"] (0: none).
    pre_hash: optional pre-hash module factory, one instance per branch.
    dtype: compute dtype.
  """

  segments: Sequence[int]
  class_sizes: Sequence[tuple[str, int]]
  branch_width: int = 256
  classifier: bool = True
  code_classes: int = 0
  pre_hash: PreHashFactory | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: jnp.ndarray, train: bool = False) -> dict:
    subcodes, preacts, logits = {}, [], {}
    for (name, size), bits in zip(self.class_sizes, self.segments):
      x = nn.relu(nn.Dense(self.branch_width, dtype=self.dtype, name=f"branch_{name}")(
          features))
      subcodes[name], z = HashLayer(bits, self.pre_hash, self.dtype, name=f"hash_{name}")(
          x, train)
      preacts.append(z)
      if self.classifier:
        logits[name] = _classifier(f"classifier_{name}", size, self.dtype)(x).astype(
            jnp.float32)
    codes = jnp.concatenate([subcodes[name] for name, _ in self.class_sizes], axis=-1)
    out = {"codes": codes, "subcodes": subcodes,
           "code_preactivations": jnp.concatenate(preacts, axis=-1)}
    if self.classifier:
      out["logits"] = logits
    if self.code_classes:
      out["code_logits"] = _CodeClassifier(self.code_classes, self.dtype,
                                           name="code_classifier")(codes)
    return out


class HashingNetwork(nn.Module):
  """backbone -> head; the model that `build_model` returns for shared-trunk heads.

  Attributes:
    backbone: an unbound backbone module (`dnh_jax.models.backbones`).
    head: an unbound head module (FlatHead, StructuredHead, ...).
  """

  backbone: nn.Module
  head: nn.Module

  def __call__(self, images: jnp.ndarray, train: bool = False) -> dict:
    """Args: images float32[B, H, W, 1]. Returns the output dict of `build_model`."""
    features = self.backbone(images, train)
    out = dict(self.head(features, train))
    out["features"] = features.astype(jnp.float32)
    return out
