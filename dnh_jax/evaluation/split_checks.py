"""Checks, before any training, that the splits can be evaluated as configured.

A small or lopsided dataset (a few dozen DICOM files, one rare class) can draw an empty
validation query split, or queries with no relevant gallery item, whose mAP is undefined.
`check_splits` stops such a run with one line naming the split and the counts, instead of
a NumPy error at the first validation, and warns when a large share of a split's queries
have no relevant item (their metrics then say little).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from dnh_jax.data import schema as schema_lib
from dnh_jax.evaluation import relevance as relevance_lib

EVAL_PAIRS = (("val_query", "val_gallery"), ("query", "gallery"))
# Warn when at least this share of a split's queries has no relevant gallery item.
WARN_SHARE = 0.25
_CHUNK = 512


def queries_without_relevant(schema: schema_lib.Schema, rule, query: Mapping[str, np.ndarray],
                             gallery: Mapping[str, np.ndarray]) -> np.ndarray:
  """bool[Q]: queries with no relevant gallery item under relevance `rule`."""
  relevance = relevance_lib.get_relevance(rule, schema)
  n = len(next(iter(query.values())))
  out = np.zeros(n, bool)
  for start in range(0, n, _CHUNK):
    chunk = {k: v[start:start + _CHUNK] for k, v in query.items()}
    relevant, _ = relevance(schema, chunk, gallery)
    out[start:start + _CHUNK] = ~np.asarray(relevant).any(axis=1)
  return out


def check_splits(splits, *, relevance: str, batch_size: int, log=print) -> dict[str, float]:
  """Raises if the splits cannot be trained on and evaluated; warns on weak ones.

  Args:
    splits: `dnh_jax.data.pipeline.Splits`.
    relevance: `config.eval.relevance`.
    batch_size: `config.train.batch_size` (the train split must fill one batch).
    log: where warnings go (printed: the user should see them).

  Returns:
    {"<query split>/no_relevant_share": float} for both evaluation pairs.

  Raises:
    ValueError: one line naming the split and the counts of every split.
  """
  counts = {name: len(split) for name, split in splits.data.items()}
  sizes = ", ".join(f"{k} {v}" for k, v in counts.items())
  hint = ("add data, or change data.split (fractions of train, val_query, val_gallery, "
          "query, gallery)")
  if counts.get("train", 0) == 0:
    raise ValueError(f"split 'train' is empty ({sizes}); {hint}")
  if counts["train"] < batch_size:
    log(f"Warning: split 'train' holds {counts['train']} examples, fewer than "
        f"train.batch_size={batch_size}; batches repeat examples")
  out = {}
  for query, gallery in EVAL_PAIRS:
    for name in (query, gallery):
      if counts.get(name, 0) == 0:
        raise ValueError(f"split {name!r} is empty ({sizes}); evaluation needs at least one "
                         f"{query} query and one {gallery} item; {hint}")
    missing = queries_without_relevant(splits.schema, relevance, splits.data[query].labels,
                                       splits.data[gallery].labels)
    share = float(missing.mean())
    out[f"{query}/no_relevant_share"] = share
    if missing.all():
      raise ValueError(f"none of the {counts[query]} {query} queries has a relevant item "
                       f"among the {counts[gallery]} {gallery} items (eval.relevance="
                       f"{relevance!r}); mAP is undefined ({sizes}); {hint}")
    if share >= WARN_SHARE:
      log(f"Warning: {int(missing.sum())} of {counts[query]} {query} queries "
          f"({share:.0%}) have no relevant item in {gallery} (eval.relevance="
          f"{relevance!r}); their metrics are 0 and say little about the codes")
  return out
