"""TFDS builder of NIH ChestX-ray14 from the user's copy (multi-label findings).

`data.manual_dir` holds `Data_Entry_2017.csv` (or the `Data_Entry_2017_v2020.csv`
re-release) with the columns 'Image Index', 'Finding Labels' (names joined by '|', or
'No Finding') and 'Patient ID', and the PNG images anywhere below it (the NIH release
unpacks into images/, the Kaggle mirror into images_001/images/ ... images_012/images/).

Hernia is dropped as in the published 13-finding protocol (Wang et al., ChestX-ray8,
CVPR 2017); images whose only finding is Hernia are left out rather than relabelled
"no finding". The patient id is the
example's group, so one patient's images never straddle the train and test splits.
"""

from __future__ import annotations

import csv
import os
from typing import Any, Iterator

import numpy as np

from dnh_jax.data import schema as schema_lib
from dnh_jax.data.builders import base
from dnh_jax.data.builders import image_folder

CSV_NAMES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
COLUMNS = ("Image Index", "Finding Labels", "Patient ID")
NO_FINDING = "No Finding"
DROPPED = ("Hernia",)
# CSV spelling -> schema name.
FINDING_NAMES = {f.replace("_", " ").title().replace(" ", "_"): f
                 for f in schema_lib.CHEST_FINDINGS}


def find_csv(manual_dir: str) -> str:
  for name in CSV_NAMES:
    path = os.path.join(manual_dir, name)
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(f"data.manual_dir {manual_dir} has no {' or '.join(CSV_NAMES)}; "
                          "expected the NIH ChestX-ray14 label file and its images")


def read_entries(csv_path: str) -> list[tuple[str, tuple[str, ...], int]]:
  """Parses the label file.

  Returns:
    [(image file name, findings in schema names, patient id)] in file order, hernia-only
    rows left out.

  Raises:
    ValueError: naming the file (and line) for a missing column, an unknown finding or a
      duplicate image name.
  """
  out, seen = [], set()
  with open(csv_path, newline="") as f:
    reader = csv.DictReader(f)
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
      raise ValueError(f"{csv_path}: missing column {missing[0]!r}; expected columns "
                       f"{list(COLUMNS)}, found {header}")
    for line, row in enumerate(reader, start=2):
      row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
      name = row["Image Index"]
      if not name:
        raise ValueError(f"{csv_path}:{line}: empty 'Image Index'")
      if name in seen:
        raise ValueError(f"{csv_path}:{line}: image {name!r} is listed twice")
      seen.add(name)
      labels = [s.strip() for s in row["Finding Labels"].split("|") if s.strip()]
      findings = []
      for label in labels:
        if label == NO_FINDING or label in DROPPED:
          continue
        if label not in FINDING_NAMES:
          raise ValueError(f"{csv_path}:{line}: unknown finding {label!r}; expected "
                           f"{sorted(FINDING_NAMES) + [NO_FINDING] + list(DROPPED)}")
        findings.append(FINDING_NAMES[label])
      if labels and not findings and any(l in DROPPED for l in labels):
        continue
      try:
        patient = int(row["Patient ID"])
      except ValueError:
        raise ValueError(f"{csv_path}:{line}: 'Patient ID' {row['Patient ID']!r} is not an "
                         "integer") from None
      out.append((name, tuple(findings), patient))
  if not out:
    raise ValueError(f"{csv_path} lists no images")
  return out


def index_images(manual_dir: str) -> dict[str, str]:
  """{file name: path} of every PNG below `manual_dir`."""
  index = {}
  for dirpath, dirnames, filenames in os.walk(manual_dir):
    dirnames.sort()
    for name in filenames:
      if name.lower().endswith(".png"):
        index.setdefault(name, os.path.join(dirpath, name))
  return index


def locate(entries, manual_dir: str, csv_path: str) -> list[str]:
  """The image path of each entry; raises naming the missing files."""
  index = index_images(manual_dir)
  paths = [index.get(name) for name, _, _ in entries]
  missing = [name for (name, _, _), p in zip(entries, paths) if p is None]
  if missing:
    raise FileNotFoundError(
        f"{len(missing)} of the {len(entries)} images listed in {csv_path} are not below "
        f"{manual_dir}, e.g. {missing[:3]}; expected every listed PNG to be present")
  return paths


class ChestXray14(base.DnhBuilder, skip_registration=True):
  """NIH ChestX-ray14 with 13 multi-label findings (Hernia dropped)."""

  name = "dnh_chestxray14"

  def schema(self) -> schema_lib.Schema:
    return schema_lib.chest_multilabel_schema()

  def _examples(self) -> Iterator[dict[str, Any]]:
    p = self.params
    entries = read_entries(p["csv"])
    paths = locate(entries, p["root"], p["csv"])
    findings_char = self.schema()["findings"]
    loaded = self.parallel_map(image_folder.load_item,
                               [(path, p["image_size"]) for path in paths])
    for i, ((_, findings, patient), image) in enumerate(zip(entries, loaded)):
      yield {"image": image, "id": np.int64(i), "group": np.int64(patient),
             "findings": findings_char.encode(findings)}


def from_config(data_cfg, data_dir: str) -> ChestXray14:
  """`config.data` (manual_dir, image_size) -> ChestXray14 builder."""
  root = base.check_manual_dir(data_cfg.manual_dir,
                               f"{CSV_NAMES[0]} and the ChestX-ray14 PNG images")
  csv_path = find_csv(root)
  entries = read_entries(csv_path)
  paths = locate(entries, root, csv_path)
  params = {"image_size": int(data_cfg.image_size), "root": root, "csv": csv_path,
            "fingerprint": base.files_fingerprint(paths + [csv_path], root)}
  config = base.make_config(f"s{data_cfg.image_size}_n{len(entries)}", params,
                            base.shared_code_files() + (os.path.abspath(__file__),))
  return ChestXray14(config=config, data_dir=base.builder_data_dir(data_dir),
                     file_format=base.FILE_FORMAT)
