"""Splits (seeded, stratified, grouped, held-out aware, hashed) and batches."""

import json
import os

import numpy as np
import pytest

from dnh_jax import config_lib
from dnh_jax import data as data_lib
from dnh_jax.data import batching
from dnh_jax.data import pipeline
from dnh_jax.data import schema as schema_lib

FRACTIONS = np.array([0.6, 0.02, 0.08, 0.1, 0.2])
SCHEMA = schema_lib.multi_characteristic_schema()


def synthetic(combos, per_combo, group_size=1, seed=0):
  """Arrays as a builder returns them: combos[i] repeated per_combo times."""
  rows = [c for c in combos for _ in range(per_combo)]
  n = len(rows)
  enc = [SCHEMA.encode(dict(zip(SCHEMA.names, c))) for c in rows]
  rng = np.random.default_rng(seed)
  return {
      "image": rng.integers(0, 256, (n, 4, 4, 1)).astype(np.uint8),
      "id": np.arange(n, dtype=np.int64) * 3 + 7,
      "group": np.arange(n, dtype=np.int64) // group_size,
      **{k: np.stack([e[k] for e in enc]) for k in SCHEMA.names},
  }


def combos_in(split):
  return {(SCHEMA["modality"].vocabulary[m], SCHEMA["organ"].vocabulary[o])
          for m, o in zip(split.labels["modality"], split.labels["organ"])}


# ------------------------------------------------------------------ split drawing

def test_splits_are_disjoint_complete_deterministic_and_stratified():
  combos = schema_lib.PUBLISHED_COMBINATIONS[:4]
  arrays = synthetic(combos, 250)
  a = pipeline.make_splits(arrays, SCHEMA, fractions=FRACTIONS, seed=3)
  ids = np.concatenate([a[s].ids for s in pipeline.SPLITS])
  assert len(ids) == len(set(ids.tolist())) == 1000
  assert set(ids.tolist()) == set(arrays["id"].tolist())
  for s in pipeline.SPLITS:   # ids ascend; labels and images travel with their ids
    assert np.all(np.diff(a[s].ids) > 0)
    idx = (a[s].ids - 7) // 3
    np.testing.assert_array_equal(a[s].images, arrays["image"][idx])
    np.testing.assert_array_equal(a[s].labels["disease"], arrays["disease"][idx])
  # Stratified: each combination of 250 splits 150 / 5 / 20 / 25 / 50 (+-1).
  for d in np.unique(arrays["disease"]):
    got = [int((a[s].labels["disease"] == d).sum()) for s in pipeline.SPLITS]
    np.testing.assert_allclose(got, 250 * FRACTIONS, atol=1)
  b = pipeline.make_splits(arrays, SCHEMA, fractions=FRACTIONS, seed=3)
  c = pipeline.make_splits(arrays, SCHEMA, fractions=FRACTIONS, seed=4)
  assert pipeline.content_hash(a, SCHEMA) == pipeline.content_hash(b, SCHEMA)
  assert pipeline.content_hash(a, SCHEMA) != pipeline.content_hash(c, SCHEMA)
  for s in pipeline.SPLITS:
    np.testing.assert_array_equal(a[s].ids, b[s].ids)


def test_groups_never_straddle_splits():
  arrays = synthetic(schema_lib.PUBLISHED_COMBINATIONS[:3], 120, group_size=4)
  out = pipeline.make_splits(arrays, SCHEMA, fractions=FRACTIONS, seed=0)
  split_of_group = {}
  for s in pipeline.SPLITS:
    for i in out[s].ids:
      group = int(arrays["group"][(i - 7) // 3])
      assert split_of_group.setdefault(group, s) == s


def test_held_out_pairs_only_in_test_query_and_gallery():
  combos = list(schema_lib.PUBLISHED_COMBINATIONS[:6]) + [
      ("MRI", "breast", d) for d in schema_lib.DISEASES_BY_ORGAN["breast"]]
  arrays = synthetic(combos, 60)
  pairs = (("MRI", "breast"),)
  out = pipeline.make_splits(arrays, SCHEMA, fractions=FRACTIONS, seed=1, pairs=pairs)
  for s in ("train", "val_query", "val_gallery"):
    assert ("MRI", "breast") not in combos_in(out[s]) and len(out[s])
  held = [int(pipeline.held_out_mask(out[s].labels, SCHEMA, pairs).sum())
          for s in ("query", "gallery")]
  assert held == [60, 120]   # all 180 held-out examples, query : gallery = 1 : 2
  with pytest.raises(ValueError, match=r"held_out pair CT/brain has no examples"):
    pipeline.make_splits(arrays, SCHEMA, fractions=FRACTIONS, seed=1, pairs=(("CT", "brain"),))
  chest = schema_lib.chest_multilabel_schema()
  with pytest.raises(ValueError, match=r"needs a 'modality' characteristic.*\['findings'\]"):
    pipeline.held_out_mask({"findings": np.zeros((3, 13))}, chest, pairs)


def test_rare_label_combinations_are_unbiased():
  # Multi-label data where most label sets are unique: pooled, then allocated exactly.
  chest = schema_lib.chest_multilabel_schema()
  rng = np.random.default_rng(0)
  n = 2000
  findings = (rng.random((n, 13)) < 0.25).astype(np.uint8)
  arrays = {"image": np.zeros((n, 2, 2, 1), np.uint8), "id": np.arange(n, dtype=np.int64),
            "group": np.arange(n, dtype=np.int64), "findings": findings}
  out = pipeline.make_splits(arrays, chest, fractions=FRACTIONS, seed=0)
  got = np.array([len(out[s]) for s in pipeline.SPLITS])
  np.testing.assert_allclose(got, n * FRACTIONS, atol=3)
  # Finding prevalence is preserved in the test gallery.
  np.testing.assert_allclose(out["gallery"].labels["findings"].mean(0), findings.mean(0),
                             atol=0.06)


@pytest.mark.parametrize("split,match", [
    ((0.6, 0.1, 0.1, 0.1), "expected 5 fractions"),
    ((0.6, 0.1, 0.1, 0.1, 0.2), "sums to 1.1"),
    ((0.7, -0.1, 0.1, 0.1, 0.2), ">= 0"),
    ((0.9, 0.1, 0.0, 0.0, 0.0), "query and gallery"),
])
def test_bad_split_fractions(split, match):
  with pytest.raises(ValueError, match=match):
    pipeline.split_fractions(split)


# --------------------------------------------------------- load_splits end to end

def small_cfg(**overrides):
  cfg = config_lib.base_config().data
  cfg.image_size, cfg.num_examples = 28, 150
  for k, v in overrides.items():
    setattr(cfg, k, v)
  return cfg


def test_load_splits_and_manifest(tmp_path):
  splits = data_lib.load_splits(small_cfg(), seed=0, data_dir=str(tmp_path / "tfds"))
  assert splits.schema == SCHEMA
  assert set(splits.data) == set(data_lib.SPLITS)
  assert sum(len(v) for v in splits.data.values()) == 150
  assert splits.data["train"].images.shape[1:] == (28, 28, 1)
  assert splits.data["train"].images.dtype == np.uint8
  assert splits.data["train"].labels["modality"].dtype == np.int32
  path = tmp_path / "work" / "split_manifest.json"
  data_lib.write_manifest(splits, str(path))
  assert os.listdir(path.parent) == ["split_manifest.json"]   # no temp file left behind
  manifest = json.loads(path.read_text())
  assert manifest["content_sha256"] == pipeline.content_hash(splits.data, splits.schema)
  for s in data_lib.SPLITS:
    assert manifest["ids"][s] == splits.data[s].ids.tolist()
    assert manifest["counts"][s] == len(splits.data[s])
  again = data_lib.load_splits(small_cfg(), seed=0, data_dir=str(tmp_path / "tfds"))
  pipeline.verify_manifest(again, manifest)
  assert again.manifest["images_sha256"] == manifest["images_sha256"]
  other = data_lib.load_splits(small_cfg(), seed=1, data_dir=str(tmp_path / "tfds"))
  with pytest.raises(ValueError, match="differs from the manifest"):
    pipeline.verify_manifest(other, manifest)


def test_load_splits_held_out_manifest_proves_absence(tmp_path):
  cfg = small_cfg(num_examples=180, held_out=("MRI/breast",))
  splits = data_lib.load_splits(cfg, seed=0, data_dir=str(tmp_path))
  proof = splits.manifest["held_out"]
  assert proof["pairs"] == ["MRI/breast"]
  counts = {s: proof["examples_per_split"][s]["MRI/breast"] for s in data_lib.SPLITS}
  assert counts["train"] == counts["val_query"] == counts["val_gallery"] == 0
  assert counts["query"] > 0 and counts["gallery"] > 0
  assert counts["query"] + counts["gallery"] == 180 // 18 * 3   # 3 of 18 combinations
  assert ("MRI", "breast") in combos_in(splits.data["query"])


def test_load_splits_bad_config(tmp_path):
  with pytest.raises(ValueError, match=r"data.name='phantom'.*'medphantom'"):
    data_lib.load_splits(small_cfg(name="phantom"), seed=0, data_dir=str(tmp_path))
  with pytest.raises(ValueError, match=r"data.held_out: unknown organ 'brest'"):
    data_lib.load_splits(small_cfg(held_out=("MRI/brest",)), seed=0, data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="seed=-1"):
    data_lib.load_splits(small_cfg(), seed=-1, data_dir=str(tmp_path))


# ------------------------------------------------------------------------ batches

def train_split(n=40):
  arrays = synthetic(schema_lib.PUBLISHED_COMBINATIONS[:4], n // 4)
  return pipeline.SplitData(images=arrays["image"],
                            labels={k: arrays[k] for k in SCHEMA.names}, ids=arrays["id"])


def test_batches_are_deterministic_per_seed_and_step():
  split = train_split()
  a = data_lib.Batcher(split, 8, seed=0, augment=True)
  b = data_lib.Batcher(split, 8, seed=0, augment=True)
  for step in (5, 0, 123):   # any order: a batch is a function of (seed, step) only
    for key, value in a.batch(step).items():
      np.testing.assert_array_equal(value, b.batch(step)[key])
  batch = a.batch(0)
  assert batch["image"].dtype == np.float32 and batch["image"].shape == (8, 4, 4, 1)
  assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  assert set(batch) == {"image", *SCHEMA.names}
  assert not np.array_equal(a.batch(1)["image"], batch["image"])
  c = data_lib.Batcher(split, 8, seed=1, augment=True)
  assert not np.array_equal(c.indices(0), a.indices(0))


def test_epochs_are_permutations_and_labels_follow_images():
  split = train_split(40)
  batcher = data_lib.Batcher(split, 8, seed=0, augment=False)
  for epoch in range(3):
    seen = np.concatenate([batcher.indices(epoch * 5 + s) for s in range(5)])
    np.testing.assert_array_equal(np.sort(seen), np.arange(40))
  first = np.concatenate([batcher.indices(s) for s in range(5)])
  second = np.concatenate([batcher.indices(5 + s) for s in range(5)])
  assert not np.array_equal(first, second)   # each epoch has its own order
  idx = batcher.indices(7)
  batch = batcher.batch(7)
  np.testing.assert_array_equal(batch["image"], data_lib.images_to_float(split.images[idx]))
  np.testing.assert_array_equal(batch["disease"], split.labels["disease"][idx])
  # A batch larger than the split spans several epochs.
  big = data_lib.Batcher(split, 100, seed=0, augment=False)
  assert np.bincount(big.indices(0), minlength=40).min() >= 2


def test_process_slices_are_disjoint_and_form_the_global_batch():
  split = train_split(40)
  whole = data_lib.Batcher(split, 12, seed=5, augment=True)
  parts = [data_lib.Batcher(split, 12, seed=5, augment=True, process_index=p, process_count=3)
           for p in range(3)]
  for step in (0, 3, 4):
    idx = [p.indices(step) for p in parts]
    assert len(set(np.concatenate(idx).tolist())) == 12
    joined = {k: np.concatenate([p.batch(step)[k] for p in parts]) for k in whole.batch(0)}
    for key, value in whole.batch(step).items():
      np.testing.assert_array_equal(joined[key], value)
  with pytest.raises(ValueError, match="not divisible by the 5 processes"):
    data_lib.Batcher(split, 12, seed=0, augment=False, process_count=5)
  with pytest.raises(ValueError, match="process_index=3"):
    data_lib.Batcher(split, 12, seed=0, augment=False, process_index=3, process_count=3)
  with pytest.raises(ValueError, match="split is empty"):
    data_lib.Batcher(pipeline.SplitData(split.images[:0], {}, split.ids[:0]), 4, seed=0,
                     augment=False)


def test_augmentation_functions():
  img = np.zeros((1, 5, 5, 1), np.float32)
  img[0, 2, 2, 0] = 1.0
  moved = batching.random_shift(img, np.array([[1, -2]]))
  assert moved[0, 3, 0, 0] == 1.0 and moved.sum() == 1.0
  gone = batching.random_shift(img, np.array([[9, 0]]))
  assert gone.sum() == 0.0
  jit = batching.intensity_jitter(np.full((2, 2, 2, 1), 0.5, np.float32),
                                  np.array([1.1, 3.0]), np.array([0.05, 0.0]))
  np.testing.assert_allclose(jit[0], 0.6, rtol=1e-6)
  np.testing.assert_allclose(jit[1], 1.0)   # clipped
  params = batching.augmentation_params(np.random.default_rng(0), 64, 64)
  assert np.abs(params["shift"]).max() <= 4
  assert np.all(np.abs(params["gain"] - 1) <= 0.1)
  np.testing.assert_array_equal(data_lib.images_to_float(np.array([0, 255], np.uint8)),
                                np.array([0.0, 1.0], np.float32))
