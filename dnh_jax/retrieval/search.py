"""Searching a `GalleryIndex` under a preference, with the distance of every sub-code.

The ranking is `hamming_topk` on the packed codes with the preference's segment weights:
items ordered by (sum_c w_c * d_c, position in the index), exactly. Each hit also carries
its per-sub-code Hamming distances d_c, so a reader sees *why* it ranks where it does.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from dnh_jax.retrieval.codes import as_packed, unpack_codes
from dnh_jax.retrieval.hamming import hamming_topk
from dnh_jax.retrieval.index import GalleryIndex
from dnh_jax.retrieval.preferences import Preference, parse_preference


def index_preference(spec: str, names: Sequence[str], segments: Sequence[int]) -> Preference:
  """`parse_preference` for an index: a flat code (no segments) only takes "all".

  Raises:
    ValueError: unknown characteristic, bad weight, or a weighted preference on a flat code.
  """
  if not segments and isinstance(spec, str) and spec.strip() != "all":
    parse_preference(spec, names)  # an unknown name is reported as such first
    raise ValueError(f"Preference {spec!r}: the code is flat (one code, no sub-codes per "
                     "characteristic), so weights cannot apply; expected 'all'")
  return parse_preference(spec, names, tuple(segments) or None)


def segment_names(index: GalleryIndex) -> tuple[str, ...]:
  """Names of the code segments: the characteristics, or ("code",) for a flat code."""
  if index.segments and index.schema is not None:
    return tuple(index.schema.names)
  return ("code",)


def subcode_distances(query_packed: np.ndarray, items_packed: np.ndarray, num_bits: int,
                      segments: Sequence[int]) -> np.ndarray:
  """Hamming distance of each sub-code.

  Args:
    query_packed: uint32[Q, W].
    items_packed: uint32[Q, L, W], the items listed for each query.
    num_bits: K.
    segments: sub-code lengths summing to K, or () for one segment of K bits.

  Returns:
    int32[Q, L, C], C = len(segments) (1 for a flat code).
  """
  q = unpack_codes(np.asarray(query_packed), num_bits)[:, None, :]
  g = unpack_codes(np.asarray(items_packed), num_bits)
  diff = q != g                                                     # [Q, L, K]
  bounds = np.cumsum((0,) + tuple(segments or (num_bits,)))
  return np.stack([diff[..., a:b].sum(-1) for a, b in zip(bounds[:-1], bounds[1:])],
                  axis=-1).astype(np.int32)


@dataclasses.dataclass
class SearchResults:
  """Top-k lists of Q queries.

  Attributes:
    preference: the parsed preference.
    positions: int64[Q, k] rows of the index.
    ids: int64[Q, k] item ids.
    distances: int32[Q, k] ranking distance sum_c w_c * d_c.
    subcode_distances: int32[Q, k, C] per-sub-code Hamming distances d_c.
    segment_names: C names (characteristics, or ("code",)).
    weights: C segment weights used for the ranking.
  """

  preference: Preference
  positions: np.ndarray
  ids: np.ndarray
  distances: np.ndarray
  subcode_distances: np.ndarray
  segment_names: tuple[str, ...]
  weights: tuple[int, ...]


def search(index: GalleryIndex, query_codes, preference: str | Preference, k: int
           ) -> SearchResults:
  """Exact top-k of real [Q, K] or packed [Q, W] query codes under a preference.

  Raises:
    ValueError: bad preference, k outside [1, len(index)], codes of another length.
  """
  if index.schema is None:
    raise ValueError("index has no schema; rebuild it with python -m dnh_jax.index build")
  pref = (preference if isinstance(preference, Preference)
          else index_preference(preference, index.schema.names, index.segments))
  if not 1 <= int(k) <= len(index):
    raise ValueError(f"k={k}: expected 1 <= k <= {len(index)} (the items in the index)")
  q, _ = as_packed(np.asarray(query_codes), index.num_bits)
  segments = index.segments or None
  weights = pref.segment_weights if segments else None
  d, pos = hamming_topk(q, index.codes, int(k), segments=segments, weights=weights)
  pos = np.asarray(pos, np.int64)
  sub = subcode_distances(q, index.codes[pos], index.num_bits, index.segments)
  return SearchResults(preference=pref, positions=pos, ids=index.ids[pos],
                       distances=np.asarray(d, np.int32), subcode_distances=sub,
                       segment_names=segment_names(index),
                       weights=tuple(weights) if weights is not None else (1,))
