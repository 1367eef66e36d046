"""Metrics: hand-worked cases, brute-force loops, scikit-learn, permutation averages."""

import itertools

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from dnh_jax.evaluation import metrics as M

# 4 queries x 6 items, worked out by hand below.
D = np.array([[0, 1, 1, 2, 3, 3],
              [2, 0, 2, 1, 0, 3],
              [0, 0, 1, 1, 2, 2],
              [1, 1, 1, 1, 1, 1]])
REL = np.array([[1, 0, 1, 0, 1, 0],
                [0, 0, 1, 1, 1, 0],
                [0, 0, 0, 0, 0, 0],
                [0, 0, 0, 0, 0, 1]])


def test_hand_average_precision():
  # q0: ranked rel 1,0,1,0,1,0 -> hits at 1,3,5: (1/1 + 2/3 + 3/5) / 3 = 0.755556;
  #     AP@3: (1 + 2/3) / 2 = 0.833333 (divided by the 2 relevant within the top 3).
  # q1: order by (d, index): items 1,4,3,0,2,5 -> rel 0,1,1,0,1,0 -> hits at 2,3,5:
  #     (1/2 + 2/3 + 3/5) / 3 = 0.588889; AP@2 = (1/2) / 1 = 0.5.
  # q2: nothing relevant -> 0. q3: the relevant item is last (index 5) -> 1/6.
  np.testing.assert_allclose(M.average_precision(D, REL),
                             [2.266667 / 3, 1.766667 / 3, 0.0, 1 / 6], atol=1e-6)
  np.testing.assert_allclose(M.average_precision(D, REL, k=3)[0], 5 / 6, atol=1e-12)
  np.testing.assert_allclose(M.average_precision(D, REL, k=2)[1], 0.5, atol=1e-12)


def test_hand_expected_and_bounds():
  # q0 buckets: d0 {rel} rank 1 -> 1; d1 {irr, rel} ranks 2-3 -> (2/2 + 2/3)/2 = 5/6;
  #     d3 {rel, irr} ranks 5-6 -> (3/5 + 3/6)/2 = 0.55; E[AP] = (1 + 5/6 + 0.55)/3.
  # q3: one relevant among 6 tied: E[1/rank] = (1 + 1/2 + ... + 1/6)/6 = 2.45/6.
  e = M.average_precision(D, REL, ties="expected")
  np.testing.assert_allclose(e[[0, 3]], [(1 + 5 / 6 + 0.55) / 3, 2.45 / 6], atol=1e-12)
  assert M.average_precision(D, REL, ties="optimistic")[3] == 1.0
  assert M.average_precision(D, REL, ties="pessimistic")[3] == pytest.approx(1 / 6)


def test_hand_graded_metrics():
  # gains 2, 0, 1 at distances 0, 1, 2.
  # DCG@3 = (2^2-1)/log2(2) + 0 + (2^1-1)/log2(4) = 3 + 0.5 = 3.5;
  # ideal order 2, 1, 0: 3 + 1/log2(3) = 3.630930 -> nDCG = 0.963940.
  # ACG@2 = (2 + 0)/2 = 1. wAP@3: gain>0 at ranks 1 (ACG@1 = 2) and 3 (ACG@3 = 1) -> 1.5.
  d, g = np.array([[0, 1, 2]]), np.array([[2, 0, 1]])
  np.testing.assert_allclose(M.ndcg(d, g, k=3), [3.5 / (3 + 1 / np.log2(3))], atol=1e-12)
  np.testing.assert_allclose(M.acg(d, g, k=2), [1.0])
  np.testing.assert_allclose(M.weighted_map(d, g, k=3), [1.5])
  assert np.isnan(M.ndcg(d, np.zeros_like(g), k=3)[0])  # ideal DCG 0: undefined


def test_hand_radius_and_pr():
  # Radius 2: q0 items 0..3, 2 relevant -> 2/4; q1 items 0..4, 3 relevant -> 3/5;
  # q2 none relevant -> 0; q3 all 6 items, 1 relevant -> 1/6. q3 at radius 0: empty -> 0.
  np.testing.assert_allclose(M.precision_at_radius(D, REL), [0.5, 0.6, 0.0, 1 / 6])
  assert M.precision_at_radius(D, REL, radius=0)[3] == 0.0
  prec, rec = M.pr_curve(D[:1], REL[:1])
  # radius 0: 1/1, recall 1/3; r1: 2/3, 2/3; r2: 2/4, 2/3; r3: 3/6, 3/3.
  np.testing.assert_allclose(prec[0], [1, 2 / 3, 0.5, 0.5])
  np.testing.assert_allclose(rec[0], [1 / 3, 2 / 3, 2 / 3, 1])


def _loop_ap(d, rel, k):
  """Independent reference: per-query stable sort, as the hashing papers' loop."""
  out = []
  for row_d, row_r in zip(d, rel):
    r = row_r[np.argsort(row_d, kind="stable")][:k] > 0
    pos = np.flatnonzero(r) + 1.0
    out.append(np.mean(np.arange(1, len(pos) + 1) / pos) if len(pos) else 0.0)
  return np.array(out)


@pytest.mark.parametrize("k", [None, 1, 5, 50, 400])
def test_ap_matches_loop_with_heavy_ties(k):
  rng = np.random.default_rng(0)
  d = rng.integers(0, 9, (30, 400))  # 8-bit codes: at most 9 distinct distances
  rel = rng.random((30, 400)) < 0.2
  np.testing.assert_allclose(M.average_precision(d, rel, k=k), _loop_ap(d, rel, k or 400),
                             atol=1e-12)


def test_ndcg_matches_sklearn():
  rng = np.random.default_rng(1)
  g = rng.integers(0, 4, (20, 60))
  g[:, 0] = 3  # ideal DCG > 0 everywhere (sklearn says 0 where we say NaN)
  # Distinct distances: index and sklearn's order coincide.
  d = np.argsort(rng.random((20, 60)), axis=1)
  for k in (1, 10, 60):
    want = [ndcg_score([2.0 ** g[i] - 1], [-d[i]], k=k) for i in range(20)]
    np.testing.assert_allclose(M.ndcg(d, g, k=k), want, atol=1e-12)
  # With ties sklearn averages the gains of tied items: our expected nDCG.
  d = rng.integers(0, 5, (20, 60))
  for k in (1, 7, 60):
    want = [ndcg_score([2.0 ** g[i] - 1], [-d[i]], k=k) for i in range(20)]
    np.testing.assert_allclose(M.ndcg(d, g, k=k, ties="expected"), want, atol=1e-12)


def _permutation_average(fn, d, v, k):
  """Average of the index-tie metric over every relabelling of the gallery (all
  permutations stacked as extra queries, one call)."""
  perms = np.array(list(itertools.permutations(range(d.shape[1]))))      # [P, N]
  q, p = d.shape[0], len(perms)
  values = fn(d[:, perms].reshape(q * p, -1), v[:, perms].reshape(q * p, -1), k=k)
  return values.reshape(q, p).mean(axis=1)


@pytest.mark.parametrize("k", [None, 1, 3, 5, 7])
def test_expected_is_permutation_average(k):
  rng = np.random.default_rng(2)
  d = rng.integers(0, 3, (5, 7))
  g = rng.integers(0, 3, (5, 7))
  rel = (g == 2).astype(int)
  want = _permutation_average(M.average_precision, d, rel, k)
  np.testing.assert_allclose(M.average_precision(d, rel, k=k, ties="expected"), want,
                             atol=1e-12)
  if k is None:
    return
  for fn in (M.ndcg, M.acg, M.weighted_map):
    want = _permutation_average(fn, d, g, k)
    got = fn(d, g, k=k, ties="expected")
    np.testing.assert_allclose(got, want, atol=1e-12, equal_nan=True)
    if fn is not M.weighted_map:  # bounds hold for nDCG and ACG at every k
      ok = np.isnan(got) | ((fn(d, g, k=k, ties="pessimistic") <= got + 1e-12)
                            & (fn(d, g, k=k, ties="optimistic") >= got - 1e-12))
      assert ok.all()


def test_bounds_are_extremes_of_whole_gallery_ap():
  rng = np.random.default_rng(3)
  d = rng.integers(0, 2, (6, 6))
  rel = rng.random((6, 6)) < 0.5
  perms = np.array(list(itertools.permutations(range(6))))
  values = M.average_precision(d[:, perms].reshape(-1, 6),
                               rel[:, perms].reshape(-1, 6)).reshape(6, -1)
  np.testing.assert_allclose(M.average_precision(d, rel, ties="optimistic"),
                             values.max(1), atol=1e-12)
  np.testing.assert_allclose(M.average_precision(d, rel, ties="pessimistic"),
                             values.min(1), atol=1e-12)


def test_expected_large_gallery_is_stable():
  # Harmonic sums via digamma on a large gallery: E[AP] against the two extremes.
  rng = np.random.default_rng(4)
  d = rng.integers(0, 17, (4, 20000))
  rel = rng.random((4, 20000)) < 0.05
  e = M.average_precision(d, rel, ties="expected")
  lo = M.average_precision(d, rel, ties="pessimistic")
  hi = M.average_precision(d, rel, ties="optimistic")
  assert np.all((lo <= e) & (e <= hi))
  e100 = M.average_precision(d, rel, k=100, ties="expected")
  assert np.all(np.isfinite(e100)) and np.all((e100 >= 0) & (e100 <= 1))


def test_errors():
  with pytest.raises(ValueError, match="ties must be one of"):
    M.average_precision(D, REL, ties="random")
  with pytest.raises(ValueError, match="integer"):
    M.average_precision(D.astype(float), REL)
  with pytest.raises(ValueError, match="shape"):
    M.ndcg(D, REL[:, :3], k=2)
  with pytest.raises(ValueError, match="positive integer"):
    M.acg(D, REL, k=0)
  with pytest.raises(ValueError, match="non-negative"):
    M.ndcg(D, -REL, k=2)
