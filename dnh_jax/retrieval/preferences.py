"""Retrieval preferences: which characteristics matter, and how much.

A preference is written as text (a config value or a flag) and parsed against the schema's
characteristic names and, for structured codes, the sub-code lengths (one segment per
characteristic, in schema order):

* ``all``: every characteristic counts once (plain Hamming distance, full-match relevance);
* a characteristic name, e.g. ``organ``: only that sub-code ranks, only it must match;
* explicit weights, e.g. ``modality=2,organ=1,disease=0`` (non-negative integers; names left
  out weigh 0);
* a strict priority order, e.g. ``modality>organ>disease``: a higher characteristic always
  dominates all lower ones together (names left out weigh 0).

Each preference yields two weight vectors: per-characteristic weights for graded gains
(gain = sum of the weights of the matched characteristics; a priority order uses
2^(rank from the end) so the gains are lexicographic) and per-segment weights for the
ranking distance sum_c w_c * d_H(sub-code c) (a priority order uses `priority_weights`,
whose bit-level weights no lower sub-distance can overturn).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

from dnh_jax.retrieval.hamming import priority_weights

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Preference:
  """A parsed preference.

  Attributes:
    name: the spec text, used as the metric prefix ("organ/mAP@100").
    names: the characteristic names, in schema order.
    characteristic_weights: integer weight per characteristic (gains).
    segment_weights: integer weight per code segment (ranking distance), or None for a
      flat code without segments.
  """

  name: str
  names: tuple[str, ...]
  characteristic_weights: tuple[int, ...]
  segment_weights: tuple[int, ...] | None

  @property
  def preferred(self) -> tuple[str, ...]:
    """Characteristics that must match for an item to be relevant (weight > 0)."""
    return tuple(n for n, w in zip(self.names, self.characteristic_weights) if w > 0)


def _unknown(spec: str, name: str, names: Sequence[str]) -> ValueError:
  return ValueError(f"Preference {spec!r}: unknown characteristic {name!r}; expected one "
                    f"of {list(names)} (or 'all', 'a=2,b=1', 'a>b>c')")


def parse_preference(spec: str, names: Sequence[str],
                     segments: Sequence[int] | None = None) -> Preference:
  """Parses a preference spec (see module doc).

  Args:
    spec: e.g. "all", "organ", "modality=2,organ=1,disease=0", "modality>organ>disease".
    names: characteristic names in schema order.
    segments: sub-code bit lengths, one per characteristic in schema order, or None /
      empty for a flat code (then `segment_weights` is None).

  Returns:
    The Preference.

  Raises:
    ValueError: unknown or repeated names, bad weights, or segments that do not match.
  """
  names = tuple(names)
  text = spec.strip() if isinstance(spec, str) else spec
  if not isinstance(text, str) or not text:
    raise ValueError(f"Preference must be a non-empty string, got {spec!r}")
  segments = tuple(segments) if segments else None
  if segments is not None and len(segments) != len(names):
    raise ValueError(f"Preference {spec!r}: {len(segments)} code segments {segments} for "
                     f"{len(names)} characteristics {list(names)}; need one per characteristic")
  order = None
  if text == "all":
    weights = (1,) * len(names)
  elif ">" in text:
    order = [part.strip() for part in text.split(">")]
    for name in order:
      if name not in names:
        raise _unknown(spec, name, names)
    if len(set(order)) != len(order):
      raise ValueError(f"Preference {spec!r}: a characteristic appears twice")
    weights = tuple(2 ** (len(order) - 1 - order.index(n)) if n in order else 0
                    for n in names)
  elif "=" in text:
    given = {}
    for part in text.split(","):
      name, sep, value = part.partition("=")
      name = name.strip()
      if not sep or not _NAME.match(name):
        raise ValueError(f"Preference {spec!r}: expected name=weight items, got {part!r}")
      if name not in names:
        raise _unknown(spec, name, names)
      if name in given:
        raise ValueError(f"Preference {spec!r}: {name!r} given twice")
      try:
        weight = int(value)
      except ValueError:
        raise ValueError(f"Preference {spec!r}: weight of {name!r} must be a non-negative "
                         f"integer, got {value.strip()!r}") from None
      if weight < 0:
        raise ValueError(f"Preference {spec!r}: weight of {name!r} is negative")
      given[name] = weight
    weights = tuple(given.get(n, 0) for n in names)
  else:
    if text not in names:
      raise _unknown(spec, text, names)
    weights = tuple(int(n == text) for n in names)
  if not any(weights):
    raise ValueError(f"Preference {spec!r}: at least one weight must be positive")
  seg_weights = None
  if segments is not None:
    if order is None:
      seg_weights = weights
    else:
      ranked = priority_weights([segments[names.index(n)] for n in order])
      seg_weights = tuple(ranked[order.index(n)] if n in order else 0 for n in names)
  return Preference(text, names, weights, seg_weights)
