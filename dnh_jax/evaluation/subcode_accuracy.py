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

Conventions: bits are sign(h) with sign(0) = +1; neighbours are ranked by (distance,
gallery index); vote ties go to the tied label whose voters have the smaller rank sum. Only
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
  """Majority label among the k Hamming-nearest gallery items of each query.

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
  labels = np.asarray(gallery_labels).astype(np.int64)
  out = np.empty(len(query_bits), np.int32)
  # Each voter adds 1 plus a bonus that decreases with rank and sums to at most 1/2 over
  # all k voters, so the count decides and a tie goes to the smaller rank sum.
  bonus = (k - np.arange(k)) / (k * (k + 1.0))
  for start in range(0, len(query_bits), chunk):
    q = query_bits[start:start + chunk].astype(np.int32)
    dist = (bits - q @ g) // 2                                  # [q, N] Hamming distances
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]      # ties by gallery index
    votes = np.zeros((len(q), num_classes))
    np.add.at(votes, (np.arange(len(q))[:, None], labels[order]), 1.0 + bonus[None, :])
    out[start:start + len(q)] = votes.argmax(axis=1)
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
