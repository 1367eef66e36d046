"""Seeded train / validation / test splits of a built dataset, and their manifest.

`load_splits` builds (or reuses) the configured TFDS dataset, reads it through
`as_data_source()` and draws five disjoint splits: train, val_query, val_gallery (model
selection) and query, gallery (the test). The draw is

* seeded and deterministic: the same (data, seed, fractions) always give the same ids;
* grouped: examples sharing a group (a patient) land in the same split;
* stratified by label combination: every stratum is spread over the splits in proportion
  (strata too small for that are pooled), by systematic allocation with a random phase,
  so even single-example strata are unbiased in expectation;
* held-out aware: examples of a `data.held_out` (modality, organ) pair only ever enter
  query and gallery (objective 4), and those of a `data.val_held_out` pair only
  val_query and val_gallery (the validation of transfer: a combination that training
  never saw, for choosing methods and checkpoints without looking at the test pairs);
  the manifest records and proves both.

`write_manifest` stores the ids of every split with sha256 content hashes, so a run can
prove which split it used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from dnh_jax.data import schema as schema_lib
from dnh_jax.data.builders import base
from dnh_jax.data.builders import get_builder
from dnh_jax.data.held_out import parse_held_out
from dnh_jax.utils import atomic_write_text

SPLITS = ("train", "val_query", "val_gallery", "query", "gallery")
TEST_SPLITS = ("query", "gallery")   # the only splits held-out pairs may enter
VAL_SPLITS = ("val_query", "val_gallery")   # the only splits validation-transfer pairs enter
# Zones of `assign_splits`: where an example may go.
FREE, TEST_ONLY, VAL_ONLY = 0, 1, 2
# Strata with fewer examples than this are pooled: proportional allocation needs them.
MIN_STRATUM = 50
_SPLIT_STREAM = 0x5B117   # spawn key of the split draw, apart from every other stream


@dataclasses.dataclass
class SplitData:
  """One split: images uint8[N, H, W, 1], labels {name: int32[N] | uint8[N, V]}, ids."""

  images: np.ndarray
  labels: dict[str, np.ndarray]
  ids: np.ndarray

  def __len__(self) -> int:
    return len(self.ids)


@dataclasses.dataclass
class Splits:
  """The five splits of a dataset, its schema and the manifest proving the draw."""

  schema: schema_lib.Schema
  data: dict[str, SplitData]
  manifest: dict


def split_fractions(split: Sequence[float]) -> np.ndarray:
  """data.split -> float64[5] fractions, validated (non-negative, summing to 1)."""
  values = np.asarray(tuple(split), np.float64)
  if values.shape != (len(SPLITS),):
    raise ValueError(f"data.split={tuple(split)}: expected {len(SPLITS)} fractions for "
                     f"{list(SPLITS)}")
  if not np.all(np.isfinite(values)) or np.any(values < 0):
    raise ValueError(f"data.split={tuple(split)}: fractions must be finite and >= 0")
  if abs(values.sum() - 1.0) > 1e-6:
    raise ValueError(f"data.split={tuple(split)} sums to {values.sum():.6g}; expected "
                     f"fractions of {list(SPLITS)} summing to 1")
  if values[SPLITS.index("query")] <= 0 or values[SPLITS.index("gallery")] <= 0:
    raise ValueError(f"data.split={tuple(split)}: query and gallery need positive fractions")
  return values


def held_out_mask(labels: Mapping[str, np.ndarray], schema: schema_lib.Schema,
                  pairs: Sequence[tuple[str, str]]) -> np.ndarray:
  """bool[N]: the examples whose (modality, organ) is one of `pairs`."""
  n = len(next(iter(labels.values())))
  mask = np.zeros(n, bool)
  if not pairs:
    return mask
  for name in ("modality", "organ"):
    if name not in schema:
      raise ValueError(f"data.held_out={[f'{m}/{o}' for m, o in pairs]} needs a "
                       f"{name!r} characteristic; this dataset has {list(schema.names)}")
  for modality, organ in pairs:
    pair = ((labels["modality"] == schema["modality"].index(modality))
            & (labels["organ"] == schema["organ"].index(organ)))
    if not pair.any():
      raise ValueError(f"data.held_out pair {modality}/{organ} has no examples in this "
                       "dataset; check data.held_out and data.combinations")
    mask |= pair
  return mask


def stratum_ids(labels: Mapping[str, np.ndarray], schema: schema_lib.Schema) -> np.ndarray:
  """int64[N]: one id per distinct label combination (all characteristics)."""
  columns = [np.asarray(labels[c.name]).reshape(len(labels[c.name]), -1)
             for c in schema.characteristics]
  rows = np.concatenate(columns, axis=1).astype(np.int64)
  _, inverse = np.unique(rows, axis=0, return_inverse=True)
  return inverse.reshape(-1).astype(np.int64)


def assign_splits(strata: np.ndarray, groups: np.ndarray, held: np.ndarray,
                  fractions: np.ndarray, seed: int) -> np.ndarray:
  """Draws the split of every example.

  Args:
    strata: int64[N] stratum of each example (see `stratum_ids`).
    groups: int64[N] group of each example; a group is assigned as a whole, in the
      stratum of its first example (a group takes the largest zone of its examples).
    held: bool[N] held-out examples (allowed in query and gallery only), or int[N] zones:
      FREE, TEST_ONLY (query and gallery only) or VAL_ONLY (val_query and val_gallery).
    fractions: float64[5] in SPLITS order.
    seed: non-negative integer.

  Returns:
    int8[N] index into SPLITS.
  """
  rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_SPLIT_STREAM,)))
  _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
  inverse = inverse.reshape(-1)
  size = np.bincount(inverse)
  # The zone of each group; with zones FREE and TEST_ONLY only, the draws equal those of
  # the former bool held-out flag, so existing splits are unchanged.
  zone = np.zeros(len(size), np.int64)
  np.maximum.at(zone, inverse, np.asarray(held).astype(np.int64))
  # A stratum per (zone, label combination); small ones are pooled per zone so that
  # proportions hold overall.
  code = np.unique(np.stack([zone, strata[first]], 1), axis=0,
                   return_inverse=True)[1].reshape(-1)
  small = np.bincount(code, weights=size)[code] < MIN_STRATUM
  code = np.where(small, -1 - zone, code)
  only = {}
  for z, names in ((TEST_ONLY, TEST_SPLITS), (VAL_ONLY, VAL_SPLITS)):
    only[z] = np.zeros_like(fractions)
    for name in names:
      only[z][SPLITS.index(name)] = fractions[SPLITS.index(name)]
  group_split = np.zeros(len(size), np.int8)
  for key in np.unique(code):   # sorted: a fixed order of draws
    members = np.flatnonzero(code == key)
    members = members[rng.permutation(len(members))]
    frac = only.get(int(zone[members[0]]), fractions)
    # Zero-width intervals (fraction 0) are never hit: searchsorted(side="right") skips
    # them, so held-out groups land in query or gallery only.
    bounds = np.cumsum(frac / frac.sum())
    ends = np.cumsum(size[members])
    mids = (ends - size[members] / 2.0) / ends[-1]
    u = (mids + rng.random()) % 1.0   # random phase: unbiased even for one-group strata
    group_split[members] = np.minimum(np.searchsorted(bounds, u, side="right"),
                                      len(SPLITS) - 1)
  return group_split[inverse]


def _hash_arrays(h, name: str, array: np.ndarray):
  array = np.ascontiguousarray(array)
  h.update(f"{name}:{array.dtype.str.lstrip('<>=|')}:{array.shape}\0".encode())
  h.update(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())


def content_hash(data: Mapping[str, SplitData], schema: schema_lib.Schema) -> str:
  """sha256 over every split's ids and labels (SPLITS order, schema order)."""
  h = hashlib.sha256()
  for split in SPLITS:
    _hash_arrays(h, f"{split}/ids", data[split].ids.astype(np.int64))
    for name in schema.names:
      _hash_arrays(h, f"{split}/{name}", data[split].labels[name])
  return h.hexdigest()


def images_hash(data: Mapping[str, SplitData]) -> str:
  """sha256 over every split's images: proves the pixels too."""
  h = hashlib.sha256()
  for split in SPLITS:
    _hash_arrays(h, f"{split}/images", data[split].images)
  return h.hexdigest()


def _pair_counts(split: SplitData, schema, pairs) -> dict[str, int]:
  out = {}
  for modality, organ in pairs:
    mask = ((split.labels["modality"] == schema["modality"].index(modality))
            & (split.labels["organ"] == schema["organ"].index(organ)))
    out[f"{modality}/{organ}"] = int(mask.sum())
  return out


def make_manifest(data: Mapping[str, SplitData], schema: schema_lib.Schema, *,
                  dataset: str, builder, seed: int, fractions: np.ndarray,
                  pairs: Sequence[tuple[str, str]],
                  val_pairs: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
  """The split manifest: ids per split, content hashes and the held-out proof."""
  held = {s: _pair_counts(data[s], schema, pairs) for s in SPLITS} if pairs else {}
  leaked = {s: c for s in SPLITS if s not in TEST_SPLITS for c in held.get(s, {}).values()
            if c}
  if leaked:
    raise AssertionError(f"held-out examples reached training splits: {held}")
  val = {s: _pair_counts(data[s], schema, val_pairs) for s in SPLITS} if val_pairs else {}
  if any(c for s in SPLITS if s not in VAL_SPLITS for c in val.get(s, {}).values()):
    raise AssertionError(f"validation-transfer examples left the validation splits: {val}")
  extra = ({"validation_transfer": {"pairs": [f"{m}/{o}" for m, o in val_pairs],
                                    "examples_per_split": val}} if val_pairs else {})
  return {
      "format": 1,
      "dataset": dataset,
      "builder": builder.info.full_name,
      "builder_params": json.loads(builder.builder_config.params),
      "seed": int(seed),
      "fractions": dict(zip(SPLITS, map(float, fractions))),
      "schema": json.loads(schema.to_json()),
      "counts": {s: len(data[s]) for s in SPLITS},
      "held_out": {"pairs": [f"{m}/{o}" for m, o in pairs], "examples_per_split": held},
      **extra,
      "content_sha256": content_hash(data, schema),
      "images_sha256": images_hash(data),
      "ids": {s: data[s].ids.tolist() for s in SPLITS},
  }


def make_splits(arrays: Mapping[str, np.ndarray], schema: schema_lib.Schema, *,
                fractions: np.ndarray, seed: int, pairs: Sequence[tuple[str, str]] = (),
                val_pairs: Sequence[tuple[str, str]] = ()) -> dict[str, SplitData]:
  """Splits arrays read from a builder ({"image", "id", "group", <characteristic>}).

  `pairs` go to query / gallery only, `val_pairs` to val_query / val_gallery only."""
  labels = {name: arrays[name] for name in schema.names}
  overlap = set(pairs) & set(val_pairs)
  if overlap:
    raise ValueError(f"data.val_held_out shares {sorted('/'.join(p) for p in overlap)} with "
                     "data.held_out: a validation-transfer pair must not be a test pair")
  zones = held_out_mask(labels, schema, pairs).astype(np.int64) * TEST_ONLY
  if val_pairs:
    zones = np.where(held_out_mask(labels, schema, val_pairs), VAL_ONLY, zones)
  which = assign_splits(stratum_ids(labels, schema), arrays["group"], zones, fractions, seed)
  out = {}
  for i, split in enumerate(SPLITS):
    idx = np.flatnonzero(which == i)   # ascending ids: arrays are sorted by id
    out[split] = SplitData(images=arrays["image"][idx],
                           labels={k: v[idx] for k, v in labels.items()},
                           ids=arrays["id"][idx].astype(np.int64))
  return out


def default_data_dir(data_cfg) -> str:
  """Where TFDS builders write: data.data_dir, $DNH_DATA_DIR, or a user cache."""
  return (data_cfg.data_dir or os.environ.get("DNH_DATA_DIR")
          or os.path.join(os.path.expanduser("~"), ".cache", "dnh_jax", "tfds"))


def load_splits(data_cfg, *, seed: int, data_dir: str) -> Splits:
  """Builds or reuses the dataset `data_cfg.name` and draws the five splits.

  Args:
    data_cfg: `config.data` (see `dnh_jax.config_lib.base_config`).
    seed: the split seed (a non-negative integer; `config.seed`).
    data_dir: TFDS directory where datasets are built and cached.

  Returns:
    `Splits` with data for every name in SPLITS and the manifest (see `write_manifest`).
  """
  if int(seed) != seed or seed < 0:
    raise ValueError(f"seed={seed!r}: expected a non-negative integer")
  fractions = split_fractions(data_cfg.split)
  pairs = parse_held_out(data_cfg.held_out)
  val_pairs = parse_held_out(data_cfg.val_held_out, "data.val_held_out")
  builder = get_builder(data_cfg, data_dir)
  expected = builder.params.get("num_examples")
  builder = base.prepare(builder, expected_examples=expected)
  arrays = base.read_arrays(builder)
  schema = builder.schema()
  data = make_splits(arrays, schema, fractions=fractions, seed=int(seed), pairs=pairs,
                     val_pairs=val_pairs)
  manifest = make_manifest(data, schema, dataset=data_cfg.name, builder=builder,
                           seed=int(seed), fractions=fractions, pairs=pairs,
                           val_pairs=val_pairs)
  return Splits(schema=schema, data=data, manifest=manifest)


def write_manifest(splits: Splits, path: str) -> None:
  """Writes `splits.manifest` as JSON to `path` atomically (`utils.atomic_write_text`)."""
  atomic_write_text(path, json.dumps(splits.manifest, separators=(",", ":")) + "\n")


def verify_manifest(splits: Splits, manifest: Mapping[str, Any]) -> None:
  """Raises if `splits` is not the split `manifest` (from a file) describes."""
  got = content_hash(splits.data, splits.schema)
  if manifest.get("content_sha256") != got:
    raise ValueError(f"split content hash {got} differs from the manifest's "
                     f"{manifest.get('content_sha256')}")
