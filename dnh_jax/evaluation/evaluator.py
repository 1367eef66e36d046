"""Code-level retrieval evaluation: packed codes + labels -> metrics, chunk by chunk.

Metric conventions (the same as `dnh_jax.evaluation.metrics`, which this module agrees
with to 1e-9 on every input):

* Ranking by Hamming distance (or, for a preference on structured codes, by the weighted
  sum of sub-code distances); `ties` decides the order inside equal distances: "index"
  (gallery index, deterministic - the default), "expected" (expectation under a random
  order inside each distance, closed form), "optimistic" / "pessimistic" (relevant or
  higher-gain items first / last).
* mAP@k: per query, mean precision over the relevant positions within the top k, divided
  by the relevant items found within the top k (the hashing papers' convention). A query
  without any relevant item in the top k has AP 0 and *is included* in the mean: a method
  cannot look better by retrieving nothing. "frac_no_relevant" reports how many queries
  have no relevant item in the whole gallery, so the reader can judge.
* nDCG@k: gain 2^g - 1, discount log2(rank + 1), ideal DCG from the k largest gains of
  the *whole gallery* (not of the retrieved list); queries whose ideal DCG is 0 (no item
  with gain > 0) have no defined nDCG and are left out of the mean.
* ACG@k: mean gain over the top k. wMAP@k: mean of ACG@r over the ranks r <= k that hold
  an item with gain > 0 (the paper's indicator form).
* P@r2: precision of the items within Hamming radius 2; 0 when the ball is empty.
* Relevance and gains come from the labels through a named rule of
  `dnh_jax.evaluation.relevance` ("all", "shared", "organ_disease", or a preference).

How: queries are processed in chunks; each chunk's distances to the gallery are one
integer [chunk, N] block (never a dense Q x N float matrix). Index-tie metrics at k come
from the exact `hamming_topk` lists; whole-gallery index-tie AP from a stable counting
(radix) sort of the small-integer distances; expected metrics from per-query histograms
(count, relevant, gain sums per distance), in closed form.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dnh_jax.data.schema import Schema
from dnh_jax.evaluation import metrics as M
from dnh_jax.evaluation.relevance import check_labels, get_relevance
from dnh_jax.retrieval.codes import as_packed
from dnh_jax.retrieval.hamming import (distance_terms, hamming_topk, pairwise_words_major,
                                       words_major)
from dnh_jax.retrieval.preferences import parse_preference


def _distance_dtype(max_distance: int):
  return np.uint8 if max_distance < 2**8 else np.uint16 if max_distance < 2**16 else np.int32


def _whole_ap_index(d: np.ndarray, rel: np.ndarray) -> np.ndarray:
  """Whole-gallery AP with index ties from small-integer distances [B, N]."""
  # A stable sort of small integers is a radix sort; numpy's is about twice as fast on
  # int16 rows as on uint8 ones (measured), so uint8 distances are widened first.
  order = np.argsort(d.astype(np.int16) if d.dtype == np.uint8 else d, axis=1, kind="stable")
  rows, cols = np.nonzero(np.take_along_axis(rel, order, 1))
  b = d.shape[0]
  count = np.bincount(rows, minlength=b)
  first = np.cumsum(count) - count
  hits = np.arange(len(rows)) - first[rows] + 1.0  # relevant items up to this one
  total = np.bincount(rows, hits / (cols + 1.0), minlength=b)
  return np.where(count > 0, total / np.maximum(count, 1), 0.0)


@functools.partial(jax.jit, static_argnames=("terms", "rule", "schema", "max_gain", "radius",
                                             "hist", "gain_bins", "dense", "dtype"))
def _chunk_kernel(q, qlab, g, glab, *, terms, rule, schema, max_gain, radius, hist,
                  gain_bins, dense, dtype):
  """Distances, relevance and gains of a query chunk against the gallery in one fused
  pass; returns only the per-query reductions and [B, N] integer blocks asked for."""
  d = pairwise_words_major(q, g, terms)                               # int32 [B, N]
  rel, gains = rule(schema, qlab, glab, xp=jnp)
  rel = jnp.broadcast_to(rel, d.shape)
  gains = jnp.broadcast_to(jnp.asarray(gains, jnp.int32), d.shape)
  out = {"has": rel.any(axis=1), "bad_gain": jnp.any((gains < 0) | (gains > max_gain))}
  if radius is not None:
    inside = d <= radius
    out["ball"] = inside.sum(axis=1)
    out["ball_hits"] = (inside & rel).sum(axis=1)
  if gain_bins:
    out["gain_counts"] = jnp.stack([(gains == v).sum(axis=1) for v in range(gain_bins)], 1)
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


def _histograms(key: np.ndarray, size: int, cells: int) -> dict[str, np.ndarray]:
  """Per-query bucket sums over distances 0..size-1, each [B, size]: "n" items, "r"
  relevant, "p" gain > 0, "g" gains, "e" 2^g - 1; from the joint cell keys [B, N]."""
  joint = np.stack([np.bincount(row, minlength=size * cells) for row in key])
  joint = joint.reshape(len(key), size, cells // 2, 2)
  by_gain = joint.sum(axis=3).astype(np.float64)                      # [B, size, G + 1]
  g = np.arange(cells // 2, dtype=np.float64)
  return {"n": by_gain.sum(axis=2), "r": joint[..., 1].sum(axis=2).astype(np.float64),
          "p": by_gain[..., 1:].sum(axis=2), "g": by_gain @ g, "e": by_gain @ (np.exp2(g) - 1)}


def evaluate_codes(query_codes, query_labels, gallery_codes, gallery_labels, *,
                   schema: Schema, relevance="all", ks: Sequence[int] = (100,),
                   ties: str = "index", segments: Sequence[int] | None = None,
                   weights: Sequence[int] | None = None, whole_gallery: bool = False,
                   radius: int | None = 2, pr_curve: bool = False,
                   num_bits: int | None = None, query_chunk: int = 128,
                   threads: int | None = None) -> dict[str, np.ndarray]:
  """Per-query metrics computed from codes and labels (see module doc).

  Args:
    query_codes: real [Q, K] codes or packed uint32 [Q, W].
    query_labels: {characteristic: int32[Q] | uint8[Q, V]}.
    gallery_codes: real [N, K] or packed uint32 [N, W].
    gallery_labels: {characteristic: int32[N] | uint8[N, V]}.
    schema: the label schema.
    relevance: rule name in RELEVANCE, a rule, or a Preference.
    ks: cutoffs for AP@k, nDCG@k, ACG@k, wAP@k (k > N is cut to N).
    ties: one of metrics.TIES.
    segments, weights: sub-code lengths and integer weights of the ranking distance.
    whole_gallery: also AP over the whole gallery ("AP").
    radius: Hamming radius for "P@r{radius}", or None to skip.
    pr_curve: also "pr_precision" / "pr_recall" [Q, max_distance + 1] by radius.
    num_bits: K for packed input (default 32 * W; same distances).
    query_chunk: queries per chunk; memory ~ query_chunk * N per thread.
    threads: chunks evaluated at once (default: up to 2, the cores numpy can overlap).

  Returns:
    {"AP@k", "nDCG@k", "ACG@k", "wAP@k" for k in ks, "P@r{radius}", "AP",
     "has_relevant"}: float64[Q] each (bool for "has_relevant"); nDCG NaN where undefined.
  """
  M._check_ties(ties)
  qp, bits = as_packed(query_codes, num_bits)
  gp, _ = as_packed(gallery_codes, bits)
  qp, gp = np.asarray(qp), np.asarray(gp)
  if qp.shape[1] != gp.shape[1]:
    raise ValueError(f"query codes have {qp.shape[1]} words, gallery codes {gp.shape[1]}")
  qlab = check_labels(schema, query_labels, qp.shape[0], "query_labels")
  glab = check_labels(schema, gallery_labels, gp.shape[0], "gallery_labels")
  rule = get_relevance(relevance, schema)
  max_gain = int(rule.max_gain(schema))
  _, max_distance = distance_terms(gp.shape[1], segments, weights)
  if segments is None:
    max_distance = bits  # unused high bits are 0 in every code
  dtype = _distance_dtype(max_distance)
  num_q, n = qp.shape[0], gp.shape[0]
  if num_q == 0 or n == 0:
    raise ValueError(f"need at least one query and one gallery item, got {num_q} and {n}")
  threads = min(2, os.cpu_count() or 1) if threads is None else int(threads)
  cut = {int(k): M._cutoff(k, n) for k in ks}  # reported name -> effective cutoff
  kmax = max(cut.values(), default=0)
  bounds = ties in ("optimistic", "pessimistic")
  hist = (max_distance + 1, 2 * (max_gain + 1)) if ties == "expected" or pr_curve else None
  want = dict(max_gain=max_gain, radius=radius, hist=hist,
              gain_bins=max_gain + 1 if cut else 0,
              dense="gains" if bounds else "rel" if ties == "index" and whole_gallery else "",
              dtype=dtype)
  top_idx = None
  if ties == "index" and cut:
    _, top_idx = hamming_topk(qp, gp, kmax, segments=segments, weights=weights)
  terms, _ = distance_terms(gp.shape[1], segments, weights)
  gallery = (words_major(jnp.asarray(gp)), {n: jnp.asarray(x) for n, x in glab.items()})
  padded = -(-num_q // query_chunk) * query_chunk  # one compiled shape for every chunk
  pad = lambda x: np.concatenate([x, np.repeat(x[:1], padded - num_q, axis=0)])
  qp_pad, qlab_pad = pad(qp), {name: pad(x) for name, x in qlab.items()}

  def chunk(s: int) -> dict[str, np.ndarray]:
    res: dict[str, np.ndarray] = {}
    add = res.__setitem__
    rows = min(query_chunk, num_q - s)
    sl = slice(s, s + rows)
    qchunk = {name: x[sl] for name, x in qlab.items()}
    out = jax.device_get(_chunk_kernel(
        qp_pad[s:s + query_chunk], {n: x[s:s + query_chunk] for n, x in qlab_pad.items()},
        *gallery, terms=terms, rule=rule, schema=schema, **want))
    if out.pop("bad_gain"):
      raise ValueError(f"relevance rule {rule.name!r} gave gains outside [0, {max_gain}]")
    out = {name: x[:rows] for name, x in out.items()}
    add("has_relevant", out["has"])
    if radius is not None:
      count = out["ball"]
      add(f"P@r{radius}", np.where(count > 0, out["ball_hits"] / np.maximum(count, 1), 0.0))
    h = None
    if hist is not None:
      h = _histograms(out["key"], *hist)
    if pr_curve:
      prec, rec = M.curve_from_histograms(h["n"], h["r"], h["r"].sum(axis=1))
      add("pr_precision", prec)
      add("pr_recall", rec)
    if cut:
      counts = out["gain_counts"]
      values = np.arange(max_gain + 1, dtype=np.float64)
    if ties == "index":
      if cut:
        gathered = {name: x[top_idx[sl]] for name, x in glab.items()}
        rel_k, gains_k = rule(schema, qchunk, gathered)
        seq_rel, seq_gain = np.asarray(rel_k), np.asarray(gains_k, np.float64)
      if whole_gallery:
        add("AP", _whole_ap_index(out["d"], out["rel"]))
    elif bounds:
      d, rel, gains = out["d"], out["rel"], out["gains"]
      order = M.rank_order(d, rel, ties)
      seq_rel = np.take_along_axis(rel, order, 1)
      order = M.rank_order(d, gains, ties)
      seq_gain = np.take_along_axis(gains, order[:, :max(kmax, 1)], 1).astype(float)
      if whole_gallery:
        add("AP", M.ranked_ap(seq_rel, n))
    elif whole_gallery:
      add("AP", M.expected_ap(h["n"], h["r"], None))
    for key, k in cut.items():
      ideal = M.ideal_dcg(values, counts, k)
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
      add(f"AP@{key}", ap)
      with np.errstate(invalid="ignore", divide="ignore"):
        add(f"nDCG@{key}", np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1), np.nan))
      add(f"ACG@{key}", acg_k)
      add(f"wAP@{key}", wap)
    return res

  starts = range(0, num_q, query_chunk)
  if threads > 1 and len(starts) > 1:
    # numpy's sorts, gathers and nonzero release the GIL: chunks overlap on cores.
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
      parts = list(pool.map(chunk, starts))
  else:
    parts = [chunk(s) for s in starts]
  return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _mean(x: np.ndarray) -> float:
  x = np.asarray(x, np.float64)
  x = x[~np.isnan(x)]
  return float(x.mean()) if x.size else float("nan")


def configure(ev, schema: Schema, *, ks, relevance, preferences, segments, ties, radius,
              query_chunk) -> None:
  """Validates and sets the settings shared by `Evaluator` and the sharded evaluator."""
  ev.schema = schema
  ev.ks = tuple(int(k) for k in ks)
  if any(k < 1 for k in ev.ks):
    raise ValueError(f"ks must be positive, got {ev.ks}")
  ev.relevance = get_relevance(relevance, schema)
  ev.segments = tuple(segments) or None
  if ev.segments is not None and len(ev.segments) != len(schema.names):
    raise ValueError(f"segments {ev.segments}: need one per characteristic "
                     f"{list(schema.names)}")
  ev.preferences = tuple(parse_preference(p, schema.names, ev.segments)
                         for p in preferences)
  ev.ties = M._check_ties(ties)  # pylint: disable=protected-access
  ev.radius = radius
  ev.query_chunk = query_chunk


class Evaluator:
  """Retrieval metrics of a query set against a gallery (see module doc for conventions).

  Example:
    ev = Evaluator(schema, ks=(100,), relevance="all", preferences=("organ",),
                   segments=(16, 16, 16))
    ev.run(query_codes, query_labels, gallery_codes, gallery_labels)
    # {"mAP@100": ..., "nDCG@100": ..., "ACG@100": ..., "wMAP@100": ..., "P@r2": ...,
    #  "frac_no_relevant": ..., "organ/mAP@100": ..., "organ/nDCG@100": ...}

  Args:
    schema: the label schema.
    ks: cutoffs.
    relevance: rule name for the main metrics ("all", "shared", "organ_disease").
    preferences: preference specs (see `dnh_jax.retrieval.preferences`); each adds
      "<spec>/mAP@k" and "<spec>/nDCG@k", ranked by the preference's segment weights when
      `segments` are given, with the preference's relevance and gains.
    segments: sub-code lengths, one per characteristic (structured codes), or ().
    ties: "index" (default), "expected", "optimistic" or "pessimistic".
    whole_gallery: also "mAP" over the whole gallery.
    radius: the Hamming radius of "P@r{radius}".
    query_chunk: queries per chunk.
  """

  def __init__(self, schema: Schema, *, ks: Sequence[int] = (10, 100, 1000),
               relevance: str = "all", preferences: Sequence[str] = (),
               segments: Sequence[int] = (), ties: str = "index",
               whole_gallery: bool = False, radius: int = 2, query_chunk: int = 128):
    configure(self, schema, ks=ks, relevance=relevance, preferences=preferences,
              segments=segments, ties=ties, radius=radius, query_chunk=query_chunk)
    self.whole_gallery = whole_gallery

  def run(self, query_codes, query_labels, gallery_codes,
          gallery_labels) -> dict[str, float]:
    """Codes (real [N, K] or packed uint32 [N, W]) and label dicts -> flat metrics."""
    num_bits = sum(self.segments) if self.segments else None
    common = dict(schema=self.schema, ks=self.ks, ties=self.ties, num_bits=num_bits,
                  query_chunk=self.query_chunk)
    main = evaluate_codes(query_codes, query_labels, gallery_codes, gallery_labels,
                          relevance=self.relevance, whole_gallery=self.whole_gallery,
                          radius=self.radius, **common)
    result = {}
    for k in self.ks:
      result[f"mAP@{k}"] = _mean(main[f"AP@{k}"])
      result[f"nDCG@{k}"] = _mean(main[f"nDCG@{k}"])
      result[f"ACG@{k}"] = _mean(main[f"ACG@{k}"])
      result[f"wMAP@{k}"] = _mean(main[f"wAP@{k}"])
    result[f"P@r{self.radius}"] = _mean(main[f"P@r{self.radius}"])
    if self.whole_gallery:
      result["mAP"] = _mean(main["AP"])
    result["frac_no_relevant"] = float(1.0 - np.mean(main["has_relevant"]))
    for pref in self.preferences:
      per = evaluate_codes(query_codes, query_labels, gallery_codes, gallery_labels,
                           relevance=pref, segments=self.segments,
                           weights=pref.segment_weights if self.segments else None,
                           radius=None, **common)
      for k in self.ks:
        result[f"{pref.name}/mAP@{k}"] = _mean(per[f"AP@{k}"])
        result[f"{pref.name}/nDCG@{k}"] = _mean(per[f"nDCG@{k}"])
    return result
