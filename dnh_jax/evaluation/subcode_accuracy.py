"""Per-characteristic accuracy of each sub-code by nearest-neighbour retrieval.

How well does sub-code c alone tell characteristic c? For each query, the k reference
items nearest in Hamming distance *of that sub-code only* vote for a label of c, and the
query counts as correct when the majority label is its own. This needs nothing but the
binary codes and the labels, so it measures the same thing for every head: for a flat code
(no sub-codes) the whole code is used for every characteristic, which shows how much of
each characteristic a single code keeps.

The reference items are the gallery, or a part of it (`reference`). With held-out
combinations the trainer passes the gallery items of *seen* (modality, organ) pairs only:
then a breast-MRI query is correct on modality when its modality sub-code lands among
brain-MRI items, and on organ when its organ sub-code lands among breast-ultrasound items
- the generalisation the independent sub-networks are for. Against the whole gallery the
vote would be won by the other breast-MRI items, which look alike whatever the code means.

Conventions: bits are sign(h) with sign(0) = +1; the vote is tie-aware (the items tied at
the k-th distance share the remaining places equally: the expected vote over their
orders, see `knn_labels`); equal votes go to the label whose voters are nearer. Only
single-label characteristics are scored. Distances are computed in chunks of queries, so
no Q x N matrix larger than `chunk` x N is held.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from dnh_jax.data.schema import SINGLE, Schema


def _bits(codes: np.ndarray) -> np.ndarray:
  return np.where(np.asarray(codes) >= 0, 1, -1).astype(np.int16)


def knn_labels(query_bits: np.ndarray, gallery_bits: np.ndarray, gallery_labels: np.ndarray,
               num_classes: int, *, k: int, chunk: int = 256) -> np.ndarray:
  """Label with the largest expected vote among the k Hamming-nearest gallery items.

  Tie-aware: with short sub-codes many items share a distance, and cutting the k voters
  from a tied group by gallery index would favour whichever class the gallery lists
  first. Instead, the items nearer than the k-th distance d_k vote 1 each and the t items
  at d_k share the remaining k - m places, voting (k - m) / t each: the expected vote over
  every order of the tied items. Equal votes go to the label whose voters are nearer
  (smaller vote-weighted distance sum), then to the smaller label.

  Args:
    query_bits: int[Q, K] of -1/+1.
    gallery_bits: int[N, K] of -1/+1.
    gallery_labels: int[N] labels in [0, num_classes).
    num_classes: V.
    k: neighbours that vote (clipped to N).
    chunk: queries per distance block.

  Returns:
    int32[Q] predicted labels.
  """
  n, bits = gallery_bits.shape
  k = min(int(k), n)
  g = gallery_bits.astype(np.int32).T
  onehot = np.eye(num_classes)[np.asarray(gallery_labels).astype(np.int64)]   # [N, V]
  out = np.empty(len(query_bits), np.int32)
  for start in range(0, len(query_bits), chunk):
    q = query_bits[start:start + chunk].astype(np.int32)
    dist = (bits - q @ g) // 2                                  # [q, N] Hamming distances
    kth = np.partition(dist, k - 1, axis=1)[:, k - 1:k]         # [q, 1] the k-th distance
    below, at = dist < kth, dist == kth
    share = (k - below.sum(1, keepdims=True)) / at.sum(1, keepdims=True)
    weight = below + at * share                                 # sums to k per query
    votes = weight @ onehot                                     # [q, V]
    near = (weight * dist) @ onehot
    best = votes >= votes.max(axis=1, keepdims=True) - 1e-9
    out[start:start + len(q)] = np.argmin(np.where(best, near, np.inf), axis=1)
  return out


def subcode_accuracy(query_codes: np.ndarray, query_labels: Mapping[str, np.ndarray],
                     gallery_codes: np.ndarray, gallery_labels: Mapping[str, np.ndarray],
                     schema: Schema, segments: Sequence[int] = (), *,
                     k: int = 10, reference: np.ndarray | None = None) -> dict[str, float]:
  """k-NN accuracy of each single-label characteristic from its own sub-code.

  Args:
    query_codes: float[Q, K] real or binary codes (bit = code >= 0).
    query_labels: {characteristic: int[Q] | uint8[Q, V]}.
    gallery_codes: float[N, K].
    gallery_labels: {characteristic: int[N] | uint8[N, V]}.
    schema: the dataset schema; segments follow its order.
    segments: sub-code lengths (one per characteristic, summing to K); () for a flat code,
      in which case the whole code is scored for every characteristic.
    k: neighbours that vote.
    reference: optional bool[N]: only these gallery items vote (default: all).

  Returns:
    {"<characteristic>/knn_accuracy": fraction of queries whose k-NN majority label (on
    that characteristic's sub-code) is their own label} for each single-label
    characteristic.

  Raises:
    ValueError: segments that do not match the schema or the code length, or an empty
      or mis-shaped reference mask.
  """
  qb, gb = _bits(query_codes), _bits(gallery_codes)
  gallery_labels = dict(gallery_labels)
  if reference is not None:
    reference = np.asarray(reference, bool)
    if reference.shape != (len(gb),) or not reference.any():
      raise ValueError(f"reference must be a non-empty bool[{len(gb)}] mask, got "
                       f"{reference.shape} with {int(reference.sum())} items")
    gb = gb[reference]
    gallery_labels = {n: np.asarray(v)[reference] for n, v in gallery_labels.items()}
  bits = qb.shape[-1]
  segments = tuple(int(s) for s in segments)
  if segments and (len(segments) != len(schema.names) or sum(segments) != bits):
    raise ValueError(f"segments={segments} must give one length per characteristic "
                     f"{list(schema.names)} summing to the code length {bits}")
  if k < 1:
    raise ValueError(f"k={k} must be >= 1")
  bounds = np.cumsum((0,) + segments) if segments else None
  results = {}
  for i, c in enumerate(schema.characteristics):
    if c.kind != SINGLE:
      continue
    sl = slice(bounds[i], bounds[i + 1]) if segments else slice(0, bits)
    pred = knn_labels(qb[:, sl], gb[:, sl], gallery_labels[c.name], c.size, k=k)
    results[f"{c.name}/knn_accuracy"] = float(
        np.mean(pred == np.asarray(query_labels[c.name]))) if len(pred) else float("nan")
  return results
