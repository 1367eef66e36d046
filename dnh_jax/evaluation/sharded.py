"""Retrieval evaluation over a gallery sharded across devices and processes.

In a multi-process run the gallery codes stay where they were encoded: a uint32 [N_pad, W]
jax.Array split row-wise over the mesh's `data` axis, device j holding the contiguous rows
[j * L, (j + 1) * L) (rows >= N are padding). Nothing of size N is gathered to a host.

The metrics are exactly those of `evaluate_codes` / `Evaluator`, computed from two kinds
of gallery quantities, both exact under sharding:

* the top-k lists (index ties): `hamming_topk` over the sharded gallery, each device
  ranking its rows and the shard lists merged exactly by (distance, gallery index);
* per-query sums over gallery items - relevant items, items and hits within radius r,
  items per gain value (ideal DCG), and for `ties="expected"` the per-distance histograms:
  each process sums over its own rows, and the integer sums are added across processes.

So each process does O(Q * N / P) of the distance and label work, and the numbers agree
exactly (not to a tolerance) with a one-process evaluation of the same codes. Orders that
need the whole ranking (`ties="optimistic" | "pessimistic"`) gather the packed gallery to
every process and run `evaluate_codes` (correct, not distributed).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dnh_jax.data.schema import Schema
from dnh_jax.evaluation import metrics as M
from dnh_jax.evaluation import evaluator as evaluator_lib
from dnh_jax.evaluation.evaluator import evaluate_codes
from dnh_jax.evaluation.relevance import check_labels, get_relevance
from dnh_jax.retrieval.codes import unpack_codes
from dnh_jax.retrieval.hamming import distance_terms, hamming_distances, hamming_topk

SHARDED_TIES = ("index", "expected")


# ----------------------------------------------------------------------------- layout

@dataclasses.dataclass(frozen=True)
class RowPlan:
  """Device-major order for encoding N items on a 1-D mesh in fixed-size batches.

  Device j of the mesh owns items [j * rows_per_device, (j + 1) * rows_per_device); in
  step t it encodes rows t * per_device_batch ... of its block. The encoded pieces then
  stay on their devices and form the sharded gallery without any data movement.

  Args:
    num_items: N.
    num_devices: devices on the mesh axis.
    batch_size: global batch per step (rounded down to a multiple of num_devices).
  """

  num_items: int
  num_devices: int
  batch_size: int

  @property
  def per_device_batch(self) -> int:
    return max(1, self.batch_size // self.num_devices)

  @property
  def rows_per_device(self) -> int:
    b = self.per_device_batch
    per = -(-self.num_items // self.num_devices)
    return max(b, -(-per // b) * b)

  @property
  def num_steps(self) -> int:
    return self.rows_per_device // self.per_device_batch

  @property
  def padded_items(self) -> int:
    return self.rows_per_device * self.num_devices

  def rows(self, step: int, position: int) -> np.ndarray:
    """int64[per_device_batch]: item indices device `position` encodes in `step`
    (values >= num_items are padding)."""
    b = self.per_device_batch
    return position * self.rows_per_device + step * b + np.arange(b, dtype=np.int64)


def mesh_positions(mesh: Mesh, axis: str, num_rows: int) -> dict:
  """{addressable device: its block index along `axis`} for a row-sharded [num_rows, ...]."""
  sharding = NamedSharding(mesh, P(axis))
  n = mesh.shape[axis]
  block = num_rows // n
  return {d: (idx[0].start or 0) // block
          for d, idx in sharding.addressable_devices_indices_map((num_rows,)).items()}


@dataclasses.dataclass
class ShardedCodes:
  """Packed codes whose rows are split over a mesh axis.

  Attributes:
    packed: uint32[N_pad, W] jax.Array, rows split over `axis` of `mesh`.
    num_items: N; rows >= N are padding and never reported.
    mesh, axis: where the rows live.
  """

  packed: jax.Array
  num_items: int
  mesh: Mesh
  axis: str

  @property
  def padding(self) -> int:
    return self.packed.shape[0] - self.num_items

  def local_blocks(self) -> list[tuple[int, np.ndarray]]:
    """This process's rows: [(first row, uint32[n, W])], padding cut off, by row."""
    out = []
    for shard in self.packed.addressable_shards:
      start = shard.index[0].start or 0
      stop = min(shard.index[0].stop or self.packed.shape[0], self.num_items)
      if stop > start:
        out.append((start, np.asarray(shard.data)[:stop - start]))
    # Replicas of one block (a mesh smaller than the process's devices) count once.
    unique = {start: block for start, block in out}
    return sorted(unique.items())

  def gather(self) -> np.ndarray:
    """uint32[N, W] on every process (only for small N or whole-ranking tie orders)."""
    if jax.process_count() == 1:
      return np.asarray(self.packed)[:self.num_items]
    full = multihost_utils.process_allgather(self.packed, tiled=True)
    return np.asarray(full)[:self.num_items]


def encode_to_shards(encode_fn: Callable[[jax.Array], jax.Array], images: np.ndarray,
                     mesh: Mesh, axis: str, batch_size: int,
                     preprocess: Callable[[np.ndarray], np.ndarray]) -> ShardedCodes:
  """Encodes `images` in parallel; the packed codes stay on the devices that made them.

  Each process reads and preprocesses only the images of its own devices' row blocks
  (see `RowPlan`), so the work and the host memory are split across processes.

  Args:
    encode_fn: jitted global images [n_dev * b, ...] (rows split over `axis`) -> packed
      codes uint32[n_dev * b, W] with the same row sharding.
    images: the split's images [N, ...] (rows outside this process's blocks are not read).
    mesh, axis: a 1-D row split over `axis`.
    batch_size: global batch per step.
    preprocess: numpy images -> model input (e.g. uint8 -> float32 in [0, 1]).

  Returns:
    ShardedCodes with rows [j * L, (j + 1) * L) on the device at position j of `axis`.
  """
  n_dev = mesh.shape[axis]
  plan = RowPlan(len(images), n_dev, batch_size)
  if len(images) == 0:
    raise ValueError("encode_to_shards: no images")
  b = plan.per_device_batch
  sharding = NamedSharding(mesh, P(axis))
  positions = mesh_positions(mesh, axis, n_dev * b)
  pieces: dict = {device: [] for device in positions}
  shape = None
  for step in range(plan.num_steps):
    arrays = []
    for device, position in positions.items():
      # Padding rows repeat the last image; they are cut off everywhere downstream.
      rows = np.minimum(plan.rows(step, position), len(images) - 1)
      arrays.append(jax.device_put(preprocess(images[rows]), device))
    shape = (n_dev * b,) + arrays[0].shape[1:]
    packed = encode_fn(jax.make_array_from_single_device_arrays(shape, sharding, arrays))
    for shard in packed.addressable_shards:
      pieces[shard.device].append(shard.data)
  blocks = [jnp.concatenate(pieces[device]) for device in positions]
  packed = jax.make_array_from_single_device_arrays(
      (plan.padded_items,) + blocks[0].shape[1:], NamedSharding(mesh, P(axis, None)), blocks)
  return ShardedCodes(packed=packed, num_items=len(images), mesh=mesh, axis=axis)


def bit_balance(codes: ShardedCodes, num_bits: int) -> float:
  """1 - mean_k |mean_n sign(h_nk)| over the real rows, summed across processes.

  Equals the value from the gathered real codes exactly: the per-bit sums are integers.
  """
  total = np.zeros(num_bits, np.int64)
  for _, block in codes.local_blocks():
    total += np.asarray(unpack_codes(block, num_bits), np.int64).sum(axis=0)
  total = sum_over_processes({"bits": total})["bits"]
  return float(1.0 - np.mean(np.abs(total / codes.num_items)))


def sum_over_processes(stats: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Exact sums of int64 arrays over all processes (identity for one process).

  JAX without x64 would turn int64 into int32, so each value travels as two uint32
  halves and is rebuilt here.
  """
  stats = {k: np.asarray(v, np.int64) for k, v in stats.items()}
  if jax.process_count() == 1:
    return stats
  halves = {k: np.stack([(v & 0xFFFFFFFF).astype(np.uint32),
                         ((v >> 32) & 0xFFFFFFFF).astype(np.uint32)])
            for k, v in stats.items()}
  gathered = multihost_utils.process_allgather(halves)   # [P, 2, ...] per key
  out = {}
  for k, g in gathered.items():
    g = np.asarray(g).astype(np.int64)
    lo, hi = g[:, 0], g[:, 1]
    out[k] = np.sum((hi << 32) | lo, axis=0)
  return out


# ----------------------------------------------------------------------------- metrics

def _distance_dtype(max_distance: int):
  return np.uint8 if max_distance < 2**8 else np.uint16 if max_distance < 2**16 else np.int32


def _top_indices(queries, gallery: ShardedCodes, k: int, segments, weights) -> np.ndarray:
  """int[Q, k]: exact top-k over the sharded gallery, padding rows dropped.

  Padding rows have the largest indices, so asking for k + padding items and dropping
  the padding leaves at least k real items, still in (distance, index) order.
  """
  total = gallery.packed.shape[0]
  _, idx = hamming_topk(queries, gallery.packed, min(k + gallery.padding, total),
                        segments=segments, weights=weights, mesh=gallery.mesh,
                        axis_name=gallery.axis)
  idx = np.asarray(idx)
  if not gallery.padding:
    return idx[:, :k]
  real = idx < gallery.num_items
  order = np.argsort(~real, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(idx, order, axis=1)


def sharded_evaluate_codes(query_packed: np.ndarray, query_labels, gallery: ShardedCodes,
                           gallery_labels, *, schema: Schema, relevance="all",
                           ks: Sequence[int] = (100,), ties: str = "index",
                           segments: Sequence[int] | None = None,
                           weights: Sequence[int] | None = None, radius: int | None = 2,
                           num_bits: int | None = None,
                           query_chunk: int = 128) -> dict[str, np.ndarray]:
  """`evaluate_codes` with the gallery sharded over devices and processes.

  Args:
    query_packed: uint32[Q, W], the same on every process.
    query_labels: {characteristic: labels [Q] | [Q, V]}.
    gallery: the sharded packed gallery.
    gallery_labels: labels of all N gallery items (small; every process holds them).
    Others: as `evaluate_codes`.

  Returns:
    The per-query arrays of `evaluate_codes` (without "AP", the whole-gallery AP):
    "AP@k", "nDCG@k", "ACG@k", "wAP@k", "P@r{radius}", "has_relevant"; identical on every
    process and identical to `evaluate_codes` on the gathered codes.
  """
  M._check_ties(ties)  # pylint: disable=protected-access
  qp = np.asarray(query_packed)
  if ties not in SHARDED_TIES:
    logging.warning("ties=%r needs the whole ranking: gathering the gallery codes", ties)
    return evaluate_codes(qp, query_labels, gallery.gather(), gallery_labels, schema=schema,
                          relevance=relevance, ks=ks, ties=ties, segments=segments,
                          weights=weights, radius=radius, num_bits=num_bits,
                          query_chunk=query_chunk)
  words = gallery.packed.shape[1]
  if qp.ndim != 2 or qp.dtype != np.uint32 or qp.shape[1] != words:
    raise ValueError(f"query_packed: expected uint32[Q, {words}], got {qp.dtype}{qp.shape}")
  num_q, n = qp.shape[0], gallery.num_items
  qlab = check_labels(schema, query_labels, num_q, "query_labels")
  glab = check_labels(schema, gallery_labels, n, "gallery_labels")
  rule = get_relevance(relevance, schema)
  max_gain = int(rule.max_gain(schema))
  _, max_distance = distance_terms(words, segments, weights)
  dtype = _distance_dtype(max_distance)
  cut = {int(k): M._cutoff(k, n) for k in ks}  # pylint: disable=protected-access
  kmax = max(cut.values(), default=0)
  top_idx = _top_indices(qp, gallery, kmax, segments, weights) if cut else None

  # Per-query sums over this process's gallery rows; added across processes below.
  size = max_distance + 1
  stats = {"relevant": np.zeros(num_q, np.int64),
           "gain_counts": np.zeros((num_q, max_gain + 1), np.int64)}
  if radius is not None:
    stats["in_radius"] = np.zeros(num_q, np.int64)
    stats["hits_in_radius"] = np.zeros(num_q, np.int64)
  if ties == "expected":
    for name in ("n", "r", "p", "g", "e"):
      stats[name] = np.zeros((num_q, size), np.int64)
  for start, block in gallery.local_blocks():
    sub = {name: x[start:start + len(block)] for name, x in glab.items()}
    for s in range(0, num_q, query_chunk):
      sl = slice(s, min(s + query_chunk, num_q))
      b = sl.stop - sl.start
      d = hamming_distances(qp[sl], block, segments=segments, weights=weights, dtype=dtype)
      rel, gains = rule(schema, {name: x[sl] for name, x in qlab.items()}, sub)
      rel = np.asarray(rel, bool)
      gains = np.asarray(gains, np.int64)
      if gains.size and (gains.min() < 0 or gains.max() > max_gain):
        raise ValueError(f"relevance rule {rule.name!r} gave gains outside [0, {max_gain}]")
      stats["relevant"][sl] += rel.sum(axis=1)
      flat = (gains + np.arange(b)[:, None] * (max_gain + 1)).ravel()
      stats["gain_counts"][sl] += np.bincount(
          flat, minlength=b * (max_gain + 1)).reshape(b, max_gain + 1)
      if radius is not None:
        inside = d <= radius
        stats["in_radius"][sl] += inside.sum(axis=1)
        stats["hits_in_radius"][sl] += (inside & rel).sum(axis=1)
      if ties == "expected":
        flat = (d.astype(np.int64) + np.arange(b)[:, None] * size).ravel()
        columns = {"n": None, "r": rel, "p": gains > 0, "g": gains,
                   "e": (np.int64(1) << gains) - 1}
        for name, col in columns.items():
          w = None if col is None else np.asarray(col, np.int64).ravel()
          stats[name][sl] += np.bincount(flat, w, minlength=b * size).reshape(
              b, size).round().astype(np.int64)
  stats = sum_over_processes(stats)

  out = {"has_relevant": stats["relevant"] > 0}
  if radius is not None:
    count = stats["in_radius"]
    out[f"P@r{radius}"] = np.where(count > 0, stats["hits_in_radius"] / np.maximum(count, 1),
                                   0.0)
  if not cut:
    return out
  values = np.arange(max_gain + 1, dtype=np.float64)
  if ties == "index":
    gathered = {name: x[top_idx] for name, x in glab.items()}
    rel_k, gains_k = rule(schema, qlab, gathered)
    seq_rel, seq_gain = np.asarray(rel_k), np.asarray(gains_k, np.float64)
  else:
    hist = {"n": stats["n"]}
    hist.update({name: stats[name].astype(np.float64) for name in ("r", "p", "g", "e")})
  for key, k in cut.items():
    ideal = M.ideal_dcg(values, stats["gain_counts"], k)
    if ties == "expected":
      ap = M.expected_ap(hist["n"], hist["r"], k)
      dcg = M.expected_dcg(hist["n"], hist["e"], k)
      acg_k = M.expected_acg(hist["n"], hist["g"], k)
      wap = M.expected_wap(hist["n"], hist["p"], hist["g"], k)
    else:
      ap = M.ranked_ap(seq_rel, k)
      dcg = M.ranked_dcg(seq_gain, k)
      acg_k = M.ranked_acg(seq_gain, k)
      wap = M.ranked_wap(seq_gain, k)
    out[f"AP@{key}"] = ap
    with np.errstate(invalid="ignore", divide="ignore"):
      out[f"nDCG@{key}"] = np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1), np.nan)
    out[f"ACG@{key}"] = acg_k
    out[f"wAP@{key}"] = wap
  return out


def _mean(x: np.ndarray) -> float:
  x = np.asarray(x, np.float64)
  x = x[~np.isnan(x)]
  return float(x.mean()) if x.size else float("nan")


class ShardedEvaluator:
  """`Evaluator` for a sharded gallery: the same options, names and numbers.

  `per_query` evaluates once; `summarize` averages over all queries or a query subset
  (a query group), which equals re-running `Evaluator.run` on that subset because every
  metric is per query.
  """

  def __init__(self, schema: Schema, *, ks: Sequence[int] = (10, 100, 1000),
               relevance: str = "all", preferences: Sequence[str] = (),
               segments: Sequence[int] = (), ties: str = "index", radius: int = 2,
               query_chunk: int = 128):
    evaluator_lib.configure(self, schema, ks=ks, relevance=relevance,
                            preferences=preferences, segments=segments, ties=ties,
                            radius=radius, query_chunk=query_chunk)

  def per_query(self, query_packed, query_labels, gallery: ShardedCodes,
                gallery_labels) -> dict[str, dict[str, np.ndarray]]:
    """{"": main per-query arrays, <preference name>: its arrays}."""
    num_bits = sum(self.segments) if self.segments else None
    common = dict(schema=self.schema, ks=self.ks, ties=self.ties, num_bits=num_bits,
                  query_chunk=self.query_chunk)
    out = {"": sharded_evaluate_codes(query_packed, query_labels, gallery, gallery_labels,
                                      relevance=self.relevance, radius=self.radius,
                                      **common)}
    for pref in self.preferences:
      out[pref.name] = sharded_evaluate_codes(
          query_packed, query_labels, gallery, gallery_labels, relevance=pref,
          segments=self.segments, weights=pref.segment_weights if self.segments else None,
          radius=None, **common)
    return out

  def summarize(self, per_query: Mapping[str, Mapping[str, np.ndarray]],
                mask: np.ndarray | None = None) -> dict[str, float]:
    """Flat metrics named as `Evaluator.run` names them, over the queries in `mask`."""
    pick = (lambda x: x) if mask is None else (lambda x: np.asarray(x)[mask])
    main = per_query[""]
    result = {}
    for k in self.ks:
      result[f"mAP@{k}"] = _mean(pick(main[f"AP@{k}"]))
      result[f"nDCG@{k}"] = _mean(pick(main[f"nDCG@{k}"]))
      result[f"ACG@{k}"] = _mean(pick(main[f"ACG@{k}"]))
      result[f"wMAP@{k}"] = _mean(pick(main[f"wAP@{k}"]))
    result[f"P@r{self.radius}"] = _mean(pick(main[f"P@r{self.radius}"]))
    result["frac_no_relevant"] = float(1.0 - np.mean(pick(main["has_relevant"])))
    for pref in self.preferences:
      per = per_query[pref.name]
      for k in self.ks:
        result[f"{pref.name}/mAP@{k}"] = _mean(pick(per[f"AP@{k}"]))
        result[f"{pref.name}/nDCG@{k}"] = _mean(pick(per[f"nDCG@{k}"]))
    return result
