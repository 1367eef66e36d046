"""Clear errors on every corrupt input, early stops on unusable splits, a quiet console.

npz files (truncated, object arrays, float labels and images), split sizes and relevance,
corrupt checkpoints, Ctrl-C and missing config files, NaN metrics, the prepare command.
"""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from dnh_jax import checkpointing
from dnh_jax import cli
from dnh_jax import config_lib
from dnh_jax import metric_writing
from dnh_jax.data import pipeline
from dnh_jax.data import schema as schema_lib
from dnh_jax.evaluation import split_checks
from dnh_jax.data.builders import base
from dnh_jax.data.builders import get_builder
from dnh_jax.data.builders import medmnist

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ MedMNIST npz

def _npz(path, **changes):
  rng = np.random.default_rng(0)
  arrays = {}
  for part, n in (("train", 6), ("val", 3), ("test", 3)):
    arrays[f"{part}_images"] = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
    arrays[f"{part}_labels"] = (np.arange(n) % 4).reshape(-1, 1)
  arrays.update(changes)
  np.savez(path, **arrays)
  return arrays


def _medmnist(manual, data_dir):
  cfg = config_lib.base_config().data
  cfg.name, cfg.manual_dir, cfg.image_size = "medmnist", str(manual), 28
  builder = base.prepare(get_builder(cfg, str(data_dir)))
  return base.read_arrays(builder)


def test_npz_refusals_name_the_file_and_key(tmp_path):
  path = tmp_path / "octmnist.npz"
  _npz(path)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])                  # truncated download
  with pytest.raises(ValueError, match=r"octmnist\.npz is not a readable npz file "
                                       r"\(truncated"):
    medmnist.load_npz(str(path), "octmnist")
  labels = np.empty((6, 1), object)
  labels[:] = 1
  np.savez(path, **{**_npz(path), "train_labels": labels})   # np.savez pickles objects
  with pytest.raises(ValueError, match=r"octmnist\.npz: train_labels is an object"):
    medmnist.load_npz(str(path), "octmnist")
  _npz(path, val_labels=np.array([[0.0], [1.5], [2.0]]))
  with pytest.raises(ValueError, match=r"octmnist\.npz: val_labels holds the non-integer "
                                       r"label 1\.5"):
    medmnist.load_npz(str(path), "octmnist")
  _npz(path, train_images=np.random.default_rng(0).random((6, 28, 28)))   # floats in [0, 1)
  with pytest.raises(ValueError, match=r"octmnist\.npz: train_images has dtype float64 "
                                       r"with values outside the integers 0\.\.255"):
    medmnist.load_npz(str(path), "octmnist")


def test_integral_float_npz_equals_the_uint8_one(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  arrays = _npz(tmp_path / "a" / "octmnist.npz")
  _npz(tmp_path / "b" / "octmnist.npz",
       train_images=arrays["train_images"].astype(np.float32),
       train_labels=arrays["train_labels"].astype(np.float64))
  a = _medmnist(tmp_path / "a", tmp_path / "t")
  b = _medmnist(tmp_path / "b", tmp_path / "t")
  np.testing.assert_array_equal(a["image"], b["image"])   # every part windowed alike
  np.testing.assert_array_equal(a["disease"], b["disease"])


# ------------------------------------------------------------------ split checks

def _splits(disease_per_split):
  schema = schema_lib.multi_characteristic_schema()
  data = {}
  for name in pipeline.SPLITS:
    d = np.asarray(disease_per_split.get(name, [0, 1, 2, 3]), np.int32)
    n = len(d)
    data[name] = pipeline.SplitData(
        images=np.zeros((n, 8, 8, 1), np.uint8), ids=np.arange(n, dtype=np.int64),
        labels={"modality": np.ones(n, np.int32), "organ": np.zeros(n, np.int32),
                "disease": d})
  return pipeline.Splits(schema=schema, data=data, manifest={})


def test_split_checks_stop_early_and_warn():
  logged = []
  shares = split_checks.check_splits(_splits({}), relevance="all", batch_size=2,
                                     log=logged.append)
  assert shares == {"val_query/no_relevant_share": 0.0, "query/no_relevant_share": 0.0}
  assert not logged
  with pytest.raises(ValueError, match=r"split 'val_query' is empty \(train 4, val_query 0, "
                                       r"val_gallery 4"):
    split_checks.check_splits(_splits({"val_query": []}), relevance="all", batch_size=2)
  with pytest.raises(ValueError, match=r"none of the 2 query queries has a relevant item "
                                       r"among the 2 gallery items"):
    split_checks.check_splits(_splits({"query": [0, 1], "gallery": [2, 3]}),
                              relevance="all", batch_size=2)
  split_checks.check_splits(_splits({"val_query": [0, 1, 2, 9]}), relevance="all",
                            batch_size=8, log=logged.append)
  assert any("fewer than train.batch_size=8" in m for m in logged)
  assert any("1 of 4 val_query queries (25%) have no relevant item" in m for m in logged)


# ------------------------------------------------------------------ checkpoints, Ctrl-C

def test_corrupt_checkpoint_falls_back_to_the_previous_step(tmp_path):
  state = {"w": jnp.arange(4.0), "step": jnp.int32(0)}
  ckpt = checkpointing.Checkpoints(str(tmp_path / "ck"), keep=3, best_metric="m")
  for step in (1, 2):
    ckpt.save_last(step, {"w": state["w"] + step, "step": jnp.int32(step)})
  ckpt.wait()
  ckpt.close()
  step2 = tmp_path / "ck" / "last" / "2"
  for dirpath, _, filenames in os.walk(step2):
    for name in filenames:   # truncate every file of step 2
      with open(os.path.join(dirpath, name), "r+b") as f:
        f.truncate(max(os.path.getsize(f.name) // 3, 1))
  logged = []
  ckpt = checkpointing.Checkpoints(str(tmp_path / "ck"), keep=3, best_metric="m")
  got = ckpt.restore_last_good(checkpointing.abstract(state), log=logged.append)
  assert int(got["step"]) == 1
  np.testing.assert_array_equal(got["w"], np.arange(4.0) + 1)
  assert len(logged) == 1 and "checkpoint step 2" in logged[0] and "\n" not in logged[0]
  assert not step2.exists() and os.listdir(tmp_path / "ck" / "corrupt")
  assert ckpt.latest_step() == 1
  ckpt.save_last(2, {"w": state["w"], "step": jnp.int32(2)})   # the step can be saved again
  ckpt.wait()
  ckpt.close()
  empty = checkpointing.Checkpoints(str(tmp_path / "none"), keep=1, best_metric="m")
  assert empty.restore_last_good(checkpointing.abstract(state)) is None
  empty.close()


def test_interrupt_and_errors_are_one_line(capsys):
  with pytest.raises(SystemExit) as exit_info:
    with cli.one_line_errors():
      raise checkpointing.Interrupted(40)
  assert exit_info.value.code == 130
  assert capsys.readouterr().err == (
      "interrupted; the checkpoint of step 40 is safe; rerun to resume\n")
  with pytest.raises(SystemExit) as exit_info:
    with cli.one_line_errors():
      raise ValueError("line one\n  line two")
  assert exit_info.value.code == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("error: line one line two")


def _run(args, cwd):
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=300, check=False)


def test_missing_config_is_one_line_and_creates_nothing(tmp_path):
  out = _run(["dnh_jax.main", f"--config={tmp_path}/nope.py"], tmp_path)
  assert out.returncode == 1
  assert out.stderr.strip().splitlines() == [
      f"error: --config: config file {tmp_path}/nope.py does not exist (expected e.g. "
      "configs/baseline.py) (rerun with --verbosity=1 for the traceback)"]
  assert os.listdir(tmp_path) == []


def test_prepare_builds_without_training_and_prints_the_report(tmp_path):
  import pydicom.data   # pylint: disable=g-import-not-at-top
  root = tmp_path / "dicom"
  root.mkdir()
  src = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")
  for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm"):
    (root / name).write_bytes(open(os.path.join(src, name), "rb").read())
  mapping = tmp_path / "map.json"
  mapping.write_text(json.dumps({"default_organ": "chest"}))
  args = ["dnh_jax.data.prepare", f"--config={REPO}/configs/baseline.py:quick",
          "--config.data.name=dicom", f"--config.data.manual_dir={root}",
          f"--config.data.label_map={mapping}", f"--config.data.data_dir={tmp_path}/tfds"]
  out = _run(args, tmp_path)
  assert out.returncode == 0, out.stderr
  assert "Ingested 2 of 3 files" in out.stdout and "no_pixel_data 1" in out.stdout
  assert "ingest_report.json" in out.stdout and "(built)" in out.stdout
  assert "Using custom data configuration" not in out.stdout + out.stderr
  assert "Downloading" not in out.stdout + out.stderr
  again = _run(args, tmp_path)   # verifies the complete copy, prints the summary again
  assert again.returncode == 0 and "already built, verified" in again.stdout
  assert "Ingested 2 of 3 files" in again.stdout


# ------------------------------------------------------------------ metric logging

def test_undefined_metrics_are_not_written_as_nan(tmp_path, caplog):
  writer = metric_writing.MetricWriter(str(tmp_path))
  writer.write_scalars(1, {"val/mAP@10": 0.5, "val/nDCG@10": float("nan"),
                           "val/x": np.float32(np.inf)})
  writer.close()
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert rows == [{"step": 1, "val/mAP@10": 0.5, "val/nDCG@10": None, "val/x": None}]
  assert "NaN or Inf" not in caplog.text
