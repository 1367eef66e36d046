"""Whole-gallery mAP: code-level evaluation against the per-query NumPy argsort loop.

1,000 queries x 100,000 gallery items, 64-bit codes, 10 classes (relevant = same class;
codes are noisy copies of a class code, so rankings are informative and ties are many).

* reference: the loop of the published hashing code - per query a one-hot label product
  for relevance, a float Hamming distance 0.5 * (K - b_q . B^T), an argsort (made stable
  here, so that ties go by gallery index and the values are comparable) and the precision
  at every relevant rank;
* ours: `evaluate_codes(..., whole_gallery=True)` from the packed codes and labels
  (distances in jitted chunks, a counting sort of the small-integer distances).

Prints both times, the speed-up, and the largest difference of the per-query APs (they
must be identical up to float rounding). Also times the tie-aware expected mAP, which needs
only the per-query distance histograms.

    python bench/metrics.py [--queries 1000 --gallery 100000 --bits 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dnh_jax.data.schema import Characteristic, Schema  # pylint: disable=g-import-not-at-top
from dnh_jax.evaluation.evaluator import evaluate_codes
from dnh_jax.retrieval.codes import pack_codes

import load_guard  # bench/load_guard.py: prints the load, refuses a loaded machine


def reference_map(query_bits, query_onehot, gallery_bits, gallery_onehot) -> np.ndarray:
  """The published per-query loop, with a stable argsort (ties by gallery index)."""
  num_bits = query_bits.shape[1]
  aps = np.zeros(len(query_bits))
  for i in range(len(query_bits)):
    gnd = (query_onehot[i] @ gallery_onehot.T > 0).astype(np.float32)
    hamm = 0.5 * (num_bits - query_bits[i] @ gallery_bits.T)
    gnd = gnd[np.argsort(hamm, kind="stable")]
    total = int(gnd.sum())
    if total == 0:
      continue
    count = np.linspace(1, total, total)
    where = np.asarray(np.where(gnd == 1)) + 1.0
    aps[i] = np.mean(count / where)
  return aps


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--queries", type=int, default=1000)
  parser.add_argument("--gallery", type=int, default=100_000)
  parser.add_argument("--bits", type=int, default=64)
  parser.add_argument("--classes", type=int, default=10)
  load_guard.add_flag(parser)
  args = parser.parse_args(argv)
  load_guard.start(args)
  rng = np.random.default_rng(0)
  centers = rng.choice([-1.0, 1.0], (args.classes, args.bits))

  def make(n):
    labels = rng.integers(0, args.classes, n).astype(np.int32)
    flips = rng.random((n, args.bits)) < 0.3
    # float32 +-1 codes, as the published code gets them from its network.
    return (np.where(flips, -1.0, 1.0) * centers[labels]).astype(np.float32), labels

  q_bits, q_lab = make(args.queries)
  g_bits, g_lab = make(args.gallery)
  schema = Schema((Characteristic("label", tuple(f"c{i}" for i in range(args.classes))),))
  onehot = np.eye(args.classes, dtype=np.float32)
  print(f"{args.queries:,} queries x {args.gallery:,} gallery, {args.bits} bits, "
        f"{args.classes} classes, {os.cpu_count()} cores")

  def ours(ties="index", count=args.queries):
    out = evaluate_codes(q_bits[:count], {"label": q_lab[:count]}, g_bits,
                         {"label": g_lab}, schema=schema, ks=(), ties=ties,
                         whole_gallery=True, radius=None)
    return out["AP"]

  ours(count=min(args.queries, 128))  # compile the distance kernel
  ours("expected", count=min(args.queries, 128))
  t0 = time.perf_counter()
  ap = ours()
  t_ours = time.perf_counter() - t0
  t0 = time.perf_counter()
  ap_exp = ours("expected")
  t_exp = time.perf_counter() - t0
  t0 = time.perf_counter()
  ap_ref = reference_map(q_bits, onehot[q_lab], g_bits, onehot[g_lab])
  t_ref = time.perf_counter() - t0
  diff = float(np.max(np.abs(ap - ap_ref)))
  print(f"reference loop (stable argsort): {t_ref:8.2f} s   mAP {ap_ref.mean():.6f}")
  print(f"code-level, ties=index:          {t_ours:8.2f} s   mAP {ap.mean():.6f}   "
        f"speed-up {t_ref / t_ours:.1f}x   max |AP diff| {diff:.1e}")
  print(f"code-level, ties=expected:       {t_exp:8.2f} s   mAP {ap_exp.mean():.6f}   "
        f"speed-up {t_ref / t_exp:.1f}x")
  packed = pack_codes(g_bits)
  print(f"(gallery codes packed: {packed.nbytes / 2**20:.1f} MiB)")
  return 0 if diff <= 1e-9 else 1


if __name__ == "__main__":
  raise SystemExit(main())
