"""Sharded Hamming ranking at scale: queries/s and memory per device of `hamming_topk`.

Galleries of 1M, 4M and 16M random 64-bit codes are split over 1, 2, 4 and 8 fake CPU
devices (the `data` axis of a mesh) and ranked with `hamming_topk(..., mesh=, axis_name=)`:
each device selects its shard's top-k and the shard lists are merged exactly. One
subprocess per device count, because XLA_FLAGS (the fake device count) is read when jax
is imported. Every configuration's result is compared with the 1-device result of the
same gallery and queries: the merge must be exact.

Usage (from the repository root):
  python bench/scale.py                                   # the full table, ~5-10 min
  python bench/scale.py --sizes=1M --devices=1,2 --queries=64   # a quick look

Columns:
  queries/s    queries / (wall time of the call - JAX tracing and compilation time in it)
  vs 1 dev     queries/s relative to 1 device, same gallery, same run
  codes        gallery bytes held by each device (N / S * 8 bytes)
  work         (process peak RSS during the call - RSS before it) / S: the kernel's
               working set per device (the devices run concurrently in one process)
  peak         codes + work: peak memory per device
  compile      seconds of tracing + compilation inside the timed call (after a warm-up
               call with the same shapes: 0 unless the kernel recompiles per call)
On a CPU host, fake devices share the host's cores: more devices add no compute, so the
queries/s column shows the cost of the shard / all-gather / merge machinery, not a
speed-up. Memory per device is the figure that carries over to real accelerators.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import time

import numpy as np

import load_guard  # bench/load_guard.py: prints the load, refuses a loaded machine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BITS = 64
WORDS = BITS // 32
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


def parse_size(text: str) -> int:
  """'1M' -> 1048576, '4K' -> 4096, '1000' -> 1000."""
  text = text.strip().upper()
  scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
  digits = text[:-1] if scale > 1 else text
  if not digits.isdigit() or int(digits) < 1:
    raise argparse.ArgumentTypeError(f"--sizes: {text!r} is not a size like 1M, 4M, 500K")
  return int(digits) * scale


def _int_list(text: str) -> list[int]:
  try:
    values = [int(v) for v in text.split(",")]
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
  if any(v < 1 for v in values):
    raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
  return values


def _status_kib(field: str) -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise RuntimeError(f"/proc/self/status has no {field}")


def _release_free_memory():
  """Returns freed heap pages to the OS, so the next call's working set shows in RSS."""
  gc.collect()
  ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak_rss():
  # Linux: writing 5 to clear_refs resets VmHWM (the peak RSS) to the current RSS.
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")


def run_worker(sizes: list[int], num_queries: int, k: int, seed: int) -> list[dict]:
  """Measures every gallery size on this process's devices (all of them, one mesh axis)."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from dnh_jax import parallel  # pylint: disable=g-import-not-at-top
  from dnh_jax.retrieval import hamming  # pylint: disable=g-import-not-at-top

  compile_seconds = [0.0]

  def on_duration(event: str, seconds: float, **kwargs):
    del kwargs
    if event in _COMPILE_EVENTS:
      compile_seconds[0] += seconds

  jax.monitoring.register_event_duration_secs_listener(on_duration)
  mesh = parallel.make_mesh()
  devices = mesh.devices.size
  rows = []
  for n in sizes:
    rng = np.random.default_rng([seed, n])
    queries = rng.integers(0, 2**32, size=(num_queries, WORDS), dtype=np.uint32)
    host = rng.integers(0, 2**32, size=(n, WORDS), dtype=np.uint32)
    gallery = jax.device_put(host, NamedSharding(mesh, P(parallel.DATA_AXIS, None)))
    gallery.block_until_ready()
    del host
    # Warm-up with the same shapes: compilation and first-call costs, not per-call ones.
    hamming.hamming_topk(queries, gallery, k, mesh=mesh, axis_name=parallel.DATA_AXIS)
    _release_free_memory()
    rss_before = _status_kib("VmRSS")
    _reset_peak_rss()
    compile_seconds[0] = 0.0
    t0 = time.perf_counter()
    dist, idx = hamming.hamming_topk(queries, gallery, k, mesh=mesh,
                                     axis_name=parallel.DATA_AXIS)
    wall = time.perf_counter() - t0
    peak = _status_kib("VmHWM")
    compiled = compile_seconds[0]
    run = max(wall - compiled, 1e-9)
    rows.append({
        "size": n, "devices": devices, "queries": num_queries, "k": k,
        "qps": num_queries / run, "wall_s": wall, "compile_s": compiled,
        "codes_mib_per_device": n * WORDS * 4 / devices / 2**20,
        "work_mib_per_device": max(peak - rss_before, 0) / 1024 / devices,
        "peak_rss_mib": peak / 1024,
        "checksum": _checksum(np.asarray(dist), np.asarray(idx)),
    })
    del gallery, dist, idx
  return rows


def _checksum(dist: np.ndarray, idx: np.ndarray) -> str:
  import hashlib  # pylint: disable=g-import-not-at-top
  h = hashlib.sha256()
  h.update(np.ascontiguousarray(dist, np.int32).tobytes())
  h.update(np.ascontiguousarray(idx, np.int32).tobytes())
  return h.hexdigest()[:16]


def _spawn(devices: int, args) -> list[dict]:
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={devices}").strip()
  env["JAX_PLATFORMS"] = "cpu"
  # A fixed mmap threshold: large buffers are unmapped when freed (glibc otherwise raises
  # the threshold and keeps them), so each call's working set is visible in the RSS.
  env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 17)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  cmd = [sys.executable, os.path.abspath(__file__), "--worker",
         "--sizes=" + ",".join(str(s) for s in args.sizes), f"--queries={args.queries}",
         f"--k={args.k}", f"--seed={args.seed}"]
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
  if proc.returncode:
    raise RuntimeError(f"worker with {devices} devices failed:\n{proc.stderr[-4000:]}")
  return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def format_table(rows: list[dict]) -> str:
  """The results as a fixed-width table, one line per (gallery size, devices)."""
  header = (f"{'gallery':>8} {'devices':>7} {'queries/s':>10} {'vs 1 dev':>8} "
            f"{'codes MiB':>9} {'work MiB':>8} {'peak MiB':>8} {'compile s':>9} "
            f"{'exact':>5}")
  lines = [header, "-" * len(header)]
  for r in rows:
    lines.append(
        f"{_size_name(r['size']):>8} {r['devices']:>7d} {r['qps']:>10.1f} "
        f"{r['speedup']:>7.2f}x {r['codes_mib_per_device']:>9.1f} "
        f"{r['work_mib_per_device']:>8.1f} "
        f"{r['codes_mib_per_device'] + r['work_mib_per_device']:>8.1f} "
        f"{r['compile_s']:>9.2f} {'yes' if r['exact'] else 'NO':>5}")
  return "\n".join(lines)


def _size_name(n: int) -> str:
  for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
    if n % scale == 0:
      return f"{n // scale}{unit}"
  return str(n)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", type=lambda s: [parse_size(v) for v in s.split(",")],
                      default=[1 << 20, 4 << 20, 16 << 20], help="gallery sizes, e.g. 1M,4M,16M")
  parser.add_argument("--devices", type=_int_list, default=[1, 2, 4, 8],
                      help="fake CPU device counts, e.g. 1,2,4,8")
  parser.add_argument("--queries", type=int, default=128, help="queries per timed call")
  parser.add_argument("--k", type=int, default=100, help="neighbours per query")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", default="", help="also write the rows to this JSON file")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  load_guard.add_flag(parser)
  args = parser.parse_args(argv)
  if not args.worker:   # the parent guards; its workers run under its own load
    load_guard.start(args)
  if args.queries < 1 or args.k < 1:
    parser.error("--queries and --k must be positive")
  if args.k > min(args.sizes):
    parser.error(f"--k={args.k} exceeds the smallest gallery {min(args.sizes)}")

  if args.worker:
    for row in run_worker(args.sizes, args.queries, args.k, args.seed):
      print(json.dumps(row), flush=True)
    return

  rows = []
  for devices in args.devices:
    t0 = time.time()
    rows.extend(_spawn(devices, args))
    print(f"  {devices} device(s): done in {time.time() - t0:.0f} s", file=sys.stderr)
  reference = {}
  for r in sorted(rows, key=lambda r: r["devices"]):
    reference.setdefault(r["size"], r)
  for r in rows:
    ref = reference[r["size"]]
    r["speedup"] = r["qps"] / ref["qps"]
    r["exact"] = r["checksum"] == ref["checksum"]
  rows.sort(key=lambda r: (r["size"], r["devices"]))
  print(f"hamming_topk, {BITS}-bit codes, k={args.k}, {args.queries} queries per call; "
        f"'exact': same distances and indices as {min(args.devices)} device(s)")
  print(format_table(rows))
  if args.json:
    from dnh_jax.utils import atomic_write_json  # pylint: disable=g-import-not-at-top
    atomic_write_json(args.json, rows)
  if not all(r["exact"] for r in rows):
    raise SystemExit("sharded results differ from the 1-device results")


if __name__ == "__main__":
  sys.path.insert(0, REPO)
  main()
