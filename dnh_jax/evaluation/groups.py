"""Query groups: subsets of the queries reported separately (e.g. held-out combinations).

`config.eval.query_groups` names rules from `QUERY_GROUPS`; each rule maps the query labels
to named boolean masks, and the trainer reports every metric again per group under
`<split>/<group>/<metric>`.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from dnh_jax.data import schema as schema_lib
from dnh_jax.data.held_out import held_out_pairs


def held_out_groups(labels: Mapping[str, np.ndarray], schema: schema_lib.Schema,
                    data_cfg, split: str = "query") -> dict[str, np.ndarray]:
  """"held_out" / "seen" queries by their (modality, organ) pair.

  Args:
    labels: query labels with int32 [Q] "modality" and "organ".
    data_cfg: `config.data`; `held_out` (test) and `val_held_out` (validation) list
      "MODALITY/organ" pairs.
    split: the split the labels come from (see `held_out_pairs`).

  Returns:
    {"held_out": bool[Q], "seen": bool[Q]}.
  """
  held = np.zeros(len(labels["modality"]), bool)
  for modality, organ in held_out_pairs(data_cfg, split):
    held |= ((labels["modality"] == schema["modality"].index(modality))
             & (labels["organ"] == schema["organ"].index(organ)))
  return {"held_out": held, "seen": ~held}


def label_count_groups(labels: Mapping[str, np.ndarray], schema: schema_lib.Schema,
                       data_cfg, split: str = "query") -> dict[str, np.ndarray]:
  """Multi-label queries by their number of labels: "labels=0", "labels=1", "labels=2",
  "labels=3+" (summed over every multi-label characteristic)."""
  del data_cfg, split
  counts = sum(np.asarray(labels[c.name]).reshape(len(labels[c.name]), -1).sum(axis=1)
               for c in schema.characteristics if c.kind == schema_lib.MULTI)
  counts = np.asarray(counts)
  return {"labels=0": counts == 0, "labels=1": counts == 1, "labels=2": counts == 2,
          "labels=3+": counts >= 3}


QUERY_GROUPS: dict[str, Callable] = {"held_out": held_out_groups,
                                     "label_count": label_count_groups}


def query_groups(rule: str, labels, schema, data_cfg,
                 split: str = "query") -> dict[str, np.ndarray]:
  """Applies the named rule to the labels of `split`; raises naming `eval.query_groups`
  and the valid rules."""
  if rule not in QUERY_GROUPS:
    raise ValueError(f"eval.query_groups entry {rule!r}; choose from {sorted(QUERY_GROUPS)}")
  return QUERY_GROUPS[rule](labels, schema, data_cfg, split)
