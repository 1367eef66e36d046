"""End-to-end retrieval speed: one query image against a 1,000,000-code index.

With the model loaded once (`Retriever`), it prints

* the latency of one query image: encode + search (k = 10, preference
  modality>organ>disease and 'all'), median of --repeats after a warm-up, and its parts;
* the throughput of --queries query images (encode in batches + search all);
* FAISS `IndexBinaryFlat` search of the same codes (preference 'all') in the same run,
  one query and --queries queries, with the check that its ids equal ours;
* index build throughput (images/s): --build PNG files of 64 px, read, converted and
  encoded by `gallery.build_from_folder` as `python -m dnh_jax.index build` does.

The model is the workdir's (--workdir) or, without one, an untrained model of
configs/untrained_combo.py at --image-size px (speed does not depend on training).
The gallery codes are random (speed does not depend on them either).

The load average is printed before and after (bench/load_guard.py); the script refuses
to run when the 1-minute load is above 1.5 unless --allow-load is given, and then marks
every figure as taken under load.

    python bench/query_latency.py                      # 1,000,000 codes, 1,000 queries
    python bench/query_latency.py --gallery=10000 --queries=50 --build=64 --allow-load   # quick
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import load_guard  # bench/load_guard.py: prints the load, refuses a loaded machine


def _untrained_retriever(image_size: int):
  import importlib.util  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from dnh_jax import models  # pylint: disable=g-import-not-at-top
  from dnh_jax.data import schema as schema_lib  # pylint: disable=g-import-not-at-top
  from dnh_jax.retrieval.retriever import Retriever  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(__file__), "..", "configs", "untrained_combo.py")
  spec = importlib.util.spec_from_file_location("untrained_combo_cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.data.image_size = image_size
  schema = schema_lib.multi_characteristic_schema()
  model = models.build_model(config.model, schema)
  key = jax.random.key(0)
  sample = jnp.zeros((2, image_size, image_size, 1), jnp.float32)
  variables = dict(model.init({"params": key, "dropout": key}, sample, train=False))
  return Retriever(config=config, schema=schema, model=model, variables=variables,
                   segments=tuple(models.segments(config.model, schema)),
                   batch_size=int(config.eval.batch_size))


def _median_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
  p.add_argument("--workdir", default="", help="trained model (default: untrained, same net)")
  p.add_argument("--image-size", type=int, default=64)
  p.add_argument("--gallery", type=int, default=1_000_000)
  p.add_argument("--queries", type=int, default=1000)
  p.add_argument("--k", type=int, default=10)
  p.add_argument("--repeats", type=int, default=20)
  p.add_argument("--build", type=int, default=2000, help="images for the build throughput")
  load_guard.add_flag(p)
  args = p.parse_args(argv)
  mark = load_guard.start(args).mark

  from PIL import Image  # pylint: disable=g-import-not-at-top
  from dnh_jax.retrieval import gallery  # pylint: disable=g-import-not-at-top
  from dnh_jax.retrieval import search as search_lib  # pylint: disable=g-import-not-at-top
  from dnh_jax.retrieval.codes import pack_codes  # pylint: disable=g-import-not-at-top
  from dnh_jax.retrieval.index import GalleryIndex  # pylint: disable=g-import-not-at-top
  from dnh_jax.retrieval.retriever import Retriever  # pylint: disable=g-import-not-at-top

  t0 = time.perf_counter()
  r = Retriever.from_workdir(args.workdir) if args.workdir else _untrained_retriever(args.image_size)
  size = r.image_shape[0]
  print(f"model: {'workdir ' + args.workdir if args.workdir else 'untrained untrained_combo'}"
        f", {r.config.model.head}, {size} px, {r.config.model.bits} bits, loaded in "
        f"{time.perf_counter() - t0:.2f} s")
  rng = np.random.default_rng(0)
  bits = int(r.config.model.bits)
  codes = pack_codes(rng.standard_normal((args.gallery, bits)).astype(np.float32))
  n = args.gallery
  index = GalleryIndex(codes=codes, ids=np.arange(n), num_bits=bits, segments=r.segments,
                       schema=r.schema, labels={c.name: rng.integers(0, c.size, n).astype(np.int32)
                                                for c in r.schema.characteristics})
  images = rng.integers(0, 256, (args.queries, size, size, 1), dtype=np.uint8)
  one = images[:1]
  lines = []
  for spec in ("modality>organ>disease", "all"):
    search_lib.search(index, r.encode(one), spec, args.k)  # warm-up: compile
    t_enc = _median_time(lambda: r.encode(one), args.repeats)
    q1 = r.encode(one)
    t_search = _median_time(lambda: search_lib.search(index, q1, spec, args.k), args.repeats)
    t_total = _median_time(lambda: search_lib.search(index, r.encode(one), spec, args.k),
                           args.repeats)
    search_lib.search(index, r.encode(images), spec, args.k)  # warm-up of the batch shapes
    t0 = time.perf_counter()
    res = search_lib.search(index, r.encode(images), spec, args.k)
    t_batch = time.perf_counter() - t0
    lines.append(f"{spec:24s} one query: {t_total * 1e3:8.2f} ms (encode {t_enc * 1e3:.2f} ms"
                 f" + search {t_search * 1e3:.2f} ms); {args.queries} queries: "
                 f"{args.queries / t_batch:8.1f} queries/s{mark}")
  print(f"ours, {n} codes, k={args.k}:")
  print("\n".join("  " + l for l in lines))

  try:
    import faiss  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("FAISS: not installed (pip install faiss-cpu)")
  else:
    fi = faiss.IndexBinaryFlat(codes.shape[1] * 32)
    fi.add(codes.view(np.uint8))
    q_all = pack_codes(r.encode(images)).view(np.uint8)
    fi.search(q_all[:1], args.k)
    t_one = _median_time(lambda: fi.search(q_all[:1], args.k), args.repeats)
    t_e2e = _median_time(lambda: fi.search(pack_codes(r.encode(one)).view(np.uint8), args.k),
                         args.repeats)
    t0 = time.perf_counter()
    _, ids_f = fi.search(q_all, args.k)
    t_batch = time.perf_counter() - t0
    same = np.array_equal(ids_f, res.ids)
    print(f"FAISS IndexBinaryFlat ({faiss.omp_get_max_threads()} threads), same codes, "
          f"preference 'all':")
    print(f"  one query: {t_e2e * 1e3:8.2f} ms end to end (search {t_one * 1e3:.2f} ms); "
          f"{args.queries} queries: {args.queries / t_batch:8.1f} queries/s (search only)"
          f"{mark}; ids equal ours: {same}")

  with tempfile.TemporaryDirectory() as root:
    for i in range(args.build):
      Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(
          os.path.join(root, f"{i:06d}.png"))
    gallery.build_from_folder(r, root, progress_out=open(os.devnull, "w"))  # warm-up
    os.utime(root)
    t0 = time.perf_counter()
    ix, report = gallery.build_from_folder(r, root, progress_out=open(os.devnull, "w"))
    dt = time.perf_counter() - t0
    print(f"index build: {len(ix)} PNG files of 64 px -> {size} px codes: "
          f"{len(ix) / dt:.1f} images/s (read + convert + encode){mark}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
