"""Retrieval metrics per query, with explicit tie handling (numpy, float64).

Ranking: items are ranked by Hamming distance; `ties` says what happens inside a group
of equal distances (a "bucket"):

* ``"index"``: by gallery index (deterministic; what a stable sort gives);
* ``"expected"``: the expectation over a uniformly random order inside every bucket, in
  closed form from per-bucket counts (He et al., CVPR 2018), no sort needed;
* ``"optimistic"`` / ``"pessimistic"``: relevant (higher-gain) items first / last inside
  every bucket, then by index. These bound every tie-breaking for whole-gallery AP, nDCG
  and ACG. AP@k and wMAP@k divide by the relevant items found within the top k, which is
  not monotone in the order (an extra relevant item at rank k can lower the mean), so for
  them these are the two extreme orders, not strict bounds.

Conventions (hashing papers): AP@k = mean of precision@i over the relevant positions
i <= k, i.e. divided by the relevant items *within* the top k, and 0 when there is none.
k=None means the whole gallery. nDCG@k uses gain 2^g - 1 and discount log2(rank + 1),
with the ideal DCG from the k largest gains of the *whole gallery*; it is NaN where the
ideal DCG is 0. ACG@k = mean gain over the top min(k, N). wMAP@k (the paper's indicator
form) = mean of ACG@r over the ranks r <= k that hold an item with gain > 0; 0 if none.
Precision within Hamming radius r is 0 when the ball is empty.

References:
  He, Cakir, Bargal, Sclaroff. Hashing as Tie-Aware Learning to Rank. CVPR 2018.
"""

from __future__ import annotations

import numpy as np
from scipy import special

TIES = ("index", "expected", "optimistic", "pessimistic")


# ---------------------------------------------------------------------------------------
# Input checks and orderings.

def _check_ties(ties: str, allowed=TIES) -> str:
  if ties not in allowed:
    raise ValueError(f"ties must be one of {list(allowed)}, got {ties!r}")
  return ties


def _inputs(distances, values, name: str):
  d = np.asarray(distances)
  v = np.asarray(values)
  if d.ndim != 2 or not np.issubdtype(d.dtype, np.integer):
    raise ValueError(f"distances: expected an integer [Q, N] array, got {d.dtype}{d.shape}")
  if v.shape != d.shape:
    raise ValueError(f"{name}: expected shape {d.shape} like distances, got {v.shape}")
  if d.shape[1] == 0:
    raise ValueError("empty gallery (N = 0)")
  return d, v.astype(np.float64)


def _cutoff(k, n: int) -> int:
  if k is None:
    return n
  if int(k) != k or k < 1:
    raise ValueError(f"k must be a positive integer or None, got {k!r}")
  return min(int(k), n)


def compact_distances(d: np.ndarray) -> np.ndarray:
  """Same order, smallest unsigned dtype: numpy's stable argsort is then a radix sort."""
  d = np.asarray(d)
  lo, hi = (int(d.min()), int(d.max())) if d.size else (0, 0)
  if lo >= 0 and hi < 2**8:
    return d.astype(np.uint8, copy=False)
  if lo >= 0 and hi < 2**16:
    return d.astype(np.uint16, copy=False)
  return d


def rank_order(distances, values=None, ties: str = "index") -> np.ndarray:
  """Ranking permutation per query: int[Q, N], by (distance, tie key, index).

  `values` (relevance or gains) break ties for "optimistic" (larger first) and
  "pessimistic" (smaller first); ignored for "index".
  """
  _check_ties(ties, ("index", "optimistic", "pessimistic"))
  d = compact_distances(distances)
  if ties == "index":
    return np.argsort(d, axis=1, kind="stable")
  values = np.asarray(values, np.float64)
  key = -values if ties == "optimistic" else values
  first = np.argsort(key, axis=1, kind="stable")
  # A stable sort by distance of the key-sorted list keeps (key, index) inside buckets.
  second = np.argsort(np.take_along_axis(d, first, 1), axis=1, kind="stable")
  return np.take_along_axis(first, second, 1)


# ---------------------------------------------------------------------------------------
# Metrics of explicit ranked lists (index ties and the bounds). Inputs are [Q, L] values in
# rank order, L >= k; the list may be a prefix of the full ranking.

def ranked_ap(rel: np.ndarray, k: int) -> np.ndarray:
  """AP@k of ranked relevance [Q, L] (relevant where > 0)."""
  r = (np.asarray(rel)[:, :k] > 0)
  hits = np.cumsum(r, axis=1)
  prec = hits / np.arange(1, r.shape[1] + 1)
  count = hits[:, -1]
  num = np.sum(prec * r, axis=1)
  return np.where(count > 0, num / np.maximum(count, 1), 0.0)


def discounts(k: int) -> np.ndarray:
  """float64[k]: 1 / log2(rank + 1) for ranks 1..k."""
  return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def ranked_dcg(gains: np.ndarray, k: int) -> np.ndarray:
  """DCG@k of ranked gains [Q, L]: sum (2^g - 1) / log2(rank + 1)."""
  g = np.asarray(gains, np.float64)[:, :k]
  return np.sum((np.exp2(g) - 1.0) * discounts(g.shape[1]), axis=1)


def ranked_acg(gains: np.ndarray, k: int) -> np.ndarray:
  """ACG@k of ranked gains [Q, L]: mean gain of the top k."""
  g = np.asarray(gains, np.float64)[:, :k]
  return np.sum(g, axis=1) / g.shape[1]


def ranked_wap(gains: np.ndarray, k: int) -> np.ndarray:
  """Weighted AP@k: mean of ACG@r over ranks r <= k holding gain > 0."""
  g = np.asarray(gains, np.float64)[:, :k]
  acg_r = np.cumsum(g, axis=1) / np.arange(1, g.shape[1] + 1)
  hit = g > 0
  count = np.sum(hit, axis=1)
  return np.where(count > 0, np.sum(acg_r * hit, axis=1) / np.maximum(count, 1), 0.0)


def ideal_dcg(gain_values: np.ndarray, gain_counts: np.ndarray, k: int) -> np.ndarray:
  """Ideal DCG@k from how many gallery items have each gain.

  Args:
    gain_values: float[V], distinct gains in any order.
    gain_counts: int[Q, V], per query the number of gallery items with each gain.
    k: cutoff.

  Returns:
    float64[Q]: DCG of the k largest gains, taken from the whole gallery.
  """
  order = np.argsort(-np.asarray(gain_values, np.float64))
  values = np.asarray(gain_values, np.float64)[order]
  counts = np.asarray(gain_counts)[:, order]
  cum_disc = np.concatenate([[0.0], np.cumsum(discounts(k))])
  ends = np.minimum(np.cumsum(counts, axis=1), k)
  starts = np.concatenate([np.zeros_like(ends[:, :1]), ends[:, :-1]], axis=1)
  return np.sum((np.exp2(values) - 1.0) * (cum_disc[ends] - cum_disc[starts]), axis=1)


# ---------------------------------------------------------------------------------------
# Expected metrics under random order inside buckets. Inputs are per-bucket sums [Q, T]
# with buckets in ascending distance; empty buckets are allowed.

def _harmonic_diff(lo, hi):
  """H(hi) - H(lo) = sum_{i=lo+1}^{hi} 1/i, elementwise, exact to ~1e-15."""
  lo = np.asarray(lo, np.float64)
  hi = np.asarray(hi, np.float64)
  return special.digamma(hi + 1.0) - special.digamma(lo + 1.0)


def _split(n: np.ndarray, k: int):
  """Where the cutoff k falls: (start of each bucket, full mask, partial bucket data)."""
  n = np.asarray(n, np.float64)
  start = np.cumsum(n, axis=1) - n
  full = start + n <= k
  partial = (start < k) & (start + n > k)
  has = partial.any(axis=1)
  b = np.argmax(partial, axis=1)
  pick = lambda x: np.take_along_axis(np.asarray(x, np.float64), b[:, None], 1)[:, 0]
  return start, full, has, b, pick


def _ratio_over_partial(numer, denom, n_b, r_b, m, has, term):
  """E[(numer + B(X)) / (denom + X)], X ~ Hypergeom(n_b, r_b, m) where `has`, else X = 0.

  `term(x)` gives B(x) for a grid x [Q, X]. Terms with denom + x = 0 count 0 (no relevant
  item in the top k: AP 0).
  """
  width = int(np.max(np.where(has, np.minimum(m, r_b), 0), initial=0)) + 1
  x = np.broadcast_to(np.arange(width, dtype=np.float64), (len(numer), width))
  lo = np.maximum(0.0, m - (n_b - r_b))[:, None]
  hi = np.where(has, np.minimum(m, r_b), 0.0)[:, None]
  ok = (x >= lo) & (x <= hi)
  n_, r_, m_ = n_b[:, None], r_b[:, None], m[:, None]
  xs = np.where(ok, x, 0.0)
  logp = (special.gammaln(r_ + 1) - special.gammaln(xs + 1) - special.gammaln(r_ - xs + 1)
          + special.gammaln(n_ - r_ + 1) - special.gammaln(m_ - xs + 1)
          - special.gammaln(n_ - r_ - m_ + xs + 1)
          - special.gammaln(n_ + 1) + special.gammaln(m_ + 1) + special.gammaln(n_ - m_ + 1))
  pmf = np.where(ok & has[:, None], np.exp(np.where(ok, logp, 0.0)), 0.0)
  pmf = np.where(has[:, None], pmf, x == 0)  # no partial bucket: X = 0 surely
  den = denom[:, None] + xs
  val = np.where(den > 0, (numer[:, None] + np.where(has[:, None], term(xs), 0.0))
                 / np.maximum(den, 1.0), 0.0)
  return np.sum(pmf * val, axis=1)


def expected_ap(n, r, k=None) -> np.ndarray:
  """Expected AP@k from bucket counts n [Q, T] and relevant counts r [Q, T]."""
  n = np.asarray(n, np.float64)
  r = np.asarray(r, np.float64)
  kk = _cutoff(k, int(np.max(np.sum(n, axis=1))))
  start, full, has, b, pick = _split(n, kk)
  rho = np.cumsum(r, axis=1) - r  # relevant items before each bucket
  h = _harmonic_diff(start, start + n)
  nn = np.maximum(n, 1.0)
  pair = np.where(n > 1, (r - 1) / np.maximum(n - 1, 1.0), 0.0)
  # sum over relevant j of E[hits_j / rank_j]: E[hits | position p] = rho + 1 +
  # (p - 1)(r - 1)/(n - 1); sum_p 1/(a+p) = h; sum_p (p-1)/(a+p) = n - (a+1) h.
  s = (r / nn) * ((rho + 1) * h + pair * (n - (start + 1) * h))
  numer = np.sum(np.where(full, s, 0.0), axis=1)
  denom = np.sum(np.where(full, r, 0.0), axis=1)
  a_b, n_b, r_b, rho_b = pick(start), pick(n), pick(r), pick(rho)
  m = np.where(has, kk - a_b, 0.0)
  h_m = _harmonic_diff(a_b, a_b + m)

  def term(x):
    mm = np.maximum(m, 1.0)[:, None]
    inner = np.where(mm > 1, (x - 1) / np.maximum(mm - 1, 1.0), 0.0)
    return (x / mm) * ((rho_b[:, None] + 1) * h_m[:, None]
                       + inner * (mm - (a_b[:, None] + 1) * h_m[:, None]))

  return _ratio_over_partial(numer, denom, n_b, r_b, m, has, term)


def _position_sums(n, k, values):
  """E[sum over the top k of a per-item value] with bucket sums `values` [Q, T]: a full
  bucket gives its sum, the partial one m / n of it."""
  n = np.asarray(n, np.float64)
  start, full, has, b, pick = _split(n, k)
  m = np.where(has, k - pick(start), 0.0)
  part = np.where(has, m * pick(values) / np.maximum(pick(n), 1.0), 0.0)
  return np.sum(np.where(full, values, 0.0), axis=1) + part


def expected_dcg(n, exp_gain_sums, k: int) -> np.ndarray:
  """Expected DCG@k; exp_gain_sums [Q, T] = per-bucket sums of 2^g - 1."""
  n = np.asarray(n, np.float64)
  kk = _cutoff(k, int(np.max(np.sum(n, axis=1))))
  cum_disc = np.concatenate([[0.0], np.cumsum(discounts(kk))])
  start = np.cumsum(n, axis=1) - n
  # Each item of a bucket is equally likely at each of its positions: mean gain times
  # the discounts of the positions the bucket covers (cut at k).
  end = np.minimum(start + n, kk)
  lo = np.minimum(start, kk)
  disc = cum_disc[end.astype(np.int64)] - cum_disc[lo.astype(np.int64)]
  return np.sum(np.asarray(exp_gain_sums, np.float64) / np.maximum(n, 1.0) * disc, axis=1)


def expected_acg(n, gain_sums, k: int) -> np.ndarray:
  """Expected ACG@k from bucket counts and per-bucket gain sums [Q, T]."""
  n = np.asarray(n, np.float64)
  kk = _cutoff(k, int(np.max(np.sum(n, axis=1))))
  return _position_sums(n, kk, np.asarray(gain_sums, np.float64)) / kk


def expected_wap(n, positive, gain_sums, k: int) -> np.ndarray:
  """Expected wAP@k; positive [Q, T] counts items with gain > 0, gain_sums their gains."""
  n = np.asarray(n, np.float64)
  p = np.asarray(positive, np.float64)
  g = np.asarray(gain_sums, np.float64)
  kk = _cutoff(k, int(np.max(np.sum(n, axis=1))))
  start, full, has, b, pick = _split(n, kk)
  before = np.cumsum(g, axis=1) - g  # gain of the items ranked before each bucket
  h = _harmonic_diff(start, start + n)
  nn = np.maximum(n, 1.0)
  pair = np.where(n > 1, g * (p - 1) / np.maximum(nn * (n - 1), 1.0), 0.0)
  # E[rel_p * sum_{i<=p} g_i] = (before*p + g)/n + (p-1) g (p_cnt - 1) / (n (n-1)).
  s = (before * p + g) / nn * h + pair * (n - (start + 1) * h)
  numer = np.sum(np.where(full, s, 0.0), axis=1)
  denom = np.sum(np.where(full, p, 0.0), axis=1)
  a_b, n_b, p_b, g_b, before_b = pick(start), pick(n), pick(p), pick(g), pick(before)
  m = np.where(has, kk - a_b, 0.0)
  h_m = _harmonic_diff(a_b, a_b + m)
  mean_pos = g_b / np.maximum(p_b, 1.0)  # mean gain of a gain > 0 item of the bucket

  def term(x):
    mm = np.maximum(m, 1.0)[:, None]
    inner = np.where(mm > 1, (x - 1) / np.maximum(mm - 1, 1.0), 0.0)
    return (x / mm) * ((before_b + mean_pos)[:, None] * h_m[:, None]
                       + inner * mean_pos[:, None] * (mm - (a_b[:, None] + 1) * h_m[:, None]))

  return _ratio_over_partial(numer, denom, n_b, p_b, m, has, term)


def bucket_sums(distances, columns: dict[str, np.ndarray]):
  """Per-query buckets of equal distance, ascending: counts and sums of each column.

  Returns:
    (n [Q, T], {name: [Q, T]}) with T = N; trailing buckets are empty.
  """
  d = compact_distances(distances)
  q, n_items = d.shape
  order = np.argsort(d, axis=1, kind="stable")
  ds = np.take_along_axis(d, order, 1)
  new = np.concatenate([np.zeros((q, 1), bool), ds[:, 1:] != ds[:, :-1]], axis=1)
  flat = (np.cumsum(new, axis=1) + np.arange(q)[:, None] * n_items).ravel()
  size = q * n_items
  n = np.bincount(flat, minlength=size).reshape(q, n_items)
  sums = {name: np.bincount(flat, np.take_along_axis(np.asarray(col, np.float64), order, 1)
                            .ravel(), minlength=size).reshape(q, n_items)
          for name, col in columns.items()}
  return n, sums


# ---------------------------------------------------------------------------------------
# Public dense metrics.

def average_precision(distances, relevance, *, k=None, ties: str = "index") -> np.ndarray:
  """AP@k per query (hashing convention; see module doc).

  Args:
    distances: int[Q, N].
    relevance: [Q, N], relevant where > 0.
    k: cutoff, or None for the whole gallery.
    ties: one of TIES.

  Returns:
    float64[Q].
  """
  d, rel = _inputs(distances, relevance, "relevance")
  rel = (rel > 0).astype(np.float64)
  kk = _cutoff(k, d.shape[1])
  if _check_ties(ties) == "expected":
    n, s = bucket_sums(d, {"r": rel})
    return expected_ap(n, s["r"], kk)
  order = rank_order(d, rel, ties)
  return ranked_ap(np.take_along_axis(rel, order[:, :kk], 1), kk)


def _gain_metric(distances, gains, k, ties, ranked, expected_cols):
  d, g = _inputs(distances, gains, "gains")
  if np.any(g < 0):
    raise ValueError("gains must be non-negative")
  kk = _cutoff(k, d.shape[1])
  if _check_ties(ties) == "expected":
    n, s = bucket_sums(d, expected_cols(g))
    return kk, g, n, s
  order = rank_order(d, g, ties)
  return kk, g, ranked(np.take_along_axis(g, order[:, :kk], 1), kk), None


def ndcg(distances, gains, *, k: int, ties: str = "index") -> np.ndarray:
  """nDCG@k per query: DCG@k / ideal DCG@k of the whole gallery; NaN where ideal is 0.

  Args:
    distances: int[Q, N].
    gains: [Q, N] non-negative graded relevance g (gain 2^g - 1).
    k: cutoff.
    ties: one of TIES.

  Returns:
    float64[Q].
  """
  kk, g, out, s = _gain_metric(distances, gains, k, ties, ranked_dcg,
                               lambda g: {"e": np.exp2(g) - 1.0})
  dcg = expected_dcg(out, s["e"], kk) if s is not None else out
  ideal = ranked_dcg(-np.sort(-g, axis=1), kk)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), np.nan)


def acg(distances, gains, *, k: int, ties: str = "index") -> np.ndarray:
  """ACG@k per query: mean gain g of the top min(k, N). float64[Q]."""
  kk, g, out, s = _gain_metric(distances, gains, k, ties, ranked_acg, lambda g: {"g": g})
  return expected_acg(out, s["g"], kk) if s is not None else out


def weighted_map(distances, gains, *, k: int, ties: str = "index") -> np.ndarray:
  """wAP@k per query: mean of ACG@r over ranks r <= k holding gain > 0. float64[Q]."""
  kk, g, out, s = _gain_metric(distances, gains, k, ties, ranked_wap,
                               lambda g: {"p": (g > 0).astype(np.float64), "g": g})
  return expected_wap(out, s["p"], s["g"], kk) if s is not None else out


def precision_at_radius(distances, relevance, *, radius: int = 2) -> np.ndarray:
  """Precision of the items within Hamming radius per query; 0 for an empty ball."""
  d, rel = _inputs(distances, relevance, "relevance")
  inside = d <= radius
  count = inside.sum(axis=1)
  hits = (inside & (rel > 0)).sum(axis=1)
  return np.where(count > 0, hits / np.maximum(count, 1), 0.0)


def pr_curve(distances, relevance, *, max_radius: int | None = None):
  """Precision and recall per query of the balls of radius 0..max_radius.

  Args:
    distances: int[Q, N] (non-negative).
    relevance: [Q, N], relevant where > 0.
    max_radius: largest radius (default: the largest distance present).

  Returns:
    (precision float64[Q, R + 1], recall float64[Q, R + 1]); precision is 0 for an empty
    ball, recall 0 for a query without relevant items.
  """
  d, rel = _inputs(distances, relevance, "relevance")
  if d.size and d.min() < 0:
    raise ValueError("pr_curve needs non-negative distances")
  top = int(d.max()) if max_radius is None else int(max_radius)
  q = d.shape[0]
  clipped = np.minimum(d, top + 1)  # beyond the last radius: one overflow bin
  flat = (clipped + np.arange(q)[:, None] * (top + 2)).ravel()
  count = np.bincount(flat, minlength=q * (top + 2)).reshape(q, top + 2)[:, :-1]
  hits = np.bincount(flat, (rel > 0).ravel().astype(np.float64),
                     minlength=q * (top + 2)).reshape(q, top + 2)[:, :-1]
  return curve_from_histograms(count, hits, (rel > 0).sum(axis=1))


def curve_from_histograms(count, hits, total_relevant):
  """PR by radius from per-distance counts [Q, R+1] and relevant counts [Q, R+1]."""
  c = np.cumsum(count, axis=1)
  h = np.cumsum(hits, axis=1)
  precision = np.where(c > 0, h / np.maximum(c, 1), 0.0)
  tot = np.asarray(total_relevant, np.float64)[:, None]
  recall = np.where(tot > 0, h / np.maximum(tot, 1.0), 0.0)
  return precision, recall
