"""Regression tests of correctness smells fixed in issue 12 (one test per smell)."""

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnh_jax import ablate
from dnh_jax import checkpointing
from dnh_jax import config_lib
from dnh_jax import metric_writing
from dnh_jax import parallel
from dnh_jax import train
from dnh_jax import utils
from dnh_jax.data import pipeline
from dnh_jax.data import schema as schema_lib
from dnh_jax.evaluation import Evaluator
from dnh_jax.evaluation import sharded
from dnh_jax.retrieval import pack_codes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = schema_lib.multi_characteristic_schema()


def _labels(rng, n):
  return {c.name: rng.integers(0, min(c.size, 3), n).astype(np.int32)
          for c in SCHEMA.characteristics}


def test_adam_with_weight_decay_is_refused_not_turned_into_adamw():
  tc = config_lib.base_config().train
  tc.weight_decay = 1e-4
  with pytest.raises(ValueError, match="use train.optimizer='adamw'"):
    train.make_optimizer(tc)
  tc.optimizer = "adamw"
  train.make_optimizer(tc)
  tc.optimizer, tc.weight_decay = "adam", 0.0
  train.make_optimizer(tc)


def test_step_schedule_reads_fields_that_a_locked_config_can_set():
  c = config_lib.base_config()
  c.lock()
  c.train.schedule, c.train.warmup_steps = "step", 0
  c.train.decay_every, c.train.decay_rate = 10, 0.5   # AttributeError before the fix
  lr = train.make_schedule(c.train)
  assert float(lr(9)) == pytest.approx(1e-3) and float(lr(10)) == pytest.approx(5e-4)


def test_best_checkpoint_of_a_lower_is_better_metric_is_the_lowest(tmp_path):
  state = {"w": jnp.zeros(3)}
  ckpt = checkpointing.Checkpoints(str(tmp_path), keep=1, best_metric="val/loss",
                                   best_mode="min")
  for step, value in ((1, 0.5), (2, 0.1), (3, 0.9)):
    ckpt.save_best(step, state, {"val/loss": value})
  ckpt.wait()
  assert ckpt.best_step() == 2
  ckpt.close()
  with pytest.raises(ValueError, match="best_mode='lowest'"):
    checkpointing.Checkpoints(str(tmp_path / "x"), keep=1, best_metric="m",
                              best_mode="lowest")


def test_ablation_cell_with_a_corrupt_results_file_is_not_done(tmp_path):
  cells = ablate.make_cells(os.path.join(ROOT, "configs", "ophash.py"), "bits=16,32",
                            base="quick")
  good, bad = (tmp_path / c.name for c in cells)
  for path in (good, bad):
    path.mkdir()
  (good / "results.json").write_text(json.dumps({"test/mAP@100": 0.5}))
  (bad / "results.json").write_text('{"test/mAP@100": 0.')   # cut short by a crash
  status = ablate.run_ablation(cells, str(tmp_path), metrics=["test/*"], dry_run=True,
                               log=lambda _: None)
  assert status == {cells[0].name: "done", cells[1].name: "pending"}
  table = ablate.collect(cells, str(tmp_path), ["test/*"])
  assert [bool(stats) for _, stats in table.rows] == [True, False]


def test_metric_writer_rows_are_on_disk_before_close(tmp_path):
  writer = metric_writing.MetricWriter(str(tmp_path))
  writer.write_scalars(3, {"train/loss": 1.5})
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert rows == [{"step": 3, "train/loss": 1.5}]   # a killed job keeps it
  writer.close()


def test_evaluators_without_a_radius_skip_the_ball_precision():
  rng = np.random.default_rng(0)
  q, g = rng.normal(size=(6, 8)), rng.normal(size=(20, 8))
  ql, gl = _labels(rng, 6), _labels(rng, 20)
  res = Evaluator(SCHEMA, ks=(5,), radius=None).run(q, ql, g, gl)
  assert "mAP@5" in res and not any(k.startswith("P@r") for k in res)
  mesh = parallel.make_mesh()
  pack = jax.jit(pack_codes, in_shardings=parallel.data_sharding(mesh),
                 out_shardings=parallel.data_sharding(mesh))
  gallery = sharded.encode_to_shards(pack, g.astype(np.float32), mesh, parallel.DATA_AXIS,
                                     8, preprocess=lambda x: x)
  ev = sharded.ShardedEvaluator(SCHEMA, ks=(5,), radius=None)
  got = ev.summarize(ev.per_query(pack_codes(q), ql, gallery, gl))
  assert got == res


def test_sharded_evaluation_checks_num_bits():
  rng = np.random.default_rng(1)
  q, g = rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=(8, 8)).astype(np.float32)
  mesh = parallel.make_mesh()
  pack = jax.jit(pack_codes, in_shardings=parallel.data_sharding(mesh),
                 out_shardings=parallel.data_sharding(mesh))
  gallery = sharded.encode_to_shards(pack, g, mesh, parallel.DATA_AXIS, 8,
                                     preprocess=lambda x: x)
  kw = dict(schema=SCHEMA, ks=(4,), ties="expected")
  with pytest.raises(ValueError, match="num_bits=64"):
    sharded.sharded_evaluate_codes(pack_codes(q), _labels(rng, 4), gallery, _labels(rng, 8),
                                   num_bits=64, **kw)
  ql, gl = _labels(rng, 4), _labels(rng, 8)
  a = sharded.sharded_evaluate_codes(pack_codes(q), ql, gallery, gl, num_bits=8, **kw)
  b = sharded.sharded_evaluate_codes(pack_codes(q), ql, gallery, gl, **kw)
  assert all(np.array_equal(a[k], b[k], equal_nan=True) for k in b)


def test_write_manifest_is_the_fsynced_atomic_write(tmp_path, monkeypatch):
  synced = []
  real_fsync = os.fsync
  monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
  splits = pipeline.Splits(schema=SCHEMA, data={}, manifest={"content_sha256": "ab"})
  pipeline.write_manifest(splits, str(tmp_path / "m.json"))
  assert synced and json.load(open(tmp_path / "m.json")) == {"content_sha256": "ab"}


def test_dead_helpers_are_gone():
  assert not hasattr(config_lib, "check_choice")
  assert not hasattr(utils, "sha256_hex")
  assert not hasattr(metric_writing.MetricWriter, "write_hparams")


def test_docstrings_cite_only_files_in_the_repository():
  cited = re.compile(r"\b([A-Z][A-Z_]+\.md)\b")
  missing = []
  for folder in ("dnh_jax", "configs", "bench"):
    for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
      for name in files:
        if name.endswith(".py"):
          path = os.path.join(dirpath, name)
          for doc in cited.findall(open(path).read()):
            if not os.path.exists(os.path.join(ROOT, doc)):
              missing.append(f"{os.path.relpath(path, ROOT)}: {doc}")
  assert not missing, missing


def test_a_train_section_typo_fails_before_any_data_is_read(tmp_path, monkeypatch):
  c = config_lib.base_config()
  c.train.best_mode = "maximum"
  monkeypatch.setattr(pipeline, "load_splits", lambda *a, **k: pytest.fail("data read"))
  with pytest.raises(ValueError, match="train.best_mode='maximum'"):
    train.train_and_evaluate(c, str(tmp_path))
  c.train.best_mode, c.train.optimizer = "max", "adamm"
  with pytest.raises(ValueError, match="train.optimizer='adamm'"):
    train.train_and_evaluate(c, str(tmp_path))
