"""`ingest_report.json`: what a real-data build took in and what it left out, and why.

Written beside the built dataset (`<dataset dir>/ingest_report.json`) by builders that
read a user's archive (DICOM), with one entry per file found:

    {"summary": {"root", "files_found", "ingested", "skipped", "ingested_by_modality",
                 "ingested_by_organ", "skipped_by_reason", "unmapped_values", ...},
     "files": [{"path": <relative to root>, "status": "ingested" | "skipped",
                "reason": null | <reason>, "message": ..., "tags": {...}, ...}]}

`format_summary` renders the summary as the one screen printed after a build and by
`python -m dnh_jax.data.prepare`.
"""

from __future__ import annotations

import collections
import json
import os
from typing import Any, Mapping, Sequence

from dnh_jax import utils

FILENAME = "ingest_report.json"
INGESTED = "ingested"
SKIPPED = "skipped"


def summarize(root: str, files: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """The summary of per-file entries (see the module docstring)."""
  ingested = [f for f in files if f["status"] == INGESTED]
  skipped = [f for f in files if f["status"] == SKIPPED]
  count = lambda values: dict(collections.Counter(values).most_common())
  unmapped: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  for f in skipped:
    if f.get("unmapped"):
      tag, value = f["unmapped"]
      unmapped[tag][value or "(empty)"] += 1
  return {
      "root": root,
      "files_found": len(files),
      "ingested": len(ingested),
      "skipped": len(skipped),
      "ingested_by_modality": count(f["labels"]["modality"] for f in ingested),
      "ingested_by_organ": count(f["labels"]["organ"] for f in ingested),
      "ingested_by_label": count("/".join(f["labels"].values()) for f in ingested),
      "window_rules": count(f["window"] for f in ingested),
      "skipped_by_reason": count(f["reason"] for f in skipped),
      "unmapped_values": {t: dict(c.most_common()) for t, c in sorted(unmapped.items())},
  }


def write(path: str, root: str, files: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """Writes the report atomically; returns it."""
  report = {"summary": summarize(root, files), "files": list(files)}
  utils.atomic_write_json(path, report)
  return report


def read(path: str) -> dict[str, Any]:
  """The report at `path`; raises a one-line ValueError naming it if unreadable."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"ingest report {path} is not readable JSON: {e}") from e


def _counts(counts: Mapping[str, int], limit: int = 8) -> str:
  items = list(counts.items())
  text = ", ".join(f"{k} {v}" for k, v in items[:limit])
  return text + (f", ... ({len(items) - limit} more)" if len(items) > limit else "") or "-"


def format_summary(summary: Mapping[str, Any], path: str = "") -> str:
  """The one-screen summary printed after a build."""
  lines = [f"Ingested {summary['ingested']} of {summary['files_found']} files below "
           f"{summary['root']} ({summary['skipped']} skipped)",
           f"  ingested by modality: {_counts(summary['ingested_by_modality'])}",
           f"  ingested by organ:    {_counts(summary['ingested_by_organ'])}",
           f"  display window:       {_counts(summary.get('window_rules', {}))}",
           f"  skipped by reason:    {_counts(summary['skipped_by_reason'])}"]
  for tag, values in summary.get("unmapped_values", {}).items():
    lines.append(f"  unmapped {tag}: {_counts(values)} (map them in data.label_map)")
  if path:
    lines.append(f"  report: {path}")
  return "\n".join(lines)


def report_path(dataset_dir: str | os.PathLike) -> str:
  return os.path.join(os.fspath(dataset_dir), FILENAME)
