"""bench/gpu.py, the accelerator benchmark, in its CPU smoke mode, and its exactness check.

The full run needs one GPU (bench/gpu.sh); here `--smoke` runs every part in seconds on CPU
(20k codes, small_cnn at 32 px, 2 steps) with FAISS's CPU index as the Hamming reference
where no GPU build is installed, and the printed lines must parse.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
sys.path.insert(0, BENCH)
import torch_compat  # pylint: disable=wrong-import-position  (tests/torch_compat.py)
import gpu  # pylint: disable=g-import-not-at-top,wrong-import-position  (bench/gpu.py)

FLOAT = r"([0-9]+(?:\.[0-9]+)?)"
HAMMING_ROW = re.compile(r"^\[hamming\]\s+([\d,]+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(.*)$")


@pytest.fixture(scope="module")
def smoke_output():
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, os.path.join(BENCH, "gpu.py"), "--smoke",
                         "--allow-load"], capture_output=True, text=True, env=env,
                        timeout=240, cwd=ROOT)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc.stdout.splitlines()


def test_smoke_prints_the_load_guard(smoke_output):
  assert any(line.startswith("load average before: ") for line in smoke_output)
  assert any(line.startswith("load average after: ") for line in smoke_output)


def test_smoke_hamming_rows_parse_and_are_exact(smoke_output):
  rows = [m.groups() for m in map(HAMMING_ROW.match, smoke_output) if m]
  assert [(int(b), int(k)) for _, b, k, *_ in rows] == [(64, 100), (64, 1000),
                                                       (128, 100), (128, 1000)]
  for gallery, _, _, ours, ref, ratio, check in rows:
    assert int(gallery.replace(",", "")) == 20_000 and int(ours) > 0
    # faiss-cpu is in requirements-dev: the CPU index stands in for GpuIndexBinaryFlat.
    assert float(ref) > 0 and ratio.endswith("x") and float(ratio[:-1]) > 0
    assert check.startswith("exact: "), check


def test_smoke_train_and_pipeline_lines_parse(smoke_output):
  text = "\n".join(smoke_output)
  jax_line = re.search(rf"^\[train\] JAX +steps/s +{FLOAT} +images/s +{FLOAT}", text, re.M)
  assert jax_line and float(jax_line.group(1)) > 0
  assert float(jax_line.group(2)) == pytest.approx(8 * float(jax_line.group(1)), rel=1e-3)
  torch_line = re.search(rf"^\[train\] PyTorch +steps/s +{FLOAT} +images/s +{FLOAT}", text,
                         re.M)
  assert torch_line and float(torch_line.group(2)) > 0
  ratio = re.search(rf"^\[train\] JAX/PyTorch {FLOAT}x +\(parameters equal\)", text, re.M)
  assert ratio, text   # the twins have the same parameter count
  for name in ("Batcher.batch", "Batcher.batch \\+ global_batch"):
    rate = re.search(rf"^\[pipeline\] {name} +examples/s +{FLOAT}", text, re.M)
    assert rate and float(rate.group(1)) > 0, name
  assert re.search(r"^\[pipeline\] host keeps up: (yes|NO)", text, re.M), text
  for part in gpu.PARTS:
    assert re.search(rf"^\[{part}\] done in {FLOAT} s", text, re.M), part


def _ranked(queries, gallery, k):
  """Reference top-k ordered by (distance, index), from every distance."""
  d = gpu._popcount(queries[:, None, :] ^ gallery[None])
  order = np.argsort(d, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(d, order, axis=1), order, d


def test_compare_topk_tells_which_check_passed():
  rng = np.random.default_rng(0)
  # Codes with 3 free bits: distances 0..6 over 300 items, so every list has long ties.
  gallery = (rng.integers(0, 8, (300, 1)) << 5).astype(np.uint32)
  queries = (rng.integers(0, 8, (4, 1)) << 5).astype(np.uint32)
  k = 50
  d, i, full = _ranked(queries, gallery, k)
  ok, check = gpu.compare_topk(d, i, d, i, queries, gallery)
  assert ok and check == "exact: distances and indices equal"

  # The same lists with each run of equal distances reversed: FAISS's GPU tie order.
  reversed_ties = np.stack([np.lexsort((-row_i, row_d)) for row_d, row_i in zip(d, i)])
  i_rev = np.take_along_axis(i, reversed_ties, axis=1)
  assert not np.array_equal(i_rev, i)
  ok, check = gpu.compare_topk(d, i, d, i_rev, queries, gallery)
  assert ok and "ordered by index" in check

  # Another item of the k-th distance in place of ours: a valid choice among ties.
  i_alt = i.copy()
  row = 0
  kth = d[row, -1]
  spare = np.setdiff1d(np.flatnonzero(full[row] == kth), i[row])
  assert spare.size, "the k-th distance must be tied beyond the list"
  i_alt[row, -1] = spare[0]
  ok, check = gpu.compare_topk(d, i, d, i_alt, queries, gallery)
  assert ok and check.startswith("exact: distance multiset equal"), check

  # An item of another distance, a repeated item, or wrong distances: mismatches.
  i_bad = i.copy()
  i_bad[row, -1] = np.flatnonzero(full[row] != kth)[-1]
  assert not gpu.compare_topk(d, i, d, i_bad, queries, gallery)[0]
  i_dup = i.copy()
  i_dup[row, -1] = i[row, -2] if d[row, -2] == kth else i[row, 0]
  assert not gpu.compare_topk(d, i, d, i_dup, queries, gallery)[0]
  d_bad = d.copy()
  d_bad[row, -1] += 1
  ok, check = gpu.compare_topk(d, i, d_bad, i, queries, gallery)
  assert not ok and check.startswith("MISMATCH: distances differ")


def test_gallery_sizes_parse():
  assert [gpu._count(x) for x in "20k,1M,10M,1500".split(",")] == [
      20_000, 1_000_000, 10_000_000, 1500]


def test_gpu_sh_is_valid_bash_and_runs_every_part_under_timeout():
  path = os.path.join(BENCH, "gpu.sh")
  subprocess.run(["bash", "-n", path], check=True)
  text = open(path).read()
  assert "set -u" in text and "nvidia-smi" in text and "--probe" in text
  for part in gpu.PARTS:
    assert re.search(rf"^run_part {part} \d+$", text, re.M), part
  assert "timeout --kill-after" in text


def test_torch_resnet50_has_the_jax_models_parameter_count():
  torch_compat.import_torchvision()   # the CPU torch of requirements-dev
  import jax
  import jax.numpy as jnp
  from dnh_jax import config_lib, models
  from dnh_jax.data import schema as schema_lib
  cfg = config_lib.base_config().model
  cfg.backbone, cfg.bits, cfg.classifier = "resnet50", 16, False
  model = models.build_model(cfg, schema_lib.multi_characteristic_schema())
  shapes = jax.eval_shape(lambda: model.init(
      {"params": jax.random.key(0), "dropout": jax.random.key(1)},
      jnp.zeros((2, 224, 224, 1)), train=False))
  ours = sum(x.size for x in jax.tree.leaves(shapes["params"]))
  theirs = sum(p.numel() for p in gpu.torch_model("resnet50", 16, 224).parameters())
  assert ours == theirs == 23_534_544
