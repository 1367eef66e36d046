"""Relevance rules derived from labels through the schema (never per dataset).

Labels are dicts {characteristic name: int32[N] ids (single) | uint8[N, V] multi-hot
(multi)} (see `dnh_jax.data.schema`). A rule compares a chunk of queries with the gallery
and returns

* binary relevance (bool) for mAP, P@r and PR curves, and
* integer graded gains for nDCG, ACG and wMAP.

Rules are called either pairwise (query labels [B] / [B, V] against gallery labels [N] /
[N, V], giving [B, N]) or aligned (gallery labels already gathered per query, [B, L] /
[B, L, V], giving [B, L] - used for the top-k lists). `xp` is numpy (default) or
jax.numpy, so the evaluator can fuse relevance into its jitted distance kernel.

"Match" of a characteristic: same id (single-label) or the same label set (multi-label).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from dnh_jax.data.schema import MULTI, Schema
from dnh_jax.retrieval.preferences import Preference

Labels = Mapping[str, np.ndarray]


def _pair(schema: Schema, name: str, query: Labels, gallery: Labels, xp=np):
  """(query side, gallery side) of one characteristic, broadcastable to [B, L(, V)]."""
  multi = schema[name].kind == MULTI
  q = xp.asarray(query[name])
  g = xp.asarray(gallery[name])
  aligned = g.ndim == q.ndim + 1
  if not aligned and g.ndim != q.ndim:
    raise ValueError(f"labels {name!r}: query shape {q.shape} and gallery shape {g.shape} "
                     "are neither pairwise nor aligned")
  if multi:
    return q[:, None, :], (g if aligned else g[None]), aligned
  return q[:, None], (g if aligned else g[None]), aligned


def match(schema: Schema, name: str, query: Labels, gallery: Labels, xp=np):
  """bool [B, L]: the characteristic matches (same id / same label set)."""
  q, g, _ = _pair(schema, name, query, gallery, xp)
  if schema[name].kind == MULTI:
    # Equal sets <=> the intersection is as large as both sets; avoids a [B, N, V] array.
    common = shared(schema, name, query, gallery, xp)
    return (common == xp.sum(q, axis=-1, dtype=xp.int32)) & (
        common == xp.sum(g, axis=-1, dtype=xp.int32))
  return q == g


def shared(schema: Schema, name: str, query: Labels, gallery: Labels, xp=np):
  """int32 [B, L]: labels in common (0/1 for a single-label characteristic)."""
  q, g, aligned = _pair(schema, name, query, gallery, xp)
  if schema[name].kind != MULTI:
    return (q == g).astype(xp.int32)
  if aligned:
    return xp.sum(xp.minimum(q, g), axis=-1, dtype=xp.int32)
  # Pairwise: a small matmul of multi-hot rows, exact in float32 for any realistic V.
  prod = q[:, 0, :].astype(xp.float32) @ g[0].astype(xp.float32).T
  return prod.astype(xp.int32)


@dataclasses.dataclass(frozen=True)
class AllMatch:
  """Relevant = every characteristic matches; gain = number of matched characteristics."""

  name: str = "all"

  def check(self, schema: Schema) -> None:
    del schema

  def max_gain(self, schema: Schema) -> int:
    return len(schema.names)

  def __call__(self, schema, query, gallery, xp=np):
    gains = sum(match(schema, n, query, gallery, xp).astype(xp.int32) for n in schema.names)
    return gains == len(schema.names), gains


@dataclasses.dataclass(frozen=True)
class SharedLabels:
  """Multi-label: relevant = at least one shared label; gain = number of shared labels
  (over all characteristics; a single-label one adds 1 when equal)."""

  name: str = "shared"

  def check(self, schema: Schema) -> None:
    del schema

  def max_gain(self, schema: Schema) -> int:
    return sum(c.size if c.kind == MULTI else 1 for c in schema.characteristics)

  def __call__(self, schema, query, gallery, xp=np):
    gains = sum(shared(schema, n, query, gallery, xp) for n in schema.names)
    return gains >= 1, gains


@dataclasses.dataclass(frozen=True)
class OrganDisease:
  """Graded: 2 = same organ and disease, 1 = same organ only, 0 = else; relevant = 2."""

  name: str = "organ_disease"

  def check(self, schema: Schema) -> None:
    for needed in ("organ", "disease"):
      if needed not in schema:
        raise ValueError(f"relevance 'organ_disease' needs characteristics 'organ' and "
                         f"'disease'; this schema has {list(schema.names)}")

  def max_gain(self, schema: Schema) -> int:
    return 2

  def __call__(self, schema, query, gallery, xp=np):
    organ = match(schema, "organ", query, gallery, xp)
    disease = match(schema, "disease", query, gallery, xp)
    gains = organ.astype(xp.int32) * (1 + disease.astype(xp.int32))
    return gains == 2, gains


@dataclasses.dataclass(frozen=True)
class PreferenceRelevance:
  """Relevant = every preferred characteristic (weight > 0) matches; gain = sum of the
  weights of the matched characteristics."""

  preference: Preference

  @property
  def name(self) -> str:
    return self.preference.name

  def check(self, schema: Schema) -> None:
    if tuple(schema.names) != self.preference.names:
      raise ValueError(f"preference {self.name!r} was parsed for characteristics "
                       f"{list(self.preference.names)}, schema has {list(schema.names)}")

  def max_gain(self, schema: Schema) -> int:
    return sum(self.preference.characteristic_weights)

  def __call__(self, schema, query, gallery, xp=np):
    gains = 0
    relevant = True
    for n, w in zip(schema.names, self.preference.characteristic_weights):
      if w:
        m = match(schema, n, query, gallery, xp)
        gains = gains + w * m.astype(xp.int32)
        relevant = relevant & m
    return relevant, gains


RELEVANCE = {"all": AllMatch(), "shared": SharedLabels(), "organ_disease": OrganDisease()}


def get_relevance(rule, schema: Schema | None = None):
  """A rule from its name in RELEVANCE (or a rule / Preference object), checked against
  the schema when given. Raises ValueError listing the valid names."""
  if isinstance(rule, Preference):
    rule = PreferenceRelevance(rule)
  elif isinstance(rule, str):
    if rule not in RELEVANCE:
      raise ValueError(f"Unknown relevance rule {rule!r}; valid rules: {sorted(RELEVANCE)}")
    rule = RELEVANCE[rule]
  elif not callable(rule):
    raise ValueError(f"relevance must be a rule name {sorted(RELEVANCE)} or a rule, "
                     f"got {rule!r}")
  if schema is not None:
    rule.check(schema)
  return rule


def check_labels(schema: Schema, labels: Labels, count: int, what: str) -> dict:
  """Validates a label dict against the schema and the number of codes."""
  if not isinstance(labels, Mapping):
    raise ValueError(f"{what}: expected a dict of label arrays, got {type(labels).__name__}")
  missing = [n for n in schema.names if n not in labels]
  if missing:
    raise ValueError(f"{what}: missing labels for {missing}; schema has {list(schema.names)}")
  out = {}
  for c in schema.characteristics:
    x = np.asarray(labels[c.name])
    want = (count, c.size) if c.kind == MULTI else (count,)
    if x.shape != want or not np.issubdtype(x.dtype, np.integer):
      raise ValueError(f"{what}[{c.name!r}]: expected integer labels of shape {want} "
                       f"({c.kind}-label), got {x.dtype}{x.shape}")
    out[c.name] = x
  return out
