"""TFDS builder of MedMNIST (v2 and MedMNIST+) from the user's local npz files.

The `medmnist` PyPI package ships no data (and pulls a CUDA torch), so the npz files are
read directly from `data.manual_dir`: `<subset>.npz` (28 px) or `<subset>_<size>.npz`
(MedMNIST+ 64/128/224 px), each with keys train_images, train_labels, val_images,
val_labels, test_images and test_labels. The official train/val/test parts are pooled;
`dnh_jax.data.pipeline` draws the seeded retrieval splits.

Only subsets whose labels map faithfully onto the vocabularies of `dnh_jax.data.schema`
are offered (`SUBSETS`). The others have no modality/organ/disease meaning here (pathology,
dermatoscopy, blood cells, fundus grading, organ-segmentation crops) and are rejected with
the list of supported names.

Every read names the file and key when it refuses: a truncated or non-npz file, object
(pickled) arrays, images that are not uint8-valued (floats are accepted only when they hold
the integers 0..255, so every part is windowed alike), non-integer labels.
"""

from __future__ import annotations

import dataclasses
import os
import re
import zipfile
from typing import Any, Iterator

import numpy as np

from dnh_jax.data import images as images_lib
from dnh_jax.data import schema as schema_lib
from dnh_jax.data.builders import base

PARTS = ("train", "val", "test")
NPZ_KEYS = tuple(f"{part}_{kind}" for part in PARTS for kind in ("images", "labels"))
MEDMNIST_SIZES = (28, 64, 128, 224)


@dataclasses.dataclass(frozen=True)
class Subset:
  """How one MedMNIST subset's labels map onto the schema."""

  kind: str                                   # schema SINGLE or MULTI
  classes: tuple[tuple[str, str, str], ...] = ()   # SINGLE: label id -> combination
  findings: tuple[str | None, ...] = ()       # MULTI: label column -> finding (None: drop)


SUBSETS = {
    # INFO["octmnist"]: 0 choroidal neovascularization, 1 diabetic macular edema,
    # 2 drusen, 3 normal (Kermany OCT, the published collection's retina source).
    "octmnist": Subset(schema_lib.SINGLE, tuple(
        ("OCT", "retina", d) for d in ("cnv", "dme", "drusen", "retina_normal"))),
    # 0 normal, 1 pneumonia (paediatric chest X-ray, Kermany).
    "pneumoniamnist": Subset(schema_lib.SINGLE, (
        ("XR", "chest", "chest_normal"), ("XR", "chest", "pneumonia"))),
    # 0 malignant, 1 "normal, benign": MedMNIST merges the two non-malignant classes of
    # BUSI; they are stored as "benign" (not malignant), never as breast_normal.
    "breastmnist": Subset(schema_lib.SINGLE, (
        ("US", "breast", "malignant"), ("US", "breast", "benign"))),
    # 14 ChestX-ray14 findings in CHEST_FINDINGS order, then hernia (dropped as in the
    # published multi-label protocol; hernia-only images are left out, not made normal).
    "chestmnist": Subset(schema_lib.MULTI,
                         findings=tuple(schema_lib.CHEST_FINDINGS) + (None,)),
}
SINGLE_LABEL_SUBSETS = tuple(k for k, v in SUBSETS.items() if v.kind == schema_lib.SINGLE)


def npz_candidates(manual_dir: str, subset: str) -> dict[int, str]:
  """{native size: path} of the npz files of `subset` present in `manual_dir`."""
  found = {}
  for name in os.listdir(manual_dir):
    m = re.fullmatch(rf"{subset}(?:_(\d+))?\.npz", name)
    if m:
      found[int(m.group(1) or 28)] = os.path.join(manual_dir, name)
  return found


def choose_npz(manual_dir: str, subset: str, image_size: int) -> str:
  """The npz to read for `image_size`: that size, else the smallest larger, else the
  largest (images are resized either way)."""
  found = npz_candidates(manual_dir, subset)
  if not found:
    raise FileNotFoundError(
        f"MedMNIST subset {subset!r}: no {subset}.npz or {subset}_<size>.npz (size in "
        f"{list(MEDMNIST_SIZES[1:])}) in data.manual_dir {manual_dir}")
  larger = sorted(s for s in found if s >= image_size)
  return found[larger[0] if larger else max(found)]


def _labels_to_examples(path: str, key: str, labels: np.ndarray, subset: Subset,
                        num_images: int) -> np.ndarray:
  """Validates a label array: int64[N] class ids or uint8[N, L] multi-hot."""
  labels = np.asarray(labels)
  if len(labels) != num_images:
    raise ValueError(f"{path}: {key} has {len(labels)} rows but the images have "
                     f"{num_images}; expected one label row per image")
  if subset.kind == schema_lib.SINGLE:
    labels = labels.reshape(len(labels), -1)
    if labels.shape[1] != 1:
      raise ValueError(f"{path}: {key} has shape {labels.shape}; expected [N] or [N, 1]")
    labels = labels[:, 0].astype(np.int64)
    bad = (labels < 0) | (labels >= len(subset.classes))
    if bad.any():
      raise ValueError(f"{path}: {key} holds label {labels[bad][0]}; expected 0.."
                       f"{len(subset.classes) - 1}")
    return labels
  if labels.ndim != 2 or labels.shape[1] != len(subset.findings):
    raise ValueError(f"{path}: {key} has shape {labels.shape}; expected "
                     f"[N, {len(subset.findings)}] multi-hot")
  if not np.isin(labels, (0, 1)).all():
    raise ValueError(f"{path}: {key} must be 0/1 multi-hot")
  return labels.astype(np.uint8)


def _check_keys(path: str, keys) -> None:
  missing = [k for k in NPZ_KEYS if k not in keys]
  if missing:
    raise ValueError(f"{path} has no key {missing[0]!r} (missing: {missing}); a MedMNIST "
                     f"npz must hold {list(NPZ_KEYS)}; found {sorted(keys)}")


def _open(path: str):
  """np.load of an npz, with one-line errors naming the file."""
  try:
    archive = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path} is not a readable npz file (truncated or not an npz): "
                     f"{type(e).__name__}: {e}") from e
  if not isinstance(archive, np.lib.npyio.NpzFile):
    raise ValueError(f"{path} holds a single array, not an npz archive with keys "
                     f"{list(NPZ_KEYS)}")
  return archive


def _array(archive, path: str, key: str) -> np.ndarray:
  """archive[key] with one-line errors naming the file and key (object arrays, damage)."""
  try:
    value = archive[key]
  except ValueError as e:
    if "allow_pickle" in str(e):
      raise ValueError(f"{path}: {key} is an object (pickled) array; expected a numeric "
                       "array (object arrays are never loaded: they can run code)") from None
    raise ValueError(f"{path}: {key} cannot be read: {e}") from e
  except (OSError, EOFError, zipfile.BadZipFile, zipfile.error) as e:
    raise ValueError(f"{path}: {key} cannot be read (truncated or damaged): "
                     f"{type(e).__name__}: {e}") from e
  if value.dtype.kind not in "biuf":
    raise ValueError(f"{path}: {key} has dtype {value.dtype}; expected numbers")
  return value


def _images_to_uint8(path: str, key: str, images: np.ndarray) -> np.ndarray:
  """MedMNIST images are uint8; other dtypes are accepted only when every value is an
  integer in 0..255 (then cast exactly), so every part is windowed the same way."""
  if images.dtype == np.uint8:
    return images
  finite = np.isfinite(images) if images.dtype.kind == "f" else np.ones(images.shape, bool)
  if (finite.all() and np.all(images == np.round(images)) and images.min(initial=0) >= 0
      and images.max(initial=0) <= 255):
    return images.astype(np.uint8)
  raise ValueError(f"{path}: {key} has dtype {images.dtype} with values outside the "
                   "integers 0..255; expected uint8 images as MedMNIST ships them")


def check_npz(path: str) -> None:
  """Raises a ValueError naming `path` if it is unreadable or lacks a MedMNIST key."""
  with _open(path) as archive:
    _check_keys(path, archive.files)


def load_npz(path: str, subset_name: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
  """Reads and validates one MedMNIST npz.

  Returns:
    [(part, images uint8[N, H, W(, C)], labels)] for part in train, val, test.

  Raises:
    ValueError: naming the file and the key: missing, truncated, object array, images not
      uint8-valued, non-integer or out-of-range labels, bad shapes.
  """
  subset = SUBSETS[subset_name]
  with _open(path) as archive:
    _check_keys(path, archive.files)
    out = []
    for part in PARTS:
      key = f"{part}_images"
      images = _array(archive, path, key)
      if images.ndim not in (3, 4):
        raise ValueError(f"{path}: {key} has shape {images.shape}; expected "
                         "[N, H, W] or [N, H, W, C]")
      images = _images_to_uint8(path, key, images)
      labels = _array(archive, path, f"{part}_labels")
      if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
          bad = labels[~np.isfinite(labels) | (labels != np.round(labels))].flat[0]
          raise ValueError(f"{path}: {part}_labels holds the non-integer label {bad}; "
                           "expected integer class ids (or 0/1 multi-hot)")
      labels = _labels_to_examples(path, f"{part}_labels", labels, subset, len(images))
      out.append((part, images, labels))
  return out


def resolve_subsets(subsets, multilabel: bool, manual_dir: str) -> tuple[str, ...]:
  """data.subsets -> validated lower-case names of one schema kind."""
  if isinstance(subsets, str):
    subsets = [s for s in subsets.split(",") if s.strip()]
  names = tuple(dict.fromkeys(str(s).strip().lower() for s in subsets))
  for name in names:
    if name not in SUBSETS:
      raise ValueError(f"data.subsets: unknown MedMNIST subset {name!r}; supported: "
                       f"{sorted(SUBSETS)}")
  if not names:
    if multilabel:
      names = ("chestmnist",)
    else:
      names = tuple(s for s in SINGLE_LABEL_SUBSETS if npz_candidates(manual_dir, s))
      if not names:
        raise FileNotFoundError(
            f"data.manual_dir {manual_dir} holds no MedMNIST npz of a supported subset; "
            f"expected files like {[s + '.npz' for s in SINGLE_LABEL_SUBSETS]}")
  kinds = {SUBSETS[n].kind for n in names}
  if len(kinds) > 1:
    raise ValueError(f"data.subsets={list(names)} mixes single-label subsets with the "
                     "multi-label chestmnist; build them as separate datasets")
  if multilabel and kinds != {schema_lib.MULTI}:
    raise ValueError(f"data.multilabel=True but data.subsets={list(names)} are single-label;"
                     " the multi-label MedMNIST subset is chestmnist")
  return tuple(sorted(names))


class MedMNIST(base.DnhBuilder, skip_registration=True):
  """MedMNIST subsets mapped onto (modality, organ, disease) or chest findings."""

  name = "dnh_medmnist"

  def schema(self) -> schema_lib.Schema:
    if self.params["kind"] == schema_lib.MULTI:
      return schema_lib.chest_multilabel_schema()
    return schema_lib.multi_characteristic_schema()

  def _examples(self) -> Iterator[dict[str, Any]]:
    p = self.params
    s = self.schema()
    next_id = 0
    for subset_name, path in sorted(p["files"].items()):
      subset = SUBSETS[subset_name]
      for part, images, labels in load_npz(path, subset_name):
        for image, label in zip(images, labels):
          if subset.kind == schema_lib.SINGLE:
            modality, organ, disease = subset.classes[int(label)]
            encoded = s.encode({"modality": modality, "organ": organ, "disease": disease})
          else:
            kept = [f for f, on in zip(subset.findings, label) if on and f is not None]
            if label.any() and not kept:
              continue   # only dropped findings (hernia): neither normal nor labelled
            encoded = s.encode({"findings": kept})
          example_id = next_id
          next_id += 1
          yield {"image": images_lib.normalize_image(image, p["image_size"],
                                                     source=f"{path}:{part}_images"),
                 "id": np.int64(example_id), "group": np.int64(example_id), **encoded}


def from_config(data_cfg, data_dir: str) -> MedMNIST:
  """`config.data` (manual_dir, subsets, multilabel, image_size) -> MedMNIST builder."""
  manual_dir = base.check_manual_dir(
      data_cfg.manual_dir, "MedMNIST npz files such as octmnist.npz or octmnist_64.npz")
  names = resolve_subsets(data_cfg.subsets, data_cfg.multilabel, manual_dir)
  files = {n: choose_npz(manual_dir, n, data_cfg.image_size) for n in names}
  for path in files.values():
    check_npz(path)   # fail before building, not halfway through
  params = {"image_size": int(data_cfg.image_size), "files": files,
            "kind": SUBSETS[names[0]].kind,
            "fingerprint": base.files_fingerprint(files.values(), manual_dir)}
  config = base.make_config(f"s{data_cfg.image_size}_{'_'.join(names)}", params,
                            base.shared_code_files() + (os.path.abspath(__file__),))
  return MedMNIST(config=config, data_dir=base.builder_data_dir(data_dir),
                  file_format=base.FILE_FORMAT)
