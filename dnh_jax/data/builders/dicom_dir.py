"""TFDS builder of a DICOM archive (PACS export, research folder) labelled from its tags.

Every file below `data.manual_dir` is looked at (exports often have no extension, e.g.
`IM000001`); hidden files and folders are not. A file that cannot be used - not DICOM, no
pixel data (SR, RTPLAN, ECG, KO, PR, DICOMDIR), an undecodable transfer syntax, truncated
pixels, a label the mapping cannot resolve - is skipped, never aborts the build, and is
listed with its reason in `ingest_report.json` beside the dataset (see
`dnh_jax.data.ingest_report`); a summary is printed after the build. With
`data.strict_labels=True` an unresolved label is an error instead. Pixels go through the
display pipeline of `dnh_jax.data.dicom_pixels`; one item per file (the middle frame).

Labels (modality, organ, disease) come from a mapping; `DEFAULT_MAPPING` holds the common
DICOM defined terms and `data.label_map` may name a JSON file that overrides it:

    {
      "modality": {"MR": "MRI", "PT": null},      # Modality (0008,0060) -> name; null: skip
      "organ": {"HEAD": "brain", "SKULL": "brain"},   # BodyPartExamined (0018,0015)
      "descriptions": [                           # regexes (case-insensitive, searched) on
        {"pattern": "FLAIR|T2 BRAIN", "organ": "brain", "disease": "normal"},
        {"pattern": "COVID", "field": "StudyDescription", "disease": "covid"}
      ],                                          # Series/StudyDescription; first match wins
      "diseases": {"brain": ["brain_normal", "glioma", "meningioma", "pituitary_tumor",
                             "stroke"]},          # the disease vocabulary of an organ
      "default_organ": "chest",                   # when BodyPartExamined is absent
      "default_disease": "normal",                # "normal" = the organ's normal class
      "files": {"sub/ct1.dcm": {"disease": "covid"}}   # per file (relative path): any label
    }

Precedence for each label: `files`, then the first matching `descriptions` rule, then the
tag through `modality` / `organ`, then the defaults. Sections given in the JSON update the
same keys of the defaults (`descriptions` are appended); tag values are matched after
stripping and upper-casing. Every organ has a normal class `<organ>_normal` by default
(`DEFAULT_DISEASES`), so a normal head scan is `brain_normal`. Examples of one patient
(PatientID) share a group, and a group never straddles two splits.
"""

from __future__ import annotations

import copy
import json
import os
import re
from typing import Any, Iterator, Mapping

import numpy as np

from dnh_jax.data import dicom_pixels
from dnh_jax.data import ingest_report
from dnh_jax.data import schema as schema_lib
from dnh_jax.data.builders import base
from dnh_jax.data.builders import image_folder

# Every organ's vocabulary with its normal class (brain has none in the published one).
DEFAULT_DISEASES = {
    organ: tuple(dict.fromkeys(diseases + (f"{organ}_normal",)))
    for organ, diseases in schema_lib.DISEASES_BY_ORGAN.items()}
DEFAULT_MAPPING = {
    "modality": {"CT": "CT", "MR": "MRI", "CR": "XR", "DX": "XR", "RG": "XR", "MG": "XR",
                 "US": "US", "OPT": "OCT", "OCT": "OCT"},
    "organ": {"HEAD": "brain", "BRAIN": "brain", "SKULL": "brain", "BREAST": "breast",
              "CHEST": "chest", "THORAX": "chest", "LUNG": "chest", "EYE": "retina",
              "RETINA": "retina", "ABDOMEN": "abdomen", "LIVER": "abdomen",
              "KIDNEY": "abdomen", "PANCREAS": "abdomen"},
    "descriptions": [],
    "diseases": {k: list(v) for k, v in DEFAULT_DISEASES.items()},
    "default_organ": None,
    "default_disease": "normal",
    "files": {},
}
MAPPING_KEYS = tuple(DEFAULT_MAPPING)
FILE_LABEL_KEYS = ("modality", "organ", "disease")
RULE_KEYS = ("pattern", "field") + FILE_LABEL_KEYS
DESCRIPTION_FIELDS = ("SeriesDescription", "StudyDescription")
SKIP = "skip"   # resolved label of files the mapping maps to null
# Skip reasons of labelling (pixel reasons: dicom_pixels.REASONS).
UNMAPPED_MODALITY = "unmapped_modality"
UNMAPPED_ORGAN = "unmapped_organ"
UNMAPPED_DISEASE = "unmapped_disease"
EXCLUDED = "excluded_by_label_map"
_NAME = re.compile(r"[a-z][a-z0-9_]*")


class Unlabelled(ValueError):
  """A file whose labels the mapping cannot resolve; `reason`, `unmapped` (tag, value)."""

  def __init__(self, reason: str, message: str, unmapped: tuple[str, str] | None = None):
    super().__init__(message)
    self.reason = reason
    self.unmapped = unmapped


def load_mapping(path: str) -> dict[str, Any]:
  """The default mapping updated with the JSON file at `path` ("" = defaults only).

  Raises:
    ValueError: naming the file and key, for unknown sections, bad rules or names outside
      the vocabularies.
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
    if key == "descriptions":
      if not isinstance(value, list):
        raise ValueError(f"data.label_map {path}: 'descriptions' must be a list of rules")
      mapping[key].extend(value)
    elif isinstance(mapping[key], dict):
      if not isinstance(value, dict):
        raise ValueError(f"data.label_map {path}: {key!r} must be an object")
      if key in ("files", "diseases"):
        mapping[key].update(value)
      else:
        mapping[key].update({str(k).strip().upper(): v for k, v in value.items()})
    else:
      mapping[key] = value
  _validate(mapping, path)
  return mapping


def disease_vocabulary(mapping: Mapping[str, Any]) -> tuple[str, ...]:
  """Every organ's diseases, in organ order, without duplicates."""
  return tuple(dict.fromkeys(d for organ in schema_lib.ORGANS
                             for d in mapping["diseases"].get(organ, ())))


def _validate(mapping, path: str):
  for organ, names in mapping["diseases"].items():
    if organ not in schema_lib.ORGANS:
      raise ValueError(f"data.label_map {path}: diseases[{organ!r}]: unknown organ; "
                       f"expected one of {list(schema_lib.ORGANS)}")
    if (not isinstance(names, list) or not names
        or not all(isinstance(n, str) and _NAME.fullmatch(n) for n in names)):
      raise ValueError(f"data.label_map {path}: diseases[{organ!r}] must be a non-empty "
                       "list of lower-case names (e.g. ['brain_normal', 'glioma'])")
  diseases = disease_vocabulary(mapping) + ("normal",)

  def check(value, vocabulary, where):
    if value is not None and value not in vocabulary:
      raise ValueError(f"data.label_map {path}: {where} = {value!r}; expected one of "
                       f"{list(vocabulary)} or null")
  for tag, name in mapping["modality"].items():
    check(name, schema_lib.MODALITIES, f"modality[{tag!r}]")
  for tag, name in mapping["organ"].items():
    check(name, schema_lib.ORGANS, f"organ[{tag!r}]")
  check(mapping["default_organ"], schema_lib.ORGANS, "default_organ")
  check(mapping["default_disease"], diseases, "default_disease")
  labelled = [(f"files[{rel!r}]", labels, FILE_LABEL_KEYS)
              for rel, labels in mapping["files"].items()]
  labelled += [(f"descriptions[{i}]", rule, RULE_KEYS)
               for i, rule in enumerate(mapping["descriptions"])]
  for where, labels, keys in labelled:
    if not isinstance(labels, dict) or set(labels) - set(keys):
      raise ValueError(f"data.label_map {path}: {where} must be an object with keys "
                       f"from {list(keys)}")
    check(labels.get("modality"), schema_lib.MODALITIES, f"{where}.modality")
    check(labels.get("organ"), schema_lib.ORGANS, f"{where}.organ")
    check(labels.get("disease"), diseases, f"{where}.disease")
  for i, rule in enumerate(mapping["descriptions"]):
    try:
      re.compile(str(rule.get("pattern", "")))
    except re.error as e:
      raise ValueError(f"data.label_map {path}: descriptions[{i}].pattern is not a "
                       f"regular expression: {e}") from None
    if not rule.get("pattern") or rule.get("field", "any") not in DESCRIPTION_FIELDS + (
        "any",):
      raise ValueError(f"data.label_map {path}: descriptions[{i}] needs a \"pattern\" and "
                       f"a \"field\" from {list(DESCRIPTION_FIELDS) + ['any']}")


def _tag(ds, keyword: str) -> str:
  try:
    return str(ds.get(keyword, "") or "").strip().upper()
  except Exception:   # pylint: disable=broad-except  (a malformed value reads as absent)
    return ""


def _description_rule(ds, mapping) -> Mapping[str, str]:
  for rule in mapping["descriptions"]:
    fields = DESCRIPTION_FIELDS if rule.get("field", "any") == "any" else (rule["field"],)
    if any(re.search(rule["pattern"], _tag(ds, f), re.IGNORECASE) for f in fields):
      return rule
  return {}


def resolve_labels(ds, rel_path: str, path: str,
                   mapping: Mapping[str, Any]) -> tuple[str, str, str] | str:
  """(modality, organ, disease) of one file, or SKIP if the mapping maps it to null.

  Raises:
    Unlabelled: naming the file, the tag and its value, and how to fix the mapping.
  """
  override = {**_description_rule(ds, mapping), **mapping["files"].get(rel_path, {})}
  hint = "map it in data.label_map (see dnh_jax/data/builders/dicom_dir.py)"
  modality = override.get("modality")
  if modality is None:
    value = _tag(ds, "Modality")
    if value not in mapping["modality"]:
      raise Unlabelled(UNMAPPED_MODALITY, f"{path}: Modality (0008,0060) {value!r} has no "
                       f"mapping; known: {sorted(mapping['modality'])}; {hint}",
                       ("Modality", value))
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
      raise Unlabelled(
          UNMAPPED_ORGAN, f"{path}: BodyPartExamined (0018,0015) {value!r} has no mapping; "
          f"known: {sorted(mapping['organ'])}; set \"default_organ\", an \"organ\" entry or "
          f"a \"descriptions\" rule, or label the file under \"files\"; {hint}",
          ("BodyPartExamined", value))
  disease = override.get("disease") or mapping["default_disease"]
  if disease == "normal":
    disease = f"{organ}_normal"
  diseases = mapping["diseases"].get(organ, ())
  if disease not in diseases:
    raise Unlabelled(UNMAPPED_DISEASE, f"{path}: disease {disease!r} is not a disease of "
                     f"organ {organ!r}; expected one of {list(diseases)}; add it under "
                     f"\"diseases\" or label the file under \"files\"")
  return modality, organ, disease


def list_files(root: str) -> list[str]:
  """Sorted paths of every file below `root`, hidden files and folders left out."""
  out = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    out.extend(os.path.join(dirpath, n) for n in filenames if not n.startswith("."))
  if not out:
    raise ValueError(f"data.manual_dir {root} holds no files; expected DICOM files")
  return sorted(out)


def scan(root: str, mapping, *, strict: bool = False) -> list[dict[str, Any]]:
  """One report entry per file, from headers only (pixels are decoded by the build).

  Entries of usable files have status "pending" and "labels", "patient"; the others are
  "skipped" with a reason.

  Raises:
    ValueError: with `strict`, for the first file whose label cannot be resolved.
  """
  out = []
  for path in list_files(root):
    rel = os.path.relpath(path, root)
    entry = {"path": rel, "status": "pending", "reason": None, "message": "", "tags": {}}
    out.append(entry)
    try:
      ds, has_meta = dicom_pixels.read_header(path)
      entry["tags"] = dicom_pixels.header_tags(ds)
      entry["file_meta"] = has_meta
      if not dicom_pixels.has_pixel_data(ds):   # a deferred read still lists it
        raise dicom_pixels.no_pixel_data(ds, path)
      labels = resolve_labels(ds, rel, path, mapping)
    except dicom_pixels.Unusable as e:
      entry.update(status=ingest_report.SKIPPED, reason=e.reason, message=str(e))
      continue
    except Unlabelled as e:
      if strict:
        raise ValueError(f"{e} (data.strict_labels=True)") from None
      entry.update(status=ingest_report.SKIPPED, reason=e.reason, message=str(e),
                   unmapped=e.unmapped)
      continue
    if labels == SKIP:
      entry.update(status=ingest_report.SKIPPED, reason=EXCLUDED,
                   message=f"{path}: mapped to null by data.label_map")
      continue
    entry["labels"] = dict(zip(FILE_LABEL_KEYS, labels))
    entry["patient"] = _tag(ds, "PatientID") or f"file:{rel}"
  return out


class DicomDir(base.DnhBuilder, skip_registration=True):
  """DICOM files labelled from their tags and a mapping; unusable files are skipped."""

  name = "dnh_dicom_dir"

  def schema(self) -> schema_lib.Schema:
    return schema_lib.Schema((
        schema_lib.Characteristic("modality", schema_lib.MODALITIES),
        schema_lib.Characteristic("organ", schema_lib.ORGANS),
        schema_lib.Characteristic("disease", disease_vocabulary(self.params["mapping"]))))

  def _examples(self) -> Iterator[dict[str, Any]]:
    p = self.params
    root = p["root"]
    self.report_entries = entries = scan(root, p["mapping"])
    pending = [e for e in entries if e["status"] == "pending"]
    loaded = self.parallel_map(dicom_pixels.load_example,
                               [(os.path.join(root, e["path"]), p["image_size"])
                                for e in pending])
    s = self.schema()
    results = []
    for entry, (status, a, b) in zip(pending, loaded):
      if status == "ok":
        entry.update(status=ingest_report.INGESTED, window=b["window"], frames=b["frames"])
        results.append((entry, a))
      else:
        entry.update(status=ingest_report.SKIPPED, reason=a, message=b)
    if not results:
      summary = ingest_report.summarize(root, entries)
      raise ValueError(f"no file below {root} could be ingested "
                       f"({len(entries)} files; skipped by reason: "
                       f"{summary['skipped_by_reason']})")
    groups = image_folder.group_ids([e["patient"] for e, _ in results])
    for i, ((entry, image), group) in enumerate(zip(results, groups)):
      entry["id"] = i
      yield {"image": image, "id": np.int64(i), "group": group, **s.encode(entry["labels"])}

  def download_and_prepare(self, *args, **kwargs):
    super().download_and_prepare(*args, **kwargs)
    entries = getattr(self, "report_entries", None)
    if entries is not None:   # built now (not found complete)
      for entry in entries:
        entry.pop("patient", None)   # no patient identifiers in the report
      path = ingest_report.report_path(self.data_path)
      report = ingest_report.write(path, self.params["root"], entries)
      print(ingest_report.format_summary(report["summary"], path), flush=True)


def from_config(data_cfg, data_dir: str) -> DicomDir:
  """`config.data` (manual_dir, label_map, image_size, strict_labels) -> DicomDir."""
  root = base.check_manual_dir(data_cfg.manual_dir, "DICOM files")
  mapping = load_mapping(data_cfg.label_map)
  entries = scan(root, mapping, strict=bool(data_cfg.strict_labels))
  usable = [e for e in entries if e["status"] == "pending"]
  if not usable:
    summary = ingest_report.summarize(root, entries)
    raise ValueError(f"no usable DICOM image below {root}: {len(entries)} files, skipped by "
                     f"reason {summary['skipped_by_reason']}; unmapped tag values "
                     f"{summary['unmapped_values']}")
  paths = [os.path.join(root, e["path"]) for e in entries]
  params = {"image_size": int(data_cfg.image_size), "root": root, "mapping": mapping,
            "fingerprint": base.files_fingerprint(paths, root)}
  config = base.make_config(f"s{data_cfg.image_size}_n{len(usable)}", params,
                            base.shared_code_files() + (
                                os.path.abspath(__file__),
                                os.path.abspath(dicom_pixels.__file__)))
  return DicomDir(config=config, data_dir=base.builder_data_dir(data_dir),
                  file_format=base.FILE_FORMAT)
