"""TFDS builder of a DICOM directory labelled from its tags and a user-editable mapping.

Modality comes from the Modality tag (0008,0060) and organ from BodyPartExamined
(0018,0015), both translated to vocabulary names by a mapping. `DEFAULT_MAPPING` holds the
common DICOM defined terms; `data.label_map` may name a JSON file that overrides it:

    {
      "modality": {"MR": "MRI", "PT": null},      # tag value -> name; null: skip the file
      "organ": {"HEAD": "brain", "SKULL": "brain"},
      "default_organ": "chest",                   # when BodyPartExamined is absent
      "default_disease": "normal",                # "normal" = the organ's normal class
      "files": {"sub/ct1.dcm": {"disease": "covid"}}   # per file (path relative to the
    }                                                  # directory): any label
Sections given in the JSON replace the same keys of the defaults; tag values are matched
after stripping and upper-casing. A file whose label cannot be resolved, that is not
readable DICOM or has no decodable pixel data raises, naming the file.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Iterator, Mapping

import numpy as np

from dnh_jax.data import images as images_lib
from dnh_jax.data import schema as schema_lib
from dnh_jax.data.builders import base
from dnh_jax.data.builders import image_folder

DEFAULT_MAPPING = {
    "modality": {"CT": "CT", "MR": "MRI", "CR": "XR", "DX": "XR", "RG": "XR", "MG": "XR",
                 "US": "US", "OPT": "OCT", "OCT": "OCT"},
    "organ": {"HEAD": "brain", "BRAIN": "brain", "SKULL": "brain", "BREAST": "breast",
              "CHEST": "chest", "THORAX": "chest", "LUNG": "chest", "EYE": "retina",
              "RETINA": "retina", "ABDOMEN": "abdomen", "LIVER": "abdomen",
              "KIDNEY": "abdomen", "PANCREAS": "abdomen"},
    "default_organ": None,
    "default_disease": "normal",
    "files": {},
}
MAPPING_KEYS = tuple(DEFAULT_MAPPING)
FILE_LABEL_KEYS = ("modality", "organ", "disease")
SKIP = "skip"   # resolved label of files the mapping maps to null


def load_mapping(path: str) -> dict[str, Any]:
  """The default mapping updated with the JSON file at `path` ("" = defaults only).

  Raises:
    ValueError: naming the file and key, for unknown sections or names outside the
      vocabularies.
  """
  mapping = copy.deepcopy(DEFAULT_MAPPING)
  if not path:
    return mapping
  try:
    with open(path) as f:
      user = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"data.label_map {path}: not a readable JSON file: {e}") from e
  if not isinstance(user, dict):
    raise ValueError(f"data.label_map {path}: expected a JSON object with keys "
                     f"{list(MAPPING_KEYS)}")
  for key, value in user.items():
    if key not in MAPPING_KEYS:
      raise ValueError(f"data.label_map {path}: unknown key {key!r}; expected "
                       f"{list(MAPPING_KEYS)}")
    if isinstance(mapping[key], dict):
      if not isinstance(value, dict):
        raise ValueError(f"data.label_map {path}: {key!r} must be an object")
      if key == "files":
        mapping[key].update(value)
      else:
        mapping[key].update({str(k).strip().upper(): v for k, v in value.items()})
    else:
      mapping[key] = value
  _validate(mapping, path)
  return mapping


def _validate(mapping, path: str):
  def check(value, vocabulary, where):
    if value is not None and value not in vocabulary:
      raise ValueError(f"data.label_map {path}: {where} = {value!r}; expected one of "
                       f"{list(vocabulary)} or null")
  for tag, name in mapping["modality"].items():
    check(name, schema_lib.MODALITIES, f"modality[{tag!r}]")
  for tag, name in mapping["organ"].items():
    check(name, schema_lib.ORGANS, f"organ[{tag!r}]")
  check(mapping["default_organ"], schema_lib.ORGANS, "default_organ")
  check(mapping["default_disease"], schema_lib.DISEASES + ("normal",), "default_disease")
  for rel, labels in mapping["files"].items():
    if not isinstance(labels, dict) or set(labels) - set(FILE_LABEL_KEYS):
      raise ValueError(f"data.label_map {path}: files[{rel!r}] must be an object with keys "
                       f"from {list(FILE_LABEL_KEYS)}")
    check(labels.get("modality"), schema_lib.MODALITIES, f"files[{rel!r}].modality")
    check(labels.get("organ"), schema_lib.ORGANS, f"files[{rel!r}].organ")
    check(labels.get("disease"), schema_lib.DISEASES + ("normal",), f"files[{rel!r}].disease")


def _tag(ds, keyword: str) -> str:
  return str(ds.get(keyword, "") or "").strip().upper()


def resolve_labels(ds, rel_path: str, path: str,
                   mapping: Mapping[str, Any]) -> tuple[str, str, str] | str:
  """(modality, organ, disease) of one file, or SKIP if the mapping says so.

  Raises:
    ValueError: naming the file, the tag and its value, and how to fix the mapping.
  """
  override = mapping["files"].get(rel_path, {})
  hint = "add it to the data.label_map JSON (see dnh_jax/data/builders/dicom_dir.py)"
  modality = override.get("modality")
  if modality is None:
    value = _tag(ds, "Modality")
    if value not in mapping["modality"]:
      raise ValueError(f"{path}: Modality (0008,0060) {value!r} has no mapping; known: "
                       f"{sorted(mapping['modality'])}; {hint}")
    modality = mapping["modality"][value]
    if modality is None:
      return SKIP
  organ = override.get("organ")
  if organ is None:
    value = _tag(ds, "BodyPartExamined")
    if value and value in mapping["organ"]:
      organ = mapping["organ"][value]
      if organ is None:
        return SKIP
    elif not value and mapping["default_organ"]:
      organ = mapping["default_organ"]
    else:
      raise ValueError(
          f"{path}: BodyPartExamined (0018,0015) {value!r} has no mapping; known: "
          f"{sorted(mapping['organ'])}; set \"default_organ\" or an entry, or label the "
          f"file under \"files\"; {hint}")
  disease = override.get("disease") or mapping["default_disease"]
  if disease == "normal":
    disease = f"{organ}_normal"
  diseases = schema_lib.DISEASES_BY_ORGAN[organ]
  if disease not in diseases:
    raise ValueError(f"{path}: disease {disease!r} is not a disease of organ {organ!r}; "
                     f"expected one of {list(diseases)}; label the file under \"files\"")
  return modality, organ, disease


def list_dicom_files(root: str) -> list[str]:
  """Sorted paths of the .dcm/.dicom files below `root` (other files are ignored)."""
  out = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    out.extend(os.path.join(dirpath, n) for n in filenames
               if os.path.splitext(n)[1].lower() in images_lib.DICOM_EXTENSIONS)
  if not out:
    raise ValueError(f"data.manual_dir {root} holds no DICOM files; expected files ending "
                     f"in {list(images_lib.DICOM_EXTENSIONS)}")
  return sorted(out)


def scan(root: str, mapping) -> list[tuple[str, tuple[str, str, str], str]]:
  """[(path, labels, patient key)] of the files kept; reads headers only."""
  import pydicom   # pylint: disable=g-import-not-at-top
  from pydicom import errors as dicom_errors   # pylint: disable=g-import-not-at-top
  out = []
  for path in list_dicom_files(root):
    try:
      ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (dicom_errors.InvalidDicomError, OSError, EOFError, ValueError, KeyError) as e:
      raise ValueError(f"DICOM file {path} is not readable: {type(e).__name__}: {e}") from e
    labels = resolve_labels(ds, os.path.relpath(path, root), path, mapping)
    if labels != SKIP:
      patient = str(ds.get("PatientID", "") or "") or path
      out.append((path, labels, patient))
  if not out:
    raise ValueError(f"every DICOM file below {root} is skipped by the mapping")
  return out


class DicomDir(base.DnhBuilder, skip_registration=True):
  """DICOM files labelled from Modality / BodyPartExamined and a mapping."""

  name = "dnh_dicom_dir"

  def schema(self) -> schema_lib.Schema:
    return schema_lib.multi_characteristic_schema()

  def _examples(self) -> Iterator[dict[str, Any]]:
    p = self.params
    entries = scan(p["root"], p["mapping"])
    groups = image_folder.group_ids([g for _, _, g in entries])
    s = self.schema()
    loaded = self.parallel_map(image_folder.load_item,
                               [(e[0], p["image_size"]) for e in entries])
    for i, ((_, (modality, organ, disease), _), group, image) in enumerate(
        zip(entries, groups, loaded)):
      yield {"image": image, "id": np.int64(i), "group": group,
             **s.encode({"modality": modality, "organ": organ, "disease": disease})}


def from_config(data_cfg, data_dir: str) -> DicomDir:
  """`config.data` (manual_dir, label_map, image_size) -> DicomDir builder."""
  root = base.check_manual_dir(data_cfg.manual_dir, "DICOM files (*.dcm)")
  mapping = load_mapping(data_cfg.label_map)
  entries = scan(root, mapping)
  paths = [e[0] for e in entries]
  params = {"image_size": int(data_cfg.image_size), "root": root, "mapping": mapping,
            "fingerprint": base.files_fingerprint(paths, root)}
  config = base.make_config(f"s{data_cfg.image_size}_n{len(entries)}", params,
                            base.shared_code_files() + (os.path.abspath(__file__),))
  # Pixel data is decoded while building: a file without decodable pixels stops the
  # build with an error naming it, and the half-written copy is discarded.
  return DicomDir(config=config, data_dir=base.builder_data_dir(data_dir),
                  file_format=base.FILE_FORMAT)
