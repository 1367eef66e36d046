"""Hamming ranking kernels on packed codes: distances and exact top-k.

`hamming_topk` returns the k nearest gallery items of each query ordered by (distance,
gallery index), exactly, without sorting the gallery. Distances are small integers, and
selection is done in two exact stages:

1. Coarse pass (the only O(N) work). The gallery is cut into contiguous groups of G items
   and laid out words-major as (W, G, N/G), so item g * G + j sits at [:, j, g]. One
   fused XLA loop computes XOR + popcount for every item and takes the minimum over the
   *non-minor* axis j, which vectorises over groups; a per-group minimum over a minor axis
   does not. Only the N/G group minima leave the loop.
2. The k best groups by (minimum, group index) are chosen with `lax.top_k` on the N/G
   minima (a partial selection, not a sort; ties go to the lower index). They contain
   the exact top-k: an item outside them is preceded by the minimum of each chosen group,
   because a chosen group either has a smaller minimum or an equal one and a lower index -
   and, groups being contiguous, lower group index means lower item index. The k * G
   candidates are re-ranked exactly, laid out in gallery-index order so that the stable
   `top_k` breaks distance ties by index.

`lax.top_k` on integers lowers to a full sort on CPU, so keys are float32 (exact below
2**24, checked). Memory is bounded by chunking queries and gallery; partial results are
merged exactly because each chunk's list is already in (distance, index) order and chunks
are concatenated in index order.

Sub-codes (`segments`, in bits) with integer `weights` give the preference distance
sum_c weights[c] * d_c; `priority_weights` builds weights for a strict priority order.
`mesh` + `axis_name` split the gallery over a device mesh axis; each shard selects its
own top-k and the all-gathered shard lists are merged exactly.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dnh_jax.retrieval.codes import WORD_BITS

# One popcount term of a distance: (word, mask or None for all bits, integer weight).
Term = tuple[int, int | None, int]

# float32 represents every integer below 2**24 exactly; top_k keys must stay exact.
MAX_EXACT_DISTANCE = 2**24 - 1
DEFAULT_GROUP = 16
DEFAULT_QUERY_CHUNK = 32
DEFAULT_GALLERY_CHUNK = 1 << 21


def priority_weights(segments: Sequence[int]) -> tuple[int, ...]:
  """Integer weights that rank sub-codes in strict priority order (first = highest).

  The weight of a segment exceeds the largest possible weighted distance of all
  lower-priority segments together, so no difference in those can overturn a difference
  of one bit in a higher-priority segment: w_last = 1, w_c = 1 + sum_{j>c} w_j * K_j.

  Args:
    segments: sub-code lengths in bits, highest priority first, e.g. (16, 16, 16).

  Returns:
    One weight per segment, e.g. (289, 17, 1) for (16, 16, 16).
  """
  segments = _check_segments(segments)
  weights = []
  below = 0  # largest weighted distance of the segments after the current one
  for bits in reversed(segments):
    weight = below + 1
    weights.append(weight)
    below += weight * bits
  return tuple(reversed(weights))


def _check_segments(segments) -> tuple[int, ...]:
  segments = tuple(int(s) for s in segments)
  if not segments or any(s < 1 for s in segments):
    raise ValueError(f"segments must be positive bit counts, got {segments}")
  return segments


def distance_terms(num_words: int, segments: Sequence[int] | None = None,
                   weights: Sequence[int] | None = None, *,
                   word_bits: int = WORD_BITS) -> tuple[tuple[Term, ...], int]:
  """Popcount terms of a (weighted) Hamming distance and its largest possible value.

  Args:
    num_words: W, words per packed code.
    segments: optional sub-code lengths in bits (summing to K, with
      ceil(K / word_bits) = W).
    weights: optional non-negative integer weight per segment (default all 1).
    word_bits: bits per word, 32 (the packed layout) or 64 (pairs of packed words,
      the low word first; see `hamming_topk`'s word_bits).

  Returns:
    (terms, max_distance): the distance is sum over terms of
    weight * popcount((q[word] ^ g[word]) & mask).
  """
  if word_bits not in (32, 64):
    raise ValueError(f"word_bits must be 32 or 64, got {word_bits!r}")
  if segments is None:
    if weights is not None:
      raise ValueError("weights need segments (one weight per sub-code)")
    return tuple((w, None, 1) for w in range(num_words)), num_words * word_bits
  segments = _check_segments(segments)
  total = sum(segments)
  if -(-total // word_bits) != num_words:
    raise ValueError(f"segments {segments} sum to {total} bits, which does not match "
                     f"packed codes of {num_words} words")
  if weights is None:
    weights = (1,) * len(segments)
  if len(weights) != len(segments):
    raise ValueError(f"need one weight per segment: {len(segments)} segments, "
                     f"weights {tuple(weights)}")
  if any(int(w) != w or w < 0 for w in weights):
    raise ValueError(f"weights must be non-negative integers (scale fractional weights "
                     f"to integers), got {tuple(weights)}")
  weights = tuple(int(w) for w in weights)
  masks: dict[tuple[int, int], int] = {}  # (word, weight) -> mask; same weight shares
  start = 0
  for bits, weight in zip(segments, weights):
    for bit in range(start, start + bits):
      if weight:
        key = (bit // word_bits, weight)
        masks[key] = masks.get(key, 0) | (1 << (bit % word_bits))
    start += bits
  full = (1 << word_bits) - 1
  terms = tuple((word, None if mask == full else mask, weight)
                for (word, weight), mask in sorted(masks.items()))
  return terms, sum(b * w for b, w in zip(segments, weights))


def _distance(qword, gword, terms: tuple[Term, ...], shape=None):
  """sum of weight * popcount over terms; qword(w) and gword(w) broadcast together."""
  total = None
  for word, mask, weight in terms:
    x = qword(word) ^ gword(word)
    if mask is not None:
      x = x & jnp.asarray(mask, x.dtype)
    count = lax.population_count(x).astype(jnp.int32)
    if weight != 1:
      count = count * weight
    total = count if total is None else total + count
  if total is None:  # every weight is 0
    total = jnp.zeros(shape, jnp.int32)
  return total


def _pairwise(q, g, terms):
  """int32[Q, N] distances between q [Q, W] and g [N, W] (small blocks)."""
  return _distance(lambda w: q[:, None, w], lambda w: g[None, :, w], terms,
                   (q.shape[0], g.shape[0]))


def pairwise_words_major(q, gt, terms):
  """int32[Q, N] distances between q [Q, W] and a words-major gallery gt [W, N].

  Each word of gt is a contiguous row, which XLA vectorises; reading g[:, w] from an
  [N, W] array is ~3x slower on CPU. Inside one jit a transpose is only a layout change,
  so build gt with `words_major` (its own computation) beforehand.
  """
  return _distance(lambda w: q[:, w, None], lambda w: gt[w][None, :], terms,
                   (q.shape[0], gt.shape[1]))


words_major = jax.jit(lambda g: g.T)


@functools.partial(jax.jit, static_argnames=("terms", "dtype"))
def _pairwise_jit(q, gt, terms, dtype):
  return pairwise_words_major(q, gt, terms).astype(dtype)


def hamming_distances(query_packed, gallery_packed, *, segments=None, weights=None,
                      dtype=np.int32) -> np.ndarray | jax.Array:
  """All distances between queries and gallery items (dense: chunk the queries).

  Args:
    query_packed: uint32[Q, W].
    gallery_packed: uint32[N, W].
    segments, weights: optional sub-code lengths and integer weights (see module doc).
    dtype: output integer dtype; a narrower one (uint8 for K < 256) is checked to hold the
      largest possible distance.

  Returns:
    int32[Q, N] (or `dtype`); numpy when `query_packed` is numpy, else a jax array.
  """
  q, g = _check_packed(query_packed, gallery_packed)
  terms, max_distance = distance_terms(q.shape[1], segments, weights)
  dtype = np.dtype(dtype)
  if not np.issubdtype(dtype, np.integer) or np.iinfo(dtype).max < max_distance:
    raise ValueError(f"dtype {dtype} cannot hold distances up to {max_distance}")
  out = _pairwise_jit(jnp.asarray(q), words_major(jnp.asarray(g)), terms, dtype)
  return out if isinstance(query_packed, jax.Array) else np.asarray(out)


def _check_packed(q, g):
  for name, x in (("query_packed", q), ("gallery_packed", g)):
    if x.ndim != 2 or x.dtype != np.uint32:
      raise ValueError(f"{name}: expected uint32[count, words], got {x.dtype}{x.shape}")
  if q.shape[1] != g.shape[1]:
    raise ValueError(f"query_packed has {q.shape[1]} words per code but gallery_packed "
                     f"has {g.shape[1]}")
  return q, g


def _neg_key(d):
  return -d.astype(jnp.float32)


def _from_key(v):
  return (-v).astype(jnp.int32)


def _direct_topk(q, g, k, terms):
  """Exact top-k of q [B, W] over g [n, W] from the full distance block."""
  v, i = lax.top_k(_neg_key(_pairwise(q, g, terms)), k)
  return _from_key(v), i


def _merge(d, i, k):
  """Top-k of concatenated lists d, i [B, L] whose order already agrees with index order
  among equal distances; stable top_k keeps it."""
  v, pos = lax.top_k(_neg_key(d), k)
  return _from_key(v), jnp.take_along_axis(i, pos, axis=1)


def _use_groups(n: int, k: int, group: int) -> bool:
  # Groups pay off when the k * G re-ranked candidates are a small part of the gallery.
  return n // group >= 4 * k


CACHE_LINE = 64  # bytes


def padded_groups(m: int, itemsize: int) -> int:
  """Row length M' >= m of the words-major layout [W, G, M'] whose stride is an odd
  number of cache lines.

  The coarse pass streams W * G rows of that layout at once. With M a multiple of 1,024
  (a gallery of 2**20 items: M = 65,536) the rows start at the same offset modulo 4 KiB,
  every stream falls into the same cache sets, and the pass crawls: 128-bit codes with
  32-bit words, 2**20 codes, quiet machine: 146 queries/s unpadded, 1,002 padded
  (bench/hamming.py --gallery 1048576 --bits 128 --word_bits 32). An odd stride in cache
  lines visits every set. The pad columns are never ranked.
  """
  per_line = max(CACHE_LINE // itemsize, 1)
  lines = -(-m // per_line)
  return (lines + 1 - lines % 2) * per_line


def _layout(codes, k: int, group: int):
  """Splits a gallery block [n, W] into grouped main part and a directly ranked tail.

  Returns (grouped [W, G, M'] words-major with M' = padded_groups(M) >= M columns,
  rows [M, G, W], tail [n - M * G, W]), or (None, None, codes) for a small block.
  """
  n, w = codes.shape
  if not _use_groups(n, k, group):
    return None, None, codes
  m = n // group
  main = codes[:m * group].reshape(m, group, w)
  grouped = jnp.transpose(main, (2, 1, 0))
  pad = padded_groups(m, codes.dtype.itemsize) - m
  grouped = jnp.pad(grouped, ((0, 0), (0, 0), (0, pad)))
  return grouped, main, codes[m * group:]


def _grouped_topk(q, grouped, rows, k, terms, group):
  """Exact top-k over the grouped main part (grouped [W, G, M'], rows [M, G, W]);
  indices relative to the block start."""
  b = q.shape[0]
  d = _distance(lambda w: q[:, w, None, None], lambda w: grouped[w][None], terms,
                (b,) + grouped.shape[1:])
  minima = jnp.min(d, axis=1)[:, :rows.shape[0]]                     # [B, M]
  _, gids = lax.top_k(_neg_key(minima), k)
  gids = jnp.sort(gids, axis=1)  # candidates in gallery-index order for stable re-rank
  cand = rows[gids]                                                  # [B, k, G, W]
  dc = _distance(lambda w: q[:, None, None, w], lambda w: cand[..., w], terms,
                 cand.shape[:3]).reshape(b, k * group)
  v, pos = lax.top_k(_neg_key(dc), k)
  idx = jnp.take_along_axis(gids, pos // group, axis=1) * group + pos % group
  return _from_key(v), idx


def _block_topk(q, layout, k, terms, group):
  """Exact top-min(k, n) of q over one prepared gallery block."""
  grouped, rows, tail = layout
  if grouped is None:
    return _direct_topk(q, tail, min(k, tail.shape[0]), terms)
  d, i = _grouped_topk(q, grouped, rows, k, terms, group)
  if tail.shape[0]:
    dt, it = _direct_topk(q, tail, min(k, tail.shape[0]), terms)
    offset = rows.shape[0] * group
    d, i = _merge(jnp.concatenate([d, dt], 1), jnp.concatenate([i, it + offset], 1), k)
  return d, i


@functools.partial(jax.jit, static_argnames=("k", "group"))
def _layout_jit(codes, k, group):
  return _layout(codes, k, group)


@functools.partial(jax.jit, static_argnames=("k", "terms", "group"))
def _block_topk_jit(q, layout, offset, k, terms, group):
  d, i = _block_topk(q, layout, k, terms, group)
  return d, i + offset


@functools.partial(jax.jit, static_argnames=("k",))
def _merge_jit(d_a, i_a, d_b, i_b, k):
  return _merge(jnp.concatenate([d_a, d_b], 1), jnp.concatenate([i_a, i_b], 1), k)


def choose_word_bits(word_bits, num_words: int, sharded: bool = False) -> int:
  """The kernel's word width: 32 or 64 bits.

  "auto" takes 64-bit words on CPU for codes of 4 or more packed words (>= 97 bits) and
  no mesh, 32 otherwise. On XLA:CPU (AVX2, no vector popcount instruction) 128-bit codes
  as two 64-bit words need half the popcount, XOR and add operations of four 32-bit
  words: on a quiet 2-core machine (bench/hamming.py, 1M codes, 1,000 queries, k = 100)
  the distance pass ran at 3,295 against 1,022 queries/s and hamming_topk at 2,023
  against 859. At 64 bits the 32-bit form was faster in a side-by-side under load
  (distance pass 5,300-6,500 against 3,700-4,200 queries/s), so it stays there.
  Accelerators keep 32-bit words (not measured with 64).
  """
  if word_bits == "auto":
    return 64 if (num_words >= 4 and not sharded
                  and jax.default_backend() == "cpu") else 32
  if word_bits not in (32, 64):
    raise ValueError(f"word_bits must be 'auto', 32 or 64, got {word_bits!r}")
  if word_bits == 64 and sharded:
    raise ValueError("word_bits=64 is not supported with a mesh; use 32 or 'auto'")
  return int(word_bits)


@jax.jit
def _words64_jit(x):
  n, w = x.shape
  if w % 2:
    x = jnp.concatenate([x, jnp.zeros((n, 1), x.dtype)], axis=1)
  return lax.bitcast_convert_type(x.reshape(n, -1, 2), jnp.uint64)


def _words64(x):
  """uint32[N, W] -> uint64[N, ceil(W / 2)]: words 2i (low half) and 2i + 1 (high half)
  of each code as one 64-bit word, an odd W padded with a zero word. Call under
  `jax.enable_x64`. A numpy array is reinterpreted in place (no copy for even W)."""
  if isinstance(x, jax.Array):
    return _words64_jit(x)
  x = np.ascontiguousarray(x)
  if x.shape[1] % 2:
    x = np.concatenate([x, np.zeros((x.shape[0], 1), x.dtype)], axis=1)
  return x.view("<u8").astype(np.uint64, copy=False)


def hamming_topk(query_packed, gallery_packed, k: int, *, segments=None, weights=None,
                 mesh: Mesh | None = None, axis_name: str | None = None,
                 group_size: int = DEFAULT_GROUP, query_chunk: int = DEFAULT_QUERY_CHUNK,
                 gallery_chunk: int = DEFAULT_GALLERY_CHUNK, word_bits="auto"):
  """Exact k nearest gallery items per query, ordered by (distance, gallery index).

  Args:
    query_packed: uint32[Q, W] packed query codes.
    gallery_packed: uint32[N, W] packed gallery codes (numpy or jax; with `mesh`, may be
      a jax array already sharded on its item axis over `axis_name`).
    k: number of neighbours, 1 <= k <= N.
    segments: optional sub-code lengths in bits, e.g. (16, 16, 16).
    weights: optional non-negative integer weight per segment; the distance is then
      sum_c weights[c] * d_c (see `priority_weights`).
    mesh, axis_name: split the gallery over this mesh axis and merge shard results.
    group_size: G, items per group of the coarse pass.
    query_chunk: queries per kernel call (memory ~ query_chunk * N / G int32).
    gallery_chunk: gallery items per kernel call (unsharded); bounds memory for any N.
    word_bits: "auto", 32 or 64: the kernel's word width (`choose_word_bits`); the
      results are the same for every choice.

  Returns:
    (distances int32[Q, k], indices int32[Q, k]); numpy when `query_packed` is numpy.
  """
  q, g = _check_packed(query_packed, gallery_packed)
  n = g.shape[0]
  if not 1 <= k <= n:
    raise ValueError(f"k must be in [1, {n}] (the gallery size), got {k}")
  if (mesh is None) != (axis_name is None):
    raise ValueError("mesh and axis_name go together")
  terms, max_distance = distance_terms(q.shape[1], segments, weights)
  if max_distance > MAX_EXACT_DISTANCE:
    raise ValueError(f"largest weighted distance {max_distance} exceeds {MAX_EXACT_DISTANCE}"
                     "; use smaller weights")
  if group_size < 1 or query_chunk < 1 or gallery_chunk < 1:
    raise ValueError("group_size, query_chunk and gallery_chunk must be positive")
  bits = choose_word_bits(word_bits, q.shape[1], sharded=mesh is not None)
  num_q = q.shape[0]
  if num_q == 0:
    empty = np.zeros((0, k), np.int32)
    return (jnp.asarray(empty), jnp.asarray(empty)) if isinstance(query_packed, jax.Array) \
        else (empty, empty.copy())
  chunk = min(query_chunk, num_q)
  padded = -(-num_q // chunk) * chunk

  def run(q, g, terms):
    qj = jnp.asarray(q)
    if padded != num_q:  # one compiled shape for every chunk
      qj = jnp.concatenate([qj, jnp.zeros((padded - num_q, q.shape[1]), qj.dtype)])
    if mesh is not None:
      d, i = _sharded_topk(qj, g, k, terms, mesh, axis_name, group_size, chunk)
    else:
      d, i = _chunked_topk(qj, g, k, terms, group_size, chunk, gallery_chunk)
    d, i = d[:num_q], i[:num_q]
    if isinstance(query_packed, jax.Array):
      return d, i
    return np.asarray(d), np.asarray(i)

  if bits == 32:
    return run(q, g, terms)
  with jax.enable_x64(True):  # uint64 words exist only in x64 mode; outputs stay int32
    q64, g64 = _words64(q), _words64(g)
    terms64, _ = distance_terms(q64.shape[1], segments, weights, word_bits=64)
    return run(q64, g64, terms64)


def _chunked_topk(qj, g, k, terms, group, chunk, gallery_chunk):
  starts = range(0, qj.shape[0], chunk)
  best: list = [None] * len(starts)
  for offset in range(0, g.shape[0], gallery_chunk):
    block = jnp.asarray(g[offset:offset + gallery_chunk])
    kb = min(k, block.shape[0])
    layout = _layout_jit(block, kb, group)
    for c, s in enumerate(starts):
      d, i = _block_topk_jit(qj[s:s + chunk], layout, offset, kb, terms, group)
      if best[c] is not None:
        d, i = _merge_jit(*best[c], d, i, min(k, offset + block.shape[0]))
      best[c] = (d, i)
  return (jnp.concatenate([b[0] for b in best]), jnp.concatenate([b[1] for b in best]))


def _sharded_topk(qj, g, k, terms, mesh, axis_name, group, chunk):
  """Gallery split over `axis_name`; per-shard top-k, all-gathered and merged exactly."""
  if axis_name not in mesh.shape:
    raise ValueError(f"axis_name {axis_name!r} is not an axis of the mesh {dict(mesh.shape)}")
  shards = mesh.shape[axis_name]
  n = g.shape[0]
  even = (n // shards) * shards
  local_n = even // shards
  sharding = NamedSharding(mesh, P(axis_name, None))
  outs = []
  if local_n:
    fn = _sharded_fn(mesh, axis_name, min(k, local_n), min(k, even), terms, group, chunk,
                     local_n)
    gs = g if even == n and isinstance(g, jax.Array) else g[:even]
    outs.append(fn(jax.device_put(qj, NamedSharding(mesh, P())),
                   jax.device_put(gs, sharding)))
  if even != n:  # fewer than `shards` items left over: rank them directly
    rest = jnp.asarray(np.asarray(g[even:]) if not isinstance(g, jax.Array) else g[even:])
    dr, ir = _direct_topk_jit(qj, rest, min(k, n - even), terms)
    outs.append((dr, ir + even))
  if len(outs) == 1:
    return outs[0]
  (da, ia), (db, ib) = outs
  return _merge_jit(da, ia, db, ib, k)


@functools.lru_cache(maxsize=32)
def _sharded_fn(mesh, axis_name, k_local, k_out, terms, group, chunk, local_n):
  """One compiled shard_map per configuration (rebuilding it would recompile)."""
  body = functools.partial(_shard_body, k=k_local, k_out=k_out, terms=terms, group=group,
                           chunk=chunk, axis_name=axis_name, local_n=local_n)
  return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(), P(axis_name, None)),
                               out_specs=(P(), P()), check_vma=False))


@functools.partial(jax.jit, static_argnames=("k", "terms"))
def _direct_topk_jit(q, g, k, terms):
  return _direct_topk(q, g, k, terms)


def _shard_body(qj, local, *, k, k_out, terms, group, chunk, axis_name, local_n):
  layout = _layout(local, k, group)
  qc = qj.reshape(-1, chunk, qj.shape[1])
  d, i = lax.map(lambda x: _block_topk(x, layout, k, terms, group), qc)  # [C, B, k]
  i = i + lax.axis_index(axis_name) * local_n
  # [S, C, B, k] in shard order = gallery-index order, so a stable merge is exact.
  d = lax.all_gather(d, axis_name)
  i = lax.all_gather(i, axis_name)
  shards = d.shape[0]
  d = jnp.moveaxis(d, 0, 2).reshape(-1, shards * k)
  i = jnp.moveaxis(i, 0, 2).reshape(-1, shards * k)
  return _merge(d, i, k_out)
