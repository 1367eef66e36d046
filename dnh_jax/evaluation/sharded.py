"""Retrieval evaluation over a gallery sharded across devices and processes.

In a multi-process run the gallery codes stay where they were encoded: a uint32 [N_pad, W]
jax.Array split row-wise over the mesh's `data` axis, device j holding the contiguous rows
[j * L, (j + 1) * L) (rows >= N are padding). Nothing of size N is gathered to a host.

The metrics are exactly those of `evaluate_codes` / `Evaluator` - the same kernel and
finisher (`dnh_jax.evaluation.kernel`), of which one process is the P = 1 case - computed
from two kinds of gallery quantities, both exact under sharding:

* the top-k lists (index ties): `hamming_topk` over the sharded gallery, each device
  ranking its rows and the shard lists merged exactly by (distance, gallery index);
* per-query sums over gallery items - relevant items, items and hits within radius r,
  items per gain value (ideal DCG), and for `ties="expected"` the per-distance histograms:
  each process sums over its own rows, and the integer sums are added across processes.

So each process does O(Q * N / P) of the distance and label work, and the numbers agree
exactly (not to a tolerance) with a one-process evaluation of the same codes. Orders that
need the whole ranking (`ties="optimistic" | "pessimistic"`, whole-gallery AP) gather the
packed gallery to every process and run `evaluate_codes` (correct, not distributed).
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
from dnh_jax.evaluation import kernel
from dnh_jax.evaluation import metrics as M
from dnh_jax.evaluation.evaluator import Evaluator, evaluate_codes, top_k_lists
from dnh_jax.evaluation.relevance import check_labels, get_relevance
from dnh_jax.retrieval.codes import unpack_codes
from dnh_jax.retrieval.hamming import hamming_topk

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
                           whole_gallery: bool = False, num_bits: int | None = None,
                           query_chunk: int = 128) -> dict[str, np.ndarray]:
  """`evaluate_codes` with the gallery sharded over devices and processes.

  Args:
    query_packed: uint32[Q, W], the same on every process.
    query_labels: {characteristic: labels [Q] | [Q, V]}.
    gallery: the sharded packed gallery.
    gallery_labels: labels of all N gallery items (small; every process holds them).
    Others: as `evaluate_codes`; `whole_gallery` and the bound tie orders gather the
      gallery (they need the whole ranking).

  Returns:
    The per-query arrays of `evaluate_codes`: "AP@k", "nDCG@k", "ACG@k", "wAP@k",
    "P@r{radius}", "has_relevant" (and "AP" with whole_gallery); identical on every
    process and identical to `evaluate_codes` on the gathered codes.
  """
  M._check_ties(ties)  # pylint: disable=protected-access
  qp = np.asarray(query_packed)
  words = gallery.packed.shape[1]
  if num_bits is not None and not 0 < num_bits <= 32 * words:
    raise ValueError(f"num_bits={num_bits} does not fit {words} packed words")
  if ties not in SHARDED_TIES or whole_gallery:
    logging.warning("ties=%r / whole_gallery=%r need the whole ranking: gathering the "
                    "gallery codes", ties, whole_gallery)
    return evaluate_codes(qp, query_labels, gallery.gather(), gallery_labels, schema=schema,
                          relevance=relevance, ks=ks, ties=ties, segments=segments,
                          weights=weights, radius=radius, whole_gallery=whole_gallery,
                          num_bits=num_bits, query_chunk=query_chunk)
  if qp.ndim != 2 or qp.dtype != np.uint32 or qp.shape[1] != words:
    raise ValueError(f"query_packed: expected uint32[Q, {words}], got {qp.dtype}{qp.shape}")
  num_q, n = qp.shape[0], gallery.num_items
  qlab = check_labels(schema, query_labels, num_q, "query_labels")
  glab = check_labels(schema, gallery_labels, n, "gallery_labels")
  rule = get_relevance(relevance, schema)
  plan = kernel.make_plan(words, rule=rule, schema=schema, segments=segments,
                          weights=weights, num_bits=num_bits or 32 * words, radius=radius,
                          hist=ties == "expected", query_chunk=query_chunk)
  cut = {int(k): M._cutoff(k, n) for k in ks}  # pylint: disable=protected-access
  kmax = max(cut.values(), default=0)
  top_idx = _top_indices(qp, gallery, kmax, segments, weights) if cut else None

  # Per-query sums over this process's gallery rows, added across processes.
  sums = kernel.zero_sums(plan, num_q)
  for start, block in gallery.local_blocks():
    part = kernel.gallery_sums(plan, qp, qlab, block,
                               {name: x[start:start + len(block)] for name, x in glab.items()})
    sums = {name: sums[name] + part[name] for name in sums}
  sums = sum_over_processes(sums)
  seq_rel = seq_gain = None
  if ties == "index" and cut:
    seq_rel, seq_gain = top_k_lists(rule, schema, qlab, glab, top_idx)
  return kernel.finish(sums, cut=cut, ties=ties, radius=radius, max_gain=plan.max_gain,
                       seq_rel=seq_rel, seq_gain=seq_gain)


class ShardedEvaluator(Evaluator):
  """`Evaluator` for a sharded gallery (`ShardedCodes`): the same options, names and
  numbers; `per_query` takes packed queries uint32[Q, W] and the sharded gallery."""

  def evaluate(self, query_codes, query_labels, gallery_codes, gallery_labels,
               **options) -> dict[str, np.ndarray]:
    return sharded_evaluate_codes(query_codes, query_labels, gallery_codes, gallery_labels,
                                  **options)
