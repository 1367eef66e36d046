"""Hamming top-k: `hamming_topk` against FAISS IndexBinaryFlat and our distance-only pass.

Gallery of 1,000,000 random codes, 1,000 queries, k = 100, K in {32, 64, 128} (the issue's
setting; flags change it). For every K it prints queries/s of

* `hamming_topk` (exact, ordered by (distance, index)),
* FAISS `IndexBinaryFlat.search` (heap top-k, ties by id; all CPU threads),
* our distance-only pass: the same fused XOR + popcount over the words-major layout with
  a per-group minimum and nothing else - the compute floor of the kernel,
* the plain call `hamming_topk(numpy queries, numpy gallery, k)` on the first
  `--plain_queries` (200) queries, which lays the gallery out on every call (no cached
  index), against FAISS on the same queries,

their ratios measured in the same run (rounds interleaved, best round of each kept, so
load from other processes hits all three alike), and checks that our results equal
FAISS's exactly. The last line gives the peak resident memory of the process.

    python bench/hamming.py [--gallery 1000000 --queries 1000 --k 100 --bits 32,64,128]
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp

from dnh_jax.retrieval import hamming  # pylint: disable=g-import-not-at-top

import load_guard  # bench/load_guard.py: prints the load, refuses a loaded machine


@functools.partial(jax.jit, static_argnames=("terms",))
def _distance_only(q, grouped, terms):
  d = hamming._distance(lambda w: q[:, w, None, None], lambda w: grouped[w][None], terms,
                        (q.shape[0],) + grouped.shape[1:])
  return jnp.min(d, axis=1)


def _best_rate(fn, count: int, rounds: list[float]) -> None:
  t0 = time.perf_counter()
  fn()
  rounds.append(count / (time.perf_counter() - t0))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--gallery", type=int, default=1_000_000)
  parser.add_argument("--queries", type=int, default=1000)
  parser.add_argument("--k", type=int, default=100)
  parser.add_argument("--bits", default="32,64,128")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--plain_queries", type=int, default=200,
                      help="queries of the plain numpy call (layout per call)")
  parser.add_argument("--word_bits", default="auto", choices=("auto", "32", "64"),
                      help="hamming_topk's word width (auto: 64 at >= 128 bits on CPU)")
  parser.add_argument("--threads", type=int, default=os.cpu_count(),
                      help="FAISS OpenMP threads (default: all cores)")
  load_guard.add_flag(parser)
  args = parser.parse_args(argv)
  guard = load_guard.start(args)
  try:
    import faiss  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("faiss is not installed (pip install faiss-cpu); it is the reference here")
    return 1
  faiss.omp_set_num_threads(args.threads)
  rng = np.random.default_rng(0)
  print(f"gallery {args.gallery:,}, {args.queries:,} queries, k={args.k}, "
        f"{os.cpu_count()} cores, jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"faiss {faiss.__version__} ({args.threads} threads)")
  word_arg = args.word_bits if args.word_bits == "auto" else int(args.word_bits)
  plain = min(args.plain_queries, args.queries)
  print(f"{'bits':>5} {'word':>5} {'topk q/s':>10} {'faiss q/s':>10} {'topk/faiss':>10} "
        f"{'plain q/s':>10} {'faiss q/s':>10} {'plain/faiss':>11} "
        f"{'dist q/s':>10} {'topk/dist':>10}  exact   (plain: {plain} queries, numpy "
        "gallery, layout per call)")
  for bits in (int(b) for b in args.bits.split(",")):
    if bits % 32:
      raise SystemExit(f"--bits: use multiples of 32 (FAISS needs whole bytes), got {bits}")
    words = bits // 32
    gallery = rng.integers(0, 2**32, (args.gallery, words), dtype=np.uint32)
    queries = rng.integers(0, 2**32, (args.queries, words), dtype=np.uint32)
    index = faiss.IndexBinaryFlat(bits)
    index.add(gallery.view(np.uint8))
    gallery_dev = jax.device_put(gallery)
    word = hamming.choose_word_bits(word_arg, words)
    chunk, group = hamming.DEFAULT_QUERY_CHUNK, hamming.DEFAULT_GROUP
    padded = -(-args.queries // chunk) * chunk
    q_pad = np.concatenate([queries, np.zeros((padded - args.queries, words), np.uint32)])
    with jax.enable_x64(word == 64):  # the distance-only pass on the kernel's words
      gal, qp = ((hamming._words64(gallery_dev), hamming._words64(q_pad)) if word == 64
                 else (gallery_dev, q_pad))
      terms, _ = hamming.distance_terms(gal.shape[1], word_bits=word)
      layout = hamming._layout_jit(gal, args.k, group)
      q_dev = jnp.asarray(qp)

    def ours():
      return hamming.hamming_topk(queries, gallery_dev, args.k, word_bits=word)

    def plain_call():
      return hamming.hamming_topk(queries[:plain], gallery, args.k, word_bits=word)

    def reference():
      return index.search(queries.view(np.uint8), args.k)

    def plain_reference():
      return index.search(queries[:plain].view(np.uint8), args.k)

    def distance_only():
      with jax.enable_x64(word == 64):
        outs = [_distance_only(q_dev[s:s + chunk], layout[0], terms)
                for s in range(0, padded, chunk)]
        return jax.block_until_ready(outs)

    ours()  # compile
    plain_call()
    distance_only()
    index.search(queries[:10].view(np.uint8), args.k)
    rates = {"ours": [], "faiss": [], "plain": [], "faiss_plain": [], "dist": []}
    for _ in range(args.rounds):
      _best_rate(ours, args.queries, rates["ours"])
      _best_rate(reference, args.queries, rates["faiss"])
      _best_rate(plain_call, plain, rates["plain"])
      _best_rate(plain_reference, plain, rates["faiss_plain"])
      _best_rate(distance_only, args.queries, rates["dist"])
    d, i = ours()
    d_ref, i_ref = reference()
    dp, ip = plain_call()
    exact = bool(np.array_equal(d, d_ref) and np.array_equal(i, i_ref)
                 and np.array_equal(dp, d_ref[:plain]) and np.array_equal(ip, i_ref[:plain]))
    best = {name: max(r) for name, r in rates.items()}
    print(f"{bits:>5} {word:>5} {best['ours']:>10.0f} {best['faiss']:>10.0f} "
          f"{best['ours'] / best['faiss']:>10.2f} {best['plain']:>10.0f} "
          f"{best['faiss_plain']:>10.0f} {best['plain'] / best['faiss_plain']:>11.2f} "
          f"{best['dist']:>10.0f} {best['ours'] / best['dist']:>10.2f}  {exact}{guard.mark}",
          flush=True)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f"peak resident memory: {peak:.0f} MiB")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
