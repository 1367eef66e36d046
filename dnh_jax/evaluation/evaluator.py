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
integer [chunk, N] block (never a dense Q x N float matrix), reduced by the shared kernel
(`dnh_jax.evaluation.kernel`) to integer per-query sums, which its finisher turns into
metrics. Index-tie metrics at k come from the exact `hamming_topk` lists; whole-gallery
index-tie AP from a stable counting (radix) sort of the small-integer distances; expected
metrics from per-query histograms (count, relevant, gain sums per distance), in closed
form. The sharded evaluation (`dnh_jax.evaluation.sharded`) is the same kernel and
finisher over a gallery split across processes; `Evaluator` serves both.
"""

from __future__ import annotations

import concurrent.futures
import os
from typing import Mapping, Sequence

import numpy as np

from dnh_jax.data.schema import Schema
from dnh_jax.evaluation import kernel
from dnh_jax.evaluation import metrics as M
from dnh_jax.evaluation.relevance import check_labels, get_relevance
from dnh_jax.retrieval.codes import as_packed
from dnh_jax.retrieval.hamming import hamming_topk
from dnh_jax.retrieval.preferences import parse_preference


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


def top_k_lists(rule, schema: Schema, query_labels, gallery_labels, top_idx: np.ndarray):
  """(relevance, float64 gains) [Q, k] of the ranked top-k gallery indices."""
  gathered = {name: x[top_idx] for name, x in gallery_labels.items()}
  rel_k, gains_k = rule(schema, query_labels, gathered)
  return np.asarray(rel_k), np.asarray(gains_k, np.float64)


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
  M._check_ties(ties)  # pylint: disable=protected-access
  qp, bits = as_packed(query_codes, num_bits)
  gp, _ = as_packed(gallery_codes, bits)
  qp, gp = np.asarray(qp), np.asarray(gp)
  if qp.shape[1] != gp.shape[1]:
    raise ValueError(f"query codes have {qp.shape[1]} words, gallery codes {gp.shape[1]}")
  qlab = check_labels(schema, query_labels, qp.shape[0], "query_labels")
  glab = check_labels(schema, gallery_labels, gp.shape[0], "gallery_labels")
  rule = get_relevance(relevance, schema)
  num_q, n = qp.shape[0], gp.shape[0]
  if num_q == 0 or n == 0:
    raise ValueError(f"need at least one query and one gallery item, got {num_q} and {n}")
  plan = kernel.make_plan(gp.shape[1], rule=rule, schema=schema, segments=segments,
                          weights=weights, num_bits=bits, radius=radius,
                          hist=ties == "expected" or pr_curve, query_chunk=query_chunk)
  threads = min(2, os.cpu_count() or 1) if threads is None else int(threads)
  cut = {int(k): M._cutoff(k, n) for k in ks}  # pylint: disable=protected-access
  kmax = max(cut.values(), default=0)
  bounds = ties in ("optimistic", "pessimistic")
  dense = "gains" if bounds else "rel" if ties == "index" and whole_gallery else ""
  dtype = kernel.distance_dtype(plan.max_distance)
  top_idx = None
  if ties == "index" and cut:
    _, top_idx = hamming_topk(qp, gp, kmax, segments=segments, weights=weights)
  gallery = kernel.device_gallery(gp, glab)
  queries = kernel.pad_queries(qp, qlab, query_chunk)

  def chunk(s: int) -> dict[str, np.ndarray]:
    rows = min(query_chunk, num_q - s)
    sl = slice(s, s + rows)
    sums, out = kernel.chunk_sums(plan, queries, s, rows, gallery, dense=dense, dtype=dtype)
    seq_rel = seq_gain = None
    if ties == "index" and cut:
      seq_rel, seq_gain = top_k_lists(rule, schema, {k: x[sl] for k, x in qlab.items()},
                                      glab, top_idx[sl])
    elif bounds:
      d, rel, gains = out["d"], out["rel"], out["gains"]
      seq_rel = np.take_along_axis(rel, M.rank_order(d, rel, ties), 1)
      order = M.rank_order(d, gains, ties)
      seq_gain = np.take_along_axis(gains, order[:, :max(kmax, 1)], 1).astype(float)
    res = kernel.finish(sums, cut=cut, ties=ties, radius=radius, max_gain=plan.max_gain,
                        seq_rel=seq_rel, seq_gain=seq_gain)
    h = kernel.histograms(sums["joint"]) if plan.hist else None
    if pr_curve:
      res["pr_precision"], res["pr_recall"] = M.curve_from_histograms(
          h["n"], h["r"], h["r"].sum(axis=1))
    if whole_gallery:
      res["AP"] = (_whole_ap_index(out["d"], out["rel"]) if ties == "index" else
                   M.ranked_ap(seq_rel, n) if bounds else M.expected_ap(h["n"], h["r"], None))
    return res

  starts = range(0, num_q, query_chunk)
  if threads > 1 and len(starts) > 1:
    # numpy's sorts, gathers and nonzero release the GIL: chunks overlap on cores.
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
      parts = list(pool.map(chunk, starts))
  else:
    parts = [chunk(s) for s in starts]
  return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


class Evaluator:
  """Retrieval metrics of a query set against a gallery (see module doc for conventions).

  Example:
    ev = Evaluator(schema, ks=(100,), relevance="all", preferences=("organ",),
                   segments=(16, 16, 16))
    ev.run(query_codes, query_labels, gallery_codes, gallery_labels)
    # {"mAP@100": ..., "nDCG@100": ..., "ACG@100": ..., "wMAP@100": ..., "P@r2": ...,
    #  "frac_no_relevant": ..., "organ/mAP@100": ..., "organ/nDCG@100": ...}

  `per_query` evaluates once; `summarize(per_query, mask)` averages over all queries or a
  subset (a query group), which equals `run` on that subset because every metric is per
  query. The sharded evaluator (`sharded.ShardedEvaluator`) is this class with the
  per-query evaluation of a sharded gallery.

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
    radius: the Hamming radius of "P@r{radius}", or None for no such metric.
    query_chunk: queries per chunk.
  """

  def __init__(self, schema: Schema, *, ks: Sequence[int] = (10, 100, 1000),
               relevance: str = "all", preferences: Sequence[str] = (),
               segments: Sequence[int] = (), ties: str = "index",
               whole_gallery: bool = False, radius: int | None = 2, query_chunk: int = 128):
    self.schema = schema
    self.ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in self.ks):
      raise ValueError(f"ks must be positive, got {self.ks}")
    self.relevance = get_relevance(relevance, schema)
    self.segments = tuple(segments) or None
    if self.segments is not None and len(self.segments) != len(schema.names):
      raise ValueError(f"segments {self.segments}: need one per characteristic "
                       f"{list(schema.names)}")
    self.preferences = tuple(parse_preference(p, schema.names, self.segments)
                             for p in preferences)
    self.ties = M._check_ties(ties)  # pylint: disable=protected-access
    self.whole_gallery = whole_gallery
    self.radius = radius
    self.query_chunk = query_chunk

  def evaluate(self, query_codes, query_labels, gallery_codes, gallery_labels,
               **options) -> dict[str, np.ndarray]:
    """Per-query arrays of one relevance rule (`evaluate_codes`; overridden when sharded)."""
    return evaluate_codes(query_codes, query_labels, gallery_codes, gallery_labels, **options)

  def per_query(self, query_codes, query_labels, gallery_codes,
                gallery_labels) -> dict[str, dict[str, np.ndarray]]:
    """{"": the main rule's per-query arrays, <preference name>: its arrays}."""
    num_bits = sum(self.segments) if self.segments else None
    common = dict(schema=self.schema, ks=self.ks, ties=self.ties, num_bits=num_bits,
                  query_chunk=self.query_chunk)
    args = (query_codes, query_labels, gallery_codes, gallery_labels)
    out = {"": self.evaluate(*args, relevance=self.relevance, radius=self.radius,
                             whole_gallery=self.whole_gallery, **common)}
    for pref in self.preferences:
      out[pref.name] = self.evaluate(
          *args, relevance=pref, segments=self.segments,
          weights=pref.segment_weights if self.segments else None, radius=None, **common)
    return out

  def summarize(self, per_query: Mapping[str, Mapping[str, np.ndarray]],
                mask: np.ndarray | None = None) -> dict[str, float]:
    """Flat metrics over the queries in `mask` (all when None)."""
    pick = (lambda x: x) if mask is None else (lambda x: np.asarray(x)[mask])
    main = per_query[""]
    result = {}
    for k in self.ks:
      result[f"mAP@{k}"] = kernel.mean(pick(main[f"AP@{k}"]))
      result[f"nDCG@{k}"] = kernel.mean(pick(main[f"nDCG@{k}"]))
      result[f"ACG@{k}"] = kernel.mean(pick(main[f"ACG@{k}"]))
      result[f"wMAP@{k}"] = kernel.mean(pick(main[f"wAP@{k}"]))
    if self.radius is not None:
      result[f"P@r{self.radius}"] = kernel.mean(pick(main[f"P@r{self.radius}"]))
    if self.whole_gallery:
      result["mAP"] = kernel.mean(pick(main["AP"]))
    result["frac_no_relevant"] = float(1.0 - np.mean(pick(main["has_relevant"])))
    for pref in self.preferences:
      per = per_query[pref.name]
      for k in self.ks:
        result[f"{pref.name}/mAP@{k}"] = kernel.mean(pick(per[f"AP@{k}"]))
        result[f"{pref.name}/nDCG@{k}"] = kernel.mean(pick(per[f"nDCG@{k}"]))
    return result

  def run(self, query_codes, query_labels, gallery_codes,
          gallery_labels) -> dict[str, float]:
    """Codes (real [N, K] or packed uint32 [N, W]) and label dicts -> flat metrics."""
    return self.summarize(self.per_query(query_codes, query_labels, gallery_codes,
                                         gallery_labels))
