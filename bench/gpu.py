"""One accelerator benchmark: retrieval kernel, train step and host pipeline on one GPU.

Three parts, each against a reference measured in the same run on the same GPU (rounds
interleaved, best round of each kept):

1. `hamming`: `hamming_topk` (our JAX kernel) against FAISS `GpuIndexBinaryFlat` on random
   codes: 1M and 10M codes, 64 and 128 bits, k = 100 and 1,000. Queries/s of both, their
   ratio, and an exactness check. Distances must be equal. Indices are compared exactly
   first; where they differ, the check falls back to ordering FAISS's equal-distance
   entries by index and then to the distance multiset of the top-k together with the ids
   below the k-th distance (FAISS's GPU k-selection leaves the order and the choice
   among ties at the k-th distance undefined). Each row says which check passed.
2. `train`: a ResNet-50 train step at 224 px in bfloat16 - the trainer's own jitted step
   as bench/train_step.py builds it (DPSH 16 bits, Adam, batch 256) - against PyTorch on
   the same GPU (torchvision resnet50 with a 1-channel stem and the same 16-bit tanh head,
   AMP autocast bf16, channels_last, the same DPSH loss): steps/s and images/s, ratio.
3. `pipeline`: examples/s of the host data pipeline (the trainer's `Batcher` with
   augmentation on a MedPhantom train split built through TFDS, as bench/data_pipeline.py
   builds it; alone and with `global_batch`'s copy to the device) against the device step
   rate of part 2: whether the host keeps up.

A part whose reference cannot be imported prints "SKIPPED: <why>" and the rest still runs.
bench/gpu.sh checks what is importable, tries to install what is missing, and runs each
part in its own process under `timeout` (the parts pass results through --results).

    python bench/gpu.py [--parts hamming,train,pipeline] [--results FILE]
    python bench/gpu.py --probe          # what is importable; last line: pip-missing: ...
    python bench/gpu.py --smoke          # CPU check in seconds (tests/test_bench_gpu.py):
                                         # 20k codes, 64 queries, small_cnn at 32 px, 2 steps
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time

# JAX must not take 75% of the GPU up front: FAISS and PyTorch share the device with it.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import load_guard  # bench/load_guard.py: prints the load, refuses a loaded machine  # noqa: E402

PARTS = ("hamming", "train", "pipeline")
# Defaults of the full run (one GPU, < 5 minutes with bench/gpu.sh) and of --smoke (CPU).
FULL = dict(galleries="1M,10M", bits="64,128", ks="100,1000", queries=1024, rounds=3,
            backbone="resnet50", size=224, batch=256, steps=10, train_rounds=3,
            num_examples=2000, pipeline_steps=20)
SMOKE = dict(galleries="20k", bits="64,128", ks="100,1000", queries=64, rounds=1,
             backbone="small_cnn", size=32, batch=8, steps=2, train_rounds=1,
             num_examples=240, pipeline_steps=3)
# pip names of what the parts import (bench/gpu.sh installs the missing ones, best effort).
DNH_DEPS = (("flax", "flax"), ("optax", "optax"), ("orbax.checkpoint", "orbax-checkpoint"),
            ("ml_collections", "ml-collections"), ("chex", "chex"),
            ("tensorflow_datasets", "tensorflow-datasets"), ("array_record", "array-record"))


def _count(text: str) -> int:
  """'20k' -> 20000, '10M' -> 10000000, '1000' -> 1000."""
  text = text.strip()
  scale = {"k": 10**3, "K": 10**3, "M": 10**6}.get(text[-1:], 1)
  return int(float(text[:-1] if scale > 1 else text) * scale)


def _why(e: BaseException) -> str:
  return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")


def _jax_platform():
  import jax
  return jax, jax.default_backend(), jax.devices()[0].device_kind


# ---------------------------------------------------------------------------- probe


def probe() -> int:
  """Prints what the parts need and whether it imports; the last line lists pip specs of
  what is missing (bench/gpu.sh reads it)."""
  missing = []

  def line(what, ok, detail, spec=None):
    if not ok and spec:
      missing.append(spec)
    print(f"probe: {what:<20} {'ok     ' if ok else 'MISSING'} {detail}".rstrip(), flush=True)

  try:
    jax, platform, kind = _jax_platform()
    line("jax", platform == "gpu", f"jax {jax.__version__}, backend {platform} ({kind})",
         "jax[cuda12]")
  except Exception as e:  # pylint: disable=broad-except
    line("jax", False, _why(e), "jax[cuda12]")
  try:
    import faiss
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    gpu = hasattr(faiss, "GpuIndexBinaryFlat") and gpus > 0
    line("faiss", gpu, f"faiss {faiss.__version__}, "
         + (f"GpuIndexBinaryFlat on {gpus} GPU(s)" if gpu else
            "CPU build (no GpuIndexBinaryFlat)" if not hasattr(faiss, "GpuIndexBinaryFlat")
            else "GPU build but it sees no GPU"), "faiss-gpu-cu12")
  except Exception as e:  # pylint: disable=broad-except
    line("faiss", False, _why(e), "faiss-gpu-cu12")
  try:
    import torch
    cuda = torch.cuda.is_available()
    line("torch", cuda, f"torch {torch.__version__}, CUDA build {torch.version.cuda}, "
         + (f"device {torch.cuda.get_device_name(0)}" if cuda else "no CUDA device"),
         "torch" if torch.version.cuda is None else None)
  except Exception as e:  # pylint: disable=broad-except
    line("torch", False, _why(e), "torch")
  try:
    import torchvision
    line("torchvision", True, f"torchvision {torchvision.__version__}")
  except Exception as e:  # pylint: disable=broad-except
    line("torchvision", False, _why(e), "torchvision")
  for module, spec in DNH_DEPS:
    try:
      importlib.import_module(module)
      line(module, True, "")
    except Exception as e:  # pylint: disable=broad-except
      line(module, False, _why(e), spec)
  for part, module in (("train", "dnh_jax.train"), ("pipeline", "dnh_jax.data.pipeline")):
    try:
      importlib.import_module(module)
      line(f"[{part}]", True, f"{module} imports")
    except Exception as e:  # pylint: disable=broad-except
      line(f"[{part}]", False, f"{module}: {_why(e)}")
  print("pip-missing: " + " ".join(dict.fromkeys(missing)), flush=True)
  return 0


# ---------------------------------------------------------------------------- part 1


def _faiss_reference(smoke: bool):
  """(make_index(bits) or None, name, why not)."""
  try:
    import faiss
  except Exception as e:  # pylint: disable=broad-except
    return None, "", f"faiss not importable ({_why(e)}; pip install faiss-gpu-cu12)"
  has_gpu_class = hasattr(faiss, "GpuIndexBinaryFlat")
  gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
  if has_gpu_class and gpus > 0:
    res = faiss.StandardGpuResources()   # kept alive by the closure

    def make_gpu(bits):
      return faiss.GpuIndexBinaryFlat(res, bits)
    return make_gpu, f"FAISS {faiss.__version__} GpuIndexBinaryFlat (GPU 0)", ""
  why = (f"faiss {faiss.__version__} is a CPU build (no GpuIndexBinaryFlat; pip install "
         "faiss-gpu-cu12)" if not has_gpu_class else
         f"faiss {faiss.__version__} sees no GPU")
  if not smoke:
    return None, "", why
  faiss.omp_set_num_threads(os.cpu_count() or 1)
  return (lambda bits: faiss.IndexBinaryFlat(bits),
          f"FAISS {faiss.__version__} IndexBinaryFlat (CPU, smoke: {why})", "")


def _popcount(x: np.ndarray) -> np.ndarray:
  """uint32[..., W] -> int64[...]: set bits per row."""
  if hasattr(np, "bitwise_count"):
    return np.bitwise_count(x).sum(-1, dtype=np.int64)
  table = np.array([bin(i).count("1") for i in range(256)], np.uint8)
  return table[np.ascontiguousarray(x).view(np.uint8)].sum(-1, dtype=np.int64)


def compare_topk(d, i, d_ref, i_ref, queries, gallery) -> tuple[bool, str]:
  """Checks our (distance, index)-ordered top-k against a reference whose order among
  equal distances may differ. Returns (passed, which check passed or what differs)."""
  d, i = np.asarray(d), np.asarray(i)
  d_ref, i_ref = np.asarray(d_ref).astype(np.int64), np.asarray(i_ref).astype(np.int64)
  if np.array_equal(d, d_ref) and np.array_equal(i, i_ref):
    return True, "exact: distances and indices equal"
  if not np.array_equal(d, np.sort(d_ref, axis=1)):
    rows = int(np.sum(np.any(d != np.sort(d_ref, axis=1), axis=1)))
    return False, f"MISMATCH: distances differ in {rows} of {len(d)} queries"
  order = np.lexsort((i_ref, d_ref), axis=-1)        # reference ties ordered by index
  i_tied = np.take_along_axis(i_ref, order, axis=1)
  if np.array_equal(i, i_tied):
    return True, "exact: distances equal; indices equal once FAISS's ties are ordered by index"
  # The ids below the k-th distance are determined as a set: with ties ordered by index
  # they must match ours position by position. At the k-th distance the reference may keep
  # any of the tied items: each must be a distinct item of that distance.
  inner = d < d[:, -1:]
  recomputed = _popcount(queries[:, None, :] ^ gallery[i_ref])
  distinct = np.all(np.diff(np.sort(i_ref, axis=1), axis=1) != 0)
  if (np.array_equal(np.where(inner, i, -1), np.where(inner, i_tied, -1))
      and np.array_equal(recomputed, d_ref) and distinct):
    rows = int(np.sum(np.any(i != i_tied, axis=1)))
    return True, ("exact: distance multiset equal; ids below the k-th distance equal, ids at "
                  f"the k-th distance valid ({rows} queries chose other tied items)")
  return False, "MISMATCH: distances equal but indices differ beyond ties"


def part_hamming(args, guard, results) -> None:
  jax, platform, kind = _jax_platform()
  from dnh_jax.retrieval import hamming
  if platform != "gpu" and not args.smoke:
    print(f"[hamming] SKIPPED: jax {jax.__version__} has no GPU backend (backend {platform}; "
          "pip install 'jax[cuda12]'); --smoke checks the code on CPU")
    return
  make_index, ref_name, why = _faiss_reference(args.smoke)
  chunk = args.query_chunk or (256 if platform == "gpu" else hamming.DEFAULT_QUERY_CHUNK)
  gallery_chunk = args.gallery_chunk or hamming.DEFAULT_GALLERY_CHUNK
  print(f"[hamming] hamming_topk: jax {jax.__version__} on {platform} ({kind}), query_chunk "
        f"{chunk}, gallery_chunk {gallery_chunk:,}; {args.queries:,} queries, best of "
        f"{args.rounds} interleaved rounds")
  if make_index is None:
    print(f"[hamming] SKIPPED reference: {why}; hamming_topk timed alone")
  else:
    print(f"[hamming] reference: {ref_name}")
  print(f"[hamming] {'gallery':>11} {'bits':>4} {'k':>5} {'topk q/s':>10} {'faiss q/s':>10} "
        f"{'topk/faiss':>10}  check")
  rng = np.random.default_rng(0)
  rows = []
  for n in (_count(g) for g in args.galleries.split(",")):
    for bits in (int(b) for b in args.bits.split(",")):
      if bits % 32:
        raise SystemExit(f"--bits: use multiples of 32, got {bits}")
      words = bits // 32
      gallery = rng.integers(0, 2**32, (n, words), dtype=np.uint32)
      queries = rng.integers(0, 2**32, (args.queries, words), dtype=np.uint32)
      gallery_dev = jax.device_put(gallery)
      index = None
      if make_index is not None:
        index = make_index(bits)
        index.add(gallery.view(np.uint8))
      for k in (int(x) for x in args.ks.split(",")):
        if k > n:
          continue

        def ours(k=k, g=gallery_dev):
          return hamming.hamming_topk(queries, g, k, query_chunk=chunk,
                                      gallery_chunk=gallery_chunk)

        def reference(k=k, index=index):
          return index.search(queries.view(np.uint8), k)

        d, i = ours()                          # compiles; the result is checked below
        if index is not None:
          d_ref, i_ref = reference()           # warm-up of the reference
        rates = {"ours": [], "faiss": []}
        for _ in range(args.rounds):
          for name, fn in (("ours", ours), ("faiss", reference if index else None)):
            if fn is not None:
              t0 = time.perf_counter()
              fn()
              rates[name].append(args.queries / (time.perf_counter() - t0))
        ours_rate = max(rates["ours"])
        if index is not None:
          ok, check = compare_topk(d, i, d_ref, i_ref, queries, gallery)
          ref_rate = max(rates["faiss"])
          ref_col, ratio_col = f"{ref_rate:.0f}", f"{ours_rate / ref_rate:.2f}x"
        else:
          ok, check, ref_rate = None, "n/a: reference SKIPPED", None
          ref_col, ratio_col = "SKIPPED", "-"
        rows.append(dict(gallery=n, bits=bits, k=k, ours_qps=ours_rate, faiss_qps=ref_rate,
                         exact=ok))
        print(f"[hamming] {n:>11,} {bits:>4} {k:>5} {ours_rate:>10.0f} {ref_col:>10} "
              f"{ratio_col:>10}  {check}{guard.mark}", flush=True)
      ours = reference = gallery_dev = index = None   # free the device copies
  results["hamming"] = rows


# ---------------------------------------------------------------------------- part 2


class _SmallCNN:
  """PyTorch twin of dnh_jax SmallCNN (3x3 stride-2 convolutions down to <= 8 px, flatten,
  dense 256): the --smoke network, where a ResNet's compilation would take too long."""

  @staticmethod
  def build(size: int):
    import math
    from torch import nn
    widths = (24, 48, 96)
    layers, cin = [], 1
    for i in range(max(len(widths), math.ceil(math.log2(size / 8)))):
      width = widths[min(i, len(widths) - 1)]
      layers += [nn.Conv2d(cin, width, 3, 2, 1), nn.ReLU()]
      cin = width
    return nn.Sequential(*layers, nn.Flatten(), nn.LazyLinear(256), nn.ReLU())


def torch_model(backbone: str, bits: int, size: int):
  """torchvision ResNet with dnh_jax's 1-channel stem for `size` (>= 128 px the ImageNet
  stem; 48..127 px a 3x3 stride-2 convolution and the pool; < 48 px a 3x3 convolution, no
  pool) and the same head: dense(bits) -> tanh. `small_cnn`: the smoke twin."""
  from torch import nn
  if backbone == "small_cnn":
    trunk, features = _SmallCNN.build(size), 256
  elif backbone in ("resnet18", "resnet50"):
    import torchvision
    trunk = getattr(torchvision.models, backbone)(weights=None, zero_init_residual=True)
    if size >= 128:
      trunk.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    elif size >= 48:
      trunk.conv1 = nn.Conv2d(1, 64, 3, 2, 1, bias=False)
    else:
      trunk.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
      trunk.maxpool = nn.Identity()
    features, trunk.fc = trunk.fc.in_features, nn.Identity()
  else:
    raise ValueError(f"--backbone: {backbone!r} not in ['resnet50', 'resnet18', 'small_cnn']")
  return nn.Sequential(trunk, nn.Linear(features, bits), nn.Tanh())


def torch_runner(args, on_gpu: bool):
  """(run(steps) -> seconds, parameter count, description) or (None, 0, why not)."""
  try:
    import torch
  except Exception as e:  # pylint: disable=broad-except
    return None, 0, f"torch not importable ({_why(e)})"
  import train_step  # bench/train_step.py: the same DPSH loss as the CPU comparison
  if on_gpu and not torch.cuda.is_available():
    return None, 0, (f"torch {torch.__version__} sees no CUDA device (CUDA build "
                     f"{torch.version.cuda}; pip install torch)")
  device = torch.device("cuda" if on_gpu else "cpu")
  try:
    model = torch_model(args.backbone, 16, args.size)
  except Exception as e:  # pylint: disable=broad-except  (torchvision missing or broken)
    return None, 0, f"the PyTorch {args.backbone} cannot be built ({_why(e)})"
  torch.manual_seed(0)
  torch.backends.cudnn.benchmark = True
  fmt = torch.channels_last
  images = torch.rand(args.batch, 1, args.size, args.size, device=device)
  images = images.contiguous(memory_format=fmt)
  labels = torch.randint(0, 3, (args.batch, 3), device=device)
  mask = ~torch.eye(args.batch, dtype=torch.bool, device=device)
  model = model.to(device)
  bf16 = args.dtype == "bfloat16"
  with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
    model(images)                                      # materialises the lazy layer
  model = model.to(memory_format=fmt)
  opt = torch.optim.Adam(model.parameters(), lr=1e-4)
  params = sum(p.numel() for p in model.parameters())

  def sync():
    if on_gpu:
      torch.cuda.synchronize()

  def run(steps: int) -> float:
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
      with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        h = model(images)
      loss = train_step.torch_dpsh_loss(h.float(), labels, mask)
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
    sync()
    return time.perf_counter() - t0

  where = torch.cuda.get_device_name(0) if on_gpu else "CPU"
  desc = (f"torch {torch.__version__} on {where}, "
          f"{'AMP autocast bf16' if bf16 else 'float32'}, channels_last")
  return run, params, desc


def part_train(args, guard, results) -> None:
  jax, platform, kind = _jax_platform()
  if platform != "gpu" and not args.smoke:
    print(f"[train] SKIPPED: jax {jax.__version__} has no GPU backend (backend {platform})")
    return
  import train_step  # bench/train_step.py: the trainer's own step, as that bench builds it
  print(f"[train] {args.backbone} train step, {args.size}x{args.size}x1, batch {args.batch}, "
        f"{args.dtype}, DPSH 16 bits, Adam; best of {args.train_rounds} interleaved rounds "
        f"of {args.steps} steps; jax {jax.__version__} on {platform} ({kind})", flush=True)
  t0 = time.perf_counter()
  run_jax, jax_params = train_step.jax_runner(args.backbone, args.batch, args.size,
                                              dtype=args.dtype)
  run_jax(3)
  print(f"[train] JAX build + compile + 3 steps: {time.perf_counter() - t0:.1f} s", flush=True)
  t0 = time.perf_counter()
  run_torch, torch_params, desc = torch_runner(args, platform == "gpu")
  if run_torch is not None:
    run_torch(3)
    print(f"[train] PyTorch build + 3 steps: {time.perf_counter() - t0:.1f} s", flush=True)
  jax_s, torch_s = [], []
  for _ in range(args.train_rounds):
    jax_s.append(run_jax(args.steps))
    if run_torch is not None:
      torch_s.append(run_torch(args.steps))
  jax_sps = args.steps / min(jax_s)
  results["train"] = dict(backbone=args.backbone, size=args.size, batch=args.batch,
                          jax_steps_per_s=jax_sps, jax_images_per_s=jax_sps * args.batch)
  print(f"[train] JAX      steps/s {jax_sps:9.2f}  images/s {jax_sps * args.batch:9.1f}  "
        f"(dnh_jax make_train_step, {jax_params:,} parameters){guard.mark}", flush=True)
  if run_torch is None:
    print(f"[train] SKIPPED reference: {desc}")
    return
  torch_sps = args.steps / min(torch_s)
  results["train"].update(torch_steps_per_s=torch_sps, torch_images_per_s=torch_sps * args.batch)
  print(f"[train] PyTorch  steps/s {torch_sps:9.2f}  images/s {torch_sps * args.batch:9.1f}  "
        f"({desc}, {torch_params:,} parameters){guard.mark}")
  print(f"[train] JAX/PyTorch {jax_sps / torch_sps:.2f}x  (parameters "
        f"{'equal' if jax_params == torch_params else 'DIFFER'}){guard.mark}", flush=True)


# ---------------------------------------------------------------------------- part 3


def part_pipeline(args, guard, results) -> None:
  try:
    from dnh_jax import config_lib, parallel
    from dnh_jax.data import Batcher, load_splits
    import jax
  except Exception as e:  # pylint: disable=broad-except
    print(f"[pipeline] SKIPPED: the data pipeline does not import ({_why(e)})")
    return
  cfg = config_lib.base_config().data
  cfg.num_examples, cfg.image_size = args.num_examples, args.size
  with tempfile.TemporaryDirectory(prefix="dnh_bench_gpu_") as data_dir:
    t0 = time.perf_counter()
    splits = load_splits(cfg, seed=0, data_dir=data_dir)
    build_s = time.perf_counter() - t0
  split = splits.data["train"]
  batcher = Batcher(split, args.batch, seed=0, augment=True)
  print(f"[pipeline] MedPhantom {cfg.num_examples:,} examples at {cfg.image_size} px built and "
        f"split in {build_s:.1f} s (TFDS, default workers, {os.cpu_count()} cores); train "
        f"split {len(split):,}; Batcher batch {args.batch}, augment, 1 process")
  steps = args.pipeline_steps
  batcher.batch(0)
  t0 = time.perf_counter()
  for s in range(1, steps + 1):
    batcher.batch(s)
  host = steps * args.batch / (time.perf_counter() - t0)
  mesh = parallel.make_mesh(1)
  jax.block_until_ready(parallel.global_batch(batcher.batch(0), mesh))
  t0 = time.perf_counter()
  out = [parallel.global_batch(batcher.batch(s), mesh) for s in range(1, steps + 1)]
  jax.block_until_ready(out)
  fed = steps * args.batch / (time.perf_counter() - t0)
  del out
  platform = jax.default_backend()
  print(f"[pipeline] Batcher.batch                 examples/s {host:9.1f}{guard.mark}")
  print(f"[pipeline] Batcher.batch + global_batch  examples/s {fed:9.1f}  (to {platform})"
        f"{guard.mark}")
  results["pipeline"] = dict(host_examples_per_s=host, fed_examples_per_s=fed)
  train = results.get("train")
  if not train:
    print("[pipeline] device step rate: unknown (part [train] did not report: skipped or "
          "failed); host keeps up: unknown")
    return
  device = train["jax_images_per_s"]
  print(f"[pipeline] device step rate (JAX, [train]) images/s {device:9.1f}  "
        f"({train['backbone']}, {train['size']} px, batch {train['batch']})")
  ratio = fed / device
  verdict = ("yes" if ratio >= 1 else "NO: the device would wait on the host")
  print(f"[pipeline] host keeps up: {verdict} (batch + copy at {ratio:.2f}x the device's "
        f"images/s){guard.mark}", flush=True)


# ---------------------------------------------------------------------------- main


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--parts", default=",".join(PARTS),
                      help=f"comma-separated subset of {PARTS}, or 'none' (the guard only)")
  parser.add_argument("--smoke", action="store_true",
                      help="tiny CPU run: 20k codes, small_cnn at 32 px, 2 steps; parts whose "
                           "GPU reference is missing fall back or are skipped")
  parser.add_argument("--probe", action="store_true",
                      help="print what is importable and the pip specs of what is missing")
  parser.add_argument("--results", default="",
                      help="JSON file the parts add their figures to (part 3 reads part 2's)")
  parser.add_argument("--load-before", default="",
                      help="'L1 L5 L15' read before the first part (bench/gpu.sh)")
  parser.add_argument("--galleries", help=f"gallery sizes (default {FULL['galleries']})")
  parser.add_argument("--bits", help=f"code lengths (default {FULL['bits']})")
  parser.add_argument("--ks", help=f"neighbours k (default {FULL['ks']})")
  parser.add_argument("--queries", type=int, help=f"default {FULL['queries']}")
  parser.add_argument("--rounds", type=int, help=f"default {FULL['rounds']}")
  parser.add_argument("--query_chunk", type=int, default=0,
                      help="hamming_topk query_chunk (default 256 on GPU, the library's on CPU)")
  parser.add_argument("--gallery_chunk", type=int, default=0,
                      help="hamming_topk gallery_chunk (default the library's)")
  parser.add_argument("--backbone", choices=("resnet50", "resnet18", "small_cnn"),
                      help=f"default {FULL['backbone']}")
  parser.add_argument("--size", type=int, help=f"image side (default {FULL['size']})")
  parser.add_argument("--batch", type=int, help=f"default {FULL['batch']}")
  parser.add_argument("--steps", type=int, help=f"timed steps per round (default {FULL['steps']})")
  parser.add_argument("--train_rounds", type=int, help=f"default {FULL['train_rounds']}")
  parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
  parser.add_argument("--num_examples", type=int,
                      help=f"MedPhantom examples built for part 3 (default {FULL['num_examples']})")
  parser.add_argument("--pipeline_steps", type=int, help=f"default {FULL['pipeline_steps']}")
  load_guard.add_flag(parser)
  args = parser.parse_args(argv)
  if args.probe:
    return probe()
  for key, value in (SMOKE if args.smoke else FULL).items():
    if getattr(args, key) is None:
      setattr(args, key, value)
  parts = [] if args.parts == "none" else args.parts.split(",")
  unknown = set(parts) - set(PARTS)
  if unknown:
    parser.error(f"--parts: {sorted(unknown)} not in {PARTS}")
  before = tuple(float(x) for x in args.load_before.split()) if args.load_before else None
  guard = load_guard.start(args, before)
  results = {}
  if args.results and os.path.exists(args.results) and os.path.getsize(args.results):
    with open(args.results) as f:
      results = json.load(f)
  for part in parts:
    t0 = time.perf_counter()
    {"hamming": part_hamming, "train": part_train, "pipeline": part_pipeline}[part](
        args, guard, results)
    print(f"[{part}] done in {time.perf_counter() - t0:.1f} s", flush=True)
    if args.results:
      with open(args.results, "w") as f:
        json.dump(results, f)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
