"""Held-out (modality, organ) pairs: the one parser of `data.held_out` / `data.val_held_out`.

A held-out pair is a combination whose modality and organ each occur in training, never
together: its images go only to the test splits (`data.held_out`) or, for the validation
of transfer, only to the validation splits (`data.val_held_out`). The renderer
(`builders/medphantom.py`), the split pipeline (`pipeline.py`), the query groups
(`evaluation/groups.py`) and the config files all read the pairs through this module.
"""

from __future__ import annotations

from typing import Sequence

from dnh_jax.data import schema as schema_lib

Pair = tuple[str, str]


def parse_pair(text: str, flag: str) -> Pair:
  """"MODALITY/organ" -> (modality, organ); raises naming `flag` and the valid names."""
  parts = [p.strip() for p in str(text).split("/")]
  if len(parts) != 2:
    raise ValueError(f"{flag}: {text!r} is not a 'MODALITY/organ' pair, e.g. 'MRI/breast'")
  modality, organ = parts
  if modality not in schema_lib.MODALITIES:
    raise ValueError(f"{flag}: unknown modality {modality!r} in {text!r}; expected one of "
                     f"{list(schema_lib.MODALITIES)}")
  if organ not in schema_lib.ORGANS:
    raise ValueError(f"{flag}: unknown organ {organ!r} in {text!r}; expected one of "
                     f"{list(schema_lib.ORGANS)}")
  return modality, organ


def parse_held_out(held_out: Sequence[str] | str,
                   flag: str = "data.held_out") -> tuple[Pair, ...]:
  """data.held_out ("MRI/breast", ...; or one comma-separated string) -> sorted unique
  (modality, organ) pairs."""
  if isinstance(held_out, str):
    held_out = [h for h in held_out.split(",") if h.strip()]
  return tuple(sorted({parse_pair(h, flag) for h in held_out}))


def held_out_pairs(data_cfg, split: str = "query") -> tuple[Pair, ...]:
  """The pairs never trained on that a split's queries may hold: `data.held_out` for the
  test splits, `data.val_held_out` (the validation of transfer) for the val splits."""
  if split.startswith("val"):
    return parse_held_out(data_cfg.val_held_out, "data.val_held_out")
  return parse_held_out(data_cfg.held_out)
