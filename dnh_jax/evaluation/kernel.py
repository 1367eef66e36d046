"""The evaluation kernel and finisher that every retrieval evaluation shares.

Two steps, the split of big_vision's retrieval evaluators (kernel | evaluator):

1. `gallery_sums` / `chunk_sums`: a jitted kernel turns a query chunk against a gallery
   block into *integer per-query sums* - relevant items, items per gain value (ideal DCG),
   items and hits within Hamming radius r and, for expected ties or PR curves, the joint
   (distance, gain, relevant) histogram. Integer sums add exactly, so a gallery split into
   blocks, devices or processes gives the sums of the whole gallery bit for bit.
2. `finish`: the summed statistics plus the top-k relevance and gains (index or bound
   ties) -> per-query metrics (see `dnh_jax.evaluation.evaluator` for the conventions).

`evaluator.evaluate_codes` is the one-process case (one gallery block) and adds what needs
the whole ranking (whole-gallery AP, optimistic / pessimistic ties); `sharded` sums the
blocks of a sharded gallery over processes. The dense NumPy reference of every metric is
`dnh_jax.evaluation.metrics` (tests and benchmarks).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dnh_jax.data.schema import Schema
from dnh_jax.evaluation import metrics as M
from dnh_jax.retrieval.hamming import distance_terms, pairwise_words_major, words_major


def distance_dtype(max_distance: int):
  """The smallest unsigned integer dtype holding distances 0..max_distance."""
  return np.uint8 if max_distance < 2**8 else np.uint16 if max_distance < 2**16 else np.int32


def mean(x: np.ndarray) -> float:
  """Mean over the defined (non-NaN) values; NaN when there is none."""
  x = np.asarray(x, np.float64)
  x = x[~np.isnan(x)]
  return float(x.mean()) if x.size else float("nan")


@dataclasses.dataclass(frozen=True)
class Plan:
  """What the kernel computes for one relevance rule and code layout.

  Attributes:
    rule: the relevance rule (`relevance.get_relevance`).
    schema: the label schema.
    terms: popcount terms of the ranking distance (`hamming.distance_terms`).
    max_distance: the largest distance the codes can have.
    max_gain: the rule's largest gain G.
    radius: Hamming radius of "P@r{radius}", or None.
    hist: whether to build the joint (distance, gain, relevant) histogram.
    query_chunk: queries per kernel call.
  """

  rule: Any
  schema: Schema
  terms: tuple
  max_distance: int
  max_gain: int
  radius: int | None
  hist: bool
  query_chunk: int

  @property
  def hist_shape(self) -> tuple[int, int] | None:
    """(distances, cells) of the joint histogram: cell = 2 * gain + relevant."""
    return (self.max_distance + 1, 2 * (self.max_gain + 1)) if self.hist else None


def make_plan(num_words: int, *, rule, schema: Schema, segments, weights, num_bits: int,
              radius: int | None, hist: bool, query_chunk: int) -> Plan:
  """The Plan of codes of `num_words` words (`num_bits` bits used)."""
  terms, max_distance = distance_terms(num_words, segments, weights)
  if segments is None:
    max_distance = int(num_bits)  # unused high bits are 0 in every code
  return Plan(rule=rule, schema=schema, terms=terms, max_distance=max_distance,
              max_gain=int(rule.max_gain(schema)), radius=radius, hist=hist,
              query_chunk=int(query_chunk))


@functools.partial(jax.jit, static_argnames=("terms", "rule", "schema", "max_gain", "radius",
                                             "hist", "dense", "dtype"))
def _kernel(q, qlab, g, glab, *, terms, rule, schema, max_gain, radius, hist, dense, dtype):
  """Distances, relevance and gains of a query chunk against a gallery block in one fused
  pass; returns only the per-query reductions and the [B, N] integer blocks asked for."""
  d = pairwise_words_major(q, g, terms)                               # int32 [B, N]
  rel, gains = rule(schema, qlab, glab, xp=jnp)
  rel = jnp.broadcast_to(rel, d.shape)
  gains = jnp.broadcast_to(jnp.asarray(gains, jnp.int32), d.shape)
  out = {"relevant": rel.sum(axis=1),
         "gain_counts": jnp.stack([(gains == v).sum(axis=1) for v in range(max_gain + 1)], 1),
         "bad_gain": jnp.any((gains < 0) | (gains > max_gain))}
  if radius is not None:
    inside = d <= radius
    out["ball"] = inside.sum(axis=1)
    out["ball_hits"] = (inside & rel).sum(axis=1)
  if dense:  # "rel": distances and relevance (index ties); "gains": also the gains
    out.update(d=d.astype(dtype), rel=rel)
    if dense == "gains":
      out["gains"] = gains
  if hist is not None:
    size, cells = hist
    # Joint (distance, gain, relevant) cell of every pair, for one bincount per query.
    key = d * cells + 2 * jnp.clip(gains, 0, cells // 2 - 1) + rel
    out["key"] = key.astype(jnp.uint16 if size * cells <= 2**16 else jnp.int32)
  return out


def device_labels(labels: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
  return {name: jnp.asarray(x) for name, x in labels.items()}


def device_gallery(packed: np.ndarray, labels: Mapping[str, np.ndarray]):
  """(words-major packed codes, labels) of a gallery block, on the default device."""
  return words_major(jnp.asarray(packed)), device_labels(labels)


def pad_queries(packed: np.ndarray, labels: Mapping[str, np.ndarray], chunk: int):
  """Queries padded (with copies of the first) to a multiple of `chunk`: one compiled
  shape for every chunk."""
  num_q = packed.shape[0]
  padded = -(-num_q // chunk) * chunk
  pad = lambda x: np.concatenate([x, np.repeat(x[:1], padded - num_q, axis=0)])
  return pad(packed), {name: pad(x) for name, x in labels.items()}


def chunk_sums(plan: Plan, queries, start: int, rows: int, gallery, *, dense: str = "",
               dtype=np.int32) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """(int64 per-query sums, dense [rows, N] blocks) of queries start..start+rows.

  Args:
    plan: from `make_plan`.
    queries: `pad_queries` output.
    start, rows: the chunk (rows <= plan.query_chunk).
    gallery: `device_gallery` output.
    dense: "" | "rel" | "gains" (see `_kernel`).
    dtype: dtype of the dense distances.
  """
  packed, labels = queries
  end = start + plan.query_chunk
  out = jax.device_get(_kernel(
      packed[start:end], {n: x[start:end] for n, x in labels.items()}, *gallery,
      terms=plan.terms, rule=plan.rule, schema=plan.schema, max_gain=plan.max_gain,
      radius=plan.radius, hist=plan.hist_shape, dense=dense, dtype=dtype))
  if out.pop("bad_gain"):
    raise ValueError(f"relevance rule {plan.rule.name!r} gave gains outside "
                     f"[0, {plan.max_gain}]")
  out = {name: x[:rows] for name, x in out.items()}
  sums = {name: np.asarray(out.pop(name), np.int64)
          for name in ("relevant", "gain_counts", "ball", "ball_hits") if name in out}
  if "key" in out:
    size, cells = plan.hist_shape
    key = out.pop("key")
    joint = np.stack([np.bincount(row, minlength=size * cells) for row in key])
    sums["joint"] = joint.reshape(rows, size, cells // 2, 2).astype(np.int64)
  return sums, out


def gallery_sums(plan: Plan, query_packed: np.ndarray, query_labels, block: np.ndarray,
                 block_labels) -> dict[str, np.ndarray]:
  """Integer per-query sums of every query against one gallery block (chunk by chunk)."""
  num_q = query_packed.shape[0]
  queries = pad_queries(query_packed, query_labels, plan.query_chunk)
  gallery = device_gallery(block, block_labels)
  parts = [chunk_sums(plan, queries, s, min(plan.query_chunk, num_q - s), gallery)[0]
           for s in range(0, num_q, plan.query_chunk)]
  return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def zero_sums(plan: Plan, num_q: int) -> dict[str, np.ndarray]:
  """The sums of an empty gallery block (a process holding only padding rows)."""
  out = {"relevant": np.zeros(num_q, np.int64),
         "gain_counts": np.zeros((num_q, plan.max_gain + 1), np.int64)}
  if plan.radius is not None:
    out["ball"] = np.zeros(num_q, np.int64)
    out["ball_hits"] = np.zeros(num_q, np.int64)
  if plan.hist:
    size, cells = plan.hist_shape
    out["joint"] = np.zeros((num_q, size, cells // 2, 2), np.int64)
  return out


def histograms(joint: np.ndarray) -> dict[str, np.ndarray]:
  """Per-query bucket sums over distances, each float64 [B, size]: "n" items, "r"
  relevant, "p" gain > 0, "g" gains, "e" 2^g - 1; from the joint counts [B, size, G+1, 2]."""
  by_gain = joint.sum(axis=3).astype(np.float64)                      # [B, size, G + 1]
  g = np.arange(joint.shape[2], dtype=np.float64)
  return {"n": by_gain.sum(axis=2), "r": joint[..., 1].sum(axis=2).astype(np.float64),
          "p": by_gain[..., 1:].sum(axis=2), "g": by_gain @ g, "e": by_gain @ (np.exp2(g) - 1)}


def finish(sums: Mapping[str, np.ndarray], *, cut: Mapping[int, int], ties: str,
           radius: int | None, max_gain: int, seq_rel: np.ndarray | None = None,
           seq_gain: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """Per-query metrics from summed statistics and the ranked top-k lists.

  Args:
    sums: `chunk_sums` / `gallery_sums` statistics (summed over gallery blocks).
    cut: reported k -> effective cutoff min(k, N).
    ties: "expected" (from the histograms in `sums`) or a ranked order, whose relevance
      `seq_rel` [B, >= max cut] and gains `seq_gain` [B, >= max cut] are given.
    radius: the radius of "P@r{radius}" or None.
    max_gain: the rule's largest gain.

  Returns:
    {"has_relevant", "P@r{radius}", "AP@k", "nDCG@k", "ACG@k", "wAP@k"} per query.
  """
  out = {"has_relevant": sums["relevant"] > 0}
  if radius is not None:
    count = sums["ball"]
    out[f"P@r{radius}"] = np.where(count > 0, sums["ball_hits"] / np.maximum(count, 1), 0.0)
  if not cut:
    return out
  values = np.arange(max_gain + 1, dtype=np.float64)
  h = histograms(sums["joint"]) if ties == "expected" else None
  for key, k in cut.items():
    ideal = M.ideal_dcg(values, sums["gain_counts"], k)
    if ties == "expected":
      ap = M.expected_ap(h["n"], h["r"], k)
      dcg = M.expected_dcg(h["n"], h["e"], k)
      acg_k = M.expected_acg(h["n"], h["g"], k)
      wap = M.expected_wap(h["n"], h["p"], h["g"], k)
    else:
      ap = M.ranked_ap(seq_rel, k)
      dcg = M.ranked_dcg(seq_gain, k)
      acg_k = M.ranked_acg(seq_gain, k)
      wap = M.ranked_wap(seq_gain, k)
    out[f"AP@{key}"] = ap
    with np.errstate(invalid="ignore", divide="ignore"):
      out[f"nDCG@{key}"] = np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1), np.nan)
    out[f"ACG@{key}"] = acg_k
    out[f"wAP@{key}"] = wap
  return out
