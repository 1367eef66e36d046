"""MedPhantom build time and read throughput through TFDS `as_data_source()`.

    python bench/data_pipeline.py [--num_examples=6000] [--image_size=64]

Prints examples/s for: rendering alone (the reference, measured in the same run on the
first examples), the TFDS build (render + encode + write ArrayRecord) in one process and
with the default worker processes, random-access and
sequential batched reads via `as_data_source()`, and `load_splits` on the cached copy,
each with its ratio to the reference, so numbers from a noisy shared machine stay
comparable.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position  (after the sys.path line)
from dnh_jax import config_lib
from dnh_jax.data import load_splits
from dnh_jax.data.medphantom import renderer as phantom
from dnh_jax.data.builders import base
from dnh_jax.data.builders import get_builder

import load_guard  # bench/load_guard.py: prints the load, refuses a loaded machine


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_examples", type=int, default=6000)
  parser.add_argument("--image_size", type=int, default=64)
  parser.add_argument("--render_reference", type=int, default=300,
                      help="examples rendered directly for the reference rate")
  load_guard.add_flag(parser)
  args = parser.parse_args()
  load_guard.start(args)
  cfg = config_lib.base_config().data
  cfg.num_examples, cfg.image_size = args.num_examples, args.image_size

  with tempfile.TemporaryDirectory(prefix="dnh_bench_tfds_") as data_dir:
    builder = get_builder(cfg, data_dir)
    combos = builder.params["combinations"]
    n_ref = min(args.render_reference, args.num_examples)
    t = time.perf_counter()
    for i in range(n_ref):
      m, o, d = combos[i % len(combos)]
      phantom.render(m, o, d, size=cfg.image_size, seed=i, difficulty=cfg.difficulty)
    render_rate = n_ref / (time.perf_counter() - t)

    # Serial build (one process), then the default (worker processes), in separate dirs.
    serial = get_builder(cfg, os.path.join(data_dir, "serial"))
    serial.num_workers = 1
    t = time.perf_counter()
    serial = base.prepare(serial, expected_examples=cfg.num_examples)
    serial_s = time.perf_counter() - t
    t = time.perf_counter()
    builder = base.prepare(builder, expected_examples=cfg.num_examples)
    build_s = time.perf_counter() - t
    build_rate = cfg.num_examples / build_s
    same = np.array_equal(base.read_arrays(serial)["image"], base.read_arrays(builder)["image"])
    size_mb = sum(os.path.getsize(f) for f in builder.data_path.iterdir()) / 2**20

    source = builder.as_data_source(split=base.SPLIT)
    order = np.random.default_rng(0).permutation(len(source))[:2000]
    t = time.perf_counter()
    for i in order:
      source[int(i)]
    random_rate = len(order) / (time.perf_counter() - t)

    t = time.perf_counter()
    arrays = base.read_arrays(builder)
    batched_rate = len(arrays["id"]) / (time.perf_counter() - t)

    t = time.perf_counter()
    splits = load_splits(cfg, seed=0, data_dir=data_dir)
    load_s = time.perf_counter() - t

  print(f"MedPhantom {cfg.num_examples} examples at {cfg.image_size} px "
        f"({len(combos)} combinations), {size_mb:.1f} MiB on disk")
  rows = [("render only (reference)", render_rate),
          ("build, 1 process (render+encode+write)", cfg.num_examples / serial_s),
          (f"build, default workers ({os.cpu_count()} cores)", build_rate),
          ("read, random access source[i]", random_rate),
          ("read, batched __getitems__ (all)", batched_rate),
          ("load_splits, cached (read+split+hash)", cfg.num_examples / load_s)]
  for name, rate in rows:
    print(f"  {name:40s} {rate:10.0f} examples/s   x{rate / render_rate:6.2f} reference")
  print(f"  build wall time {serial_s:.1f} s serial, {build_s:.1f} s default; identical "
        f"examples: {same}; load_splits {load_s:.2f} s; "
        f"train split {len(splits.data['train'])} examples")


if __name__ == "__main__":
  main()
