"""Pair similarities and class targets derived from a batch's labels and the schema.

Labels are the batch dict {characteristic: int32[B] (single-label) | uint8[B, V]
(multi-label)}. A *rule* says which label agreement makes two images similar:

* ``"all"``: every single-label characteristic equal (multi-label ones are ignored);
* a characteristic name: that one equal (single-label) or sharing >= 1 label (multi-label);
* ``"shared"``: the multi-label characteristics together share >= 1 label.

The same rule defines the classes of class-wise losses (CSQ, GreedyHash, OrthoHash):
"all" -> one class per combination of the single-label characteristics (mixed-radix id),
a characteristic -> its vocabulary, "shared" -> the labels of the multi-label
characteristics (multi-hot targets).
"""

from __future__ import annotations

import math
from typing import Mapping

import jax
import jax.numpy as jnp

from dnh_jax.data.schema import MULTI, SINGLE, Characteristic, Schema

Labels = Mapping[str, jnp.ndarray]
ALL = "all"
SHARED = "shared"


def valid_rules(schema: Schema) -> list[str]:
  """The similarity rules this schema supports."""
  rules = list(schema.names)
  if any(c.kind == SINGLE for c in schema.characteristics):
    rules.insert(0, ALL)
  if any(c.kind == MULTI for c in schema.characteristics):
    rules.insert(0, SHARED)
  return rules


def rule_characteristics(schema: Schema, rule: str) -> tuple[Characteristic, ...]:
  """The characteristics a rule compares; raises a ValueError listing the valid rules."""
  if rule == ALL:
    chars = tuple(c for c in schema.characteristics if c.kind == SINGLE)
  elif rule == SHARED:
    chars = tuple(c for c in schema.characteristics if c.kind == MULTI)
  elif rule in schema:
    chars = (schema[rule],)
  else:
    chars = ()
  if not chars:
    raise ValueError(f"similarity rule {rule!r} does not apply to characteristics "
                     f"{list(schema.names)}; valid rules: {valid_rules(schema)}")
  return chars


def is_multilabel(schema: Schema, rule: str) -> bool:
  """Whether the rule's classes are multi-hot (multi-label) rather than one-hot."""
  chars = rule_characteristics(schema, rule)
  return chars[0].kind == MULTI


def _check_labels(labels: Labels, chars) -> None:
  for c in chars:
    if c.name not in labels:
      raise ValueError(f"labels lack characteristic {c.name!r}; got {sorted(labels)}")
    want = 1 if c.kind == SINGLE else 2
    if labels[c.name].ndim != want:
      raise ValueError(f"labels[{c.name!r}] ({c.kind}-label) must have {want} dims, got "
                       f"shape {labels[c.name].shape}")


def class_ids(labels: Labels, schema: Schema) -> jnp.ndarray:
  """Mixed-radix class id of the single-label characteristics (schema order).

  id = ((y_0 * V_1 + y_1) * V_2 + y_2) ..., so equal ids <=> all single-label
  characteristics equal.

  Args:
    labels: {name: int32[B] | uint8[B, V]}.
    schema: the dataset schema (at least one single-label characteristic).

  Returns:
    int32[B] ids in [0, prod V).
  """
  chars = rule_characteristics(schema, ALL)
  _check_labels(labels, chars)
  ids = jnp.zeros(labels[chars[0].name].shape, jnp.int32)
  for c in chars:
    ids = ids * c.size + labels[c.name].astype(jnp.int32)
  return ids


def num_classes(schema: Schema, rule: str) -> int:
  """Number of classes C of the rule (see the module docstring)."""
  chars = rule_characteristics(schema, rule)
  if rule == ALL:
    return math.prod(c.size for c in chars)
  return sum(c.size for c in chars)


def _label_vectors(labels: Labels, chars) -> jnp.ndarray:
  """float32[B, sum V]: one-hot (single) or multi-hot (multi) labels, concatenated."""
  parts = []
  for c in chars:
    y = labels[c.name]
    if c.kind == SINGLE:
      parts.append(jax.nn.one_hot(y, c.size, dtype=jnp.float32))
    else:
      parts.append(y.astype(jnp.float32))
  return jnp.concatenate(parts, axis=-1)


def class_targets(labels: Labels, schema: Schema, rule: str) -> jnp.ndarray:
  """Class targets of the rule: one-hot (single-label classes) or multi-hot.

  Args:
    labels: {name: int32[B] | uint8[B, V]}.
    schema: the dataset schema.
    rule: "all", "shared" or a characteristic name.

  Returns:
    float32[B, C] with C = num_classes(schema, rule).
  """
  chars = rule_characteristics(schema, rule)
  _check_labels(labels, chars)
  if rule == ALL:
    return jax.nn.one_hot(class_ids(labels, schema), num_classes(schema, rule),
                          dtype=jnp.float32)
  return _label_vectors(labels, chars)


def pair_similarity(labels: Labels, schema: Schema, rule: str) -> jnp.ndarray:
  """Binary pair similarity s_ij in {0, 1} of a batch under a rule.

  Args:
    labels: {name: int32[B] | uint8[B, V]}.
    schema: the dataset schema.
    rule: "all", "shared" or a characteristic name (see the module docstring).

  Returns:
    float32[B, B], symmetric, 1 where the pair is similar (the diagonal is 1 unless an
    image has no multi-label at all).
  """
  chars = rule_characteristics(schema, rule)
  _check_labels(labels, chars)
  if chars[0].kind == SINGLE:
    batch = labels[chars[0].name].shape[0]
    same = jnp.ones((batch, batch), bool)
    for c in chars:
      y = labels[c.name]
      same = same & (y[:, None] == y[None, :])
    return same.astype(jnp.float32)
  y = _label_vectors(labels, chars)
  return (y @ y.T >= 1).astype(jnp.float32)


def soft_similarity(labels: Labels, schema: Schema, rule: str,
                    eps: float = 1e-12) -> jnp.ndarray:
  """Soft pair similarity: cosine of the rule's label vectors (IDHN).

  For multi-label data this is <y_i, y_j> / (|y_i| |y_j|); for single-label
  characteristics (one-hot each) it is the fraction of them that match. An image without
  any label is dissimilar (0) to everything.

  Args:
    labels: {name: int32[B] | uint8[B, V]}.
    schema: the dataset schema.
    rule: "all", "shared" or a characteristic name.
    eps: guards the division for label-less images.

  Returns:
    float32[B, B] in [0, 1].

  References:
    Zhang et al., "Improved deep hashing with soft pairwise similarity for multi-label
    image retrieval", IEEE TMM 2019.
  """
  chars = rule_characteristics(schema, rule)
  _check_labels(labels, chars)
  y = _label_vectors(labels, chars)
  norm = jnp.sqrt(jnp.sum(y * y, axis=-1))
  return (y @ y.T) / jnp.maximum(norm[:, None] * norm[None, :], eps)
