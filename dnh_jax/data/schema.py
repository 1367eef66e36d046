"""Label schema: the characteristics a dataset declares.

A dataset is described by an ordered tuple of `Characteristic`s (e.g. modality, organ,
disease). Each has a vocabulary and a kind:

* ``single``: one label per image, stored as an ``int32`` id into the vocabulary;
* ``multi``: a set of labels per image, stored as a ``uint8`` multi-hot vector of length
  ``len(vocabulary)``.

Every example produced by every builder in `dnh_jax.data` is a dict::

    {"image": uint8[H, W, 1], "id": int64[], <characteristic name>: int32[] | uint8[V]}

Relevance rules (`dnh_jax.evaluation.relevance`) and pair similarities
(`dnh_jax.data.similarity`) are derived from these labels, never hand-coded per dataset.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Mapping, Sequence

import numpy as np

SINGLE = "single"
MULTI = "multi"
KINDS = (SINGLE, MULTI)


@dataclasses.dataclass(frozen=True)
class Characteristic:
  """One labelled characteristic of an image (modality, organ, disease, ...)."""

  name: str
  vocabulary: tuple[str, ...]
  kind: str = SINGLE

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(
          f"Characteristic {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
    if len(set(self.vocabulary)) != len(self.vocabulary):
      raise ValueError(f"Characteristic {self.name!r}: vocabulary has duplicates")
    if not self.vocabulary:
      raise ValueError(f"Characteristic {self.name!r}: empty vocabulary")

  @property
  def size(self) -> int:
    return len(self.vocabulary)

  def index(self, label: str) -> int:
    """Id of `label`; raises a ValueError naming the characteristic and valid labels."""
    try:
      return self.vocabulary.index(label)
    except ValueError:
      raise ValueError(
          f"Unknown {self.name} {label!r}; expected one of {list(self.vocabulary)}") from None

  def encode(self, labels: str | Sequence[str]) -> np.ndarray:
    """Names -> stored form: int32[] for single, uint8[V] multi-hot for multi."""
    if self.kind == SINGLE:
      if not isinstance(labels, str):
        raise ValueError(f"{self.name} is single-label; got {labels!r}")
      return np.int32(self.index(labels))
    out = np.zeros([self.size], np.uint8)
    for label in ([labels] if isinstance(labels, str) else labels):
      out[self.index(label)] = 1
    return out

  def decode(self, value) -> str | tuple[str, ...]:
    """Stored form -> names (inverse of `encode`)."""
    if self.kind == SINGLE:
      return self.vocabulary[int(value)]
    return tuple(self.vocabulary[i] for i in np.flatnonzero(np.asarray(value)))


@dataclasses.dataclass(frozen=True)
class Schema:
  """An ordered set of characteristics."""

  characteristics: tuple[Characteristic, ...]

  def __post_init__(self):
    names = [c.name for c in self.characteristics]
    if len(set(names)) != len(names):
      raise ValueError(f"Duplicate characteristic names: {names}")
    for reserved in ("image", "id"):
      if reserved in names:
        raise ValueError(f"Characteristic name {reserved!r} is reserved")

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(c.name for c in self.characteristics)

  def __getitem__(self, name: str) -> Characteristic:
    for c in self.characteristics:
      if c.name == name:
        return c
    raise KeyError(f"No characteristic {name!r}; this schema has {list(self.names)}")

  def __contains__(self, name: str) -> bool:
    return name in self.names

  def encode(self, labels: Mapping[str, str | Sequence[str]]) -> dict[str, np.ndarray]:
    missing = set(self.names) - set(labels)
    if missing:
      raise ValueError(f"Missing labels for characteristics {sorted(missing)}")
    return {c.name: c.encode(labels[c.name]) for c in self.characteristics}

  def decode(self, labels: Mapping[str, np.ndarray]) -> dict:
    return {c.name: c.decode(labels[c.name]) for c in self.characteristics}

  def to_json(self) -> str:
    return json.dumps([dataclasses.asdict(c) for c in self.characteristics])

  @classmethod
  def from_json(cls, text: str) -> "Schema":
    return cls(tuple(Characteristic(d["name"], tuple(d["vocabulary"]), d["kind"])
                     for d in json.loads(text)))


# ---------------------------------------------------------------------------------------
# Vocabularies of the published multi-characteristic collection (MODHash, Scientific Reports
# 2025; see losses/structured.py) and of the
# NIH ChestX-ray14 findings. MedPhantom renders exactly these.

MODALITIES = ("CT", "MRI", "XR", "US", "OCT")
ORGANS = ("brain", "breast", "chest", "retina", "abdomen")
# Diseases are organ-specific; "normal" is a disease of each organ.
DISEASES_BY_ORGAN = {
    "brain": ("glioma", "meningioma", "pituitary_tumor"),
    "breast": ("breast_normal", "benign", "malignant"),
    "chest": ("covid", "chest_normal", "pneumonia"),
    "retina": ("cnv", "dme", "drusen", "retina_normal"),
    "abdomen": ("abdomen_normal", "liver_lesion"),
}
# The 13 diseases of the published collection (abdomen is an extra MedPhantom organ).
PUBLISHED_DISEASES = tuple(d for o in ("brain", "breast", "chest", "retina")
                           for d in DISEASES_BY_ORGAN[o])
DISEASES = PUBLISHED_DISEASES + DISEASES_BY_ORGAN["abdomen"]
ORGAN_OF_DISEASE = {d: o for o, ds in DISEASES_BY_ORGAN.items() for d in ds}

# The 15 (modality, organ) pairings of the published collection, with every disease of
# the organ: brain MRI 3, breast US 3, chest XR 3, chest CT 2 (no pneumonia), retina OCT 4.
PUBLISHED_COMBINATIONS = tuple(
    [("MRI", "brain", d) for d in DISEASES_BY_ORGAN["brain"]]
    + [("US", "breast", d) for d in DISEASES_BY_ORGAN["breast"]]
    + [("XR", "chest", d) for d in DISEASES_BY_ORGAN["chest"]]
    + [("CT", "chest", d) for d in ("covid", "chest_normal")]
    + [("OCT", "retina", d) for d in DISEASES_BY_ORGAN["retina"]])

# NIH ChestX-ray14 findings without Hernia (Wang et al., ChestX-ray8, CVPR 2017; objective 3).
CHEST_FINDINGS = ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass",
                  "nodule", "pneumonia", "pneumothorax", "consolidation", "edema",
                  "emphysema", "fibrosis", "pleural_thickening")


def multi_characteristic_schema() -> Schema:
  """Schema (modality, organ, disease) of the single-label collections."""
  return Schema((Characteristic("modality", MODALITIES),
                 Characteristic("organ", ORGANS),
                 Characteristic("disease", DISEASES)))


def chest_multilabel_schema() -> Schema:
  """Schema of multi-label chest X-ray collections (MedPhantom chest, ChestX-ray14)."""
  return Schema((Characteristic("findings", CHEST_FINDINGS, MULTI),))
