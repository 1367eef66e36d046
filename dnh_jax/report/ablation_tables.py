"""Ablation tables: the finished cells' metrics as Markdown (best in bold) and CSV.

A cell is finished when its workdir holds a readable results.json (a corrupt one is not:
`finished`). Metric patterns (fnmatch) are looked up in results.json, then in the last row
of the cell's logs/metrics.jsonl holding them, so training-time metrics can be tabulated
too. Cells differing only by seed share a row: mean and sample std.
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import io
import json
import math
import os
from typing import Sequence

from dnh_jax.report.sweep import Cell
from dnh_jax.utils import atomic_write_text

RESULTS = "results.json"


def _read_json(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def finished(workdir: str) -> bool:
  """Whether a cell's results.json exists and parses (a corrupt one is not finished)."""
  return isinstance(_read_json(os.path.join(workdir, RESULTS)), dict)


def training_metrics(workdir: str) -> dict[str, float]:
  """The last logged value of every scalar in <workdir>/logs/metrics.jsonl."""
  out: dict[str, float] = {}
  try:
    with open(os.path.join(workdir, "logs", "metrics.jsonl")) as f:
      for line in f:
        try:
          row = json.loads(line)
        except ValueError:
          continue  # a line cut short by an interruption
        out.update({k: v for k, v in row.items() if k != "step" and
                    isinstance(v, (int, float))})
  except OSError:
    pass
  return out


def cell_metrics(workdir: str, patterns: Sequence[str]) -> dict[str, float]:
  """Metrics of a finished cell matching `patterns`: results.json, then the training log."""
  results = _read_json(os.path.join(workdir, RESULTS)) or {}
  pool = {**training_metrics(workdir), **results}
  out = {}
  for pattern in patterns:
    for key in sorted(pool):
      if fnmatch.fnmatchcase(key, pattern) and isinstance(pool[key], (int, float)):
        out[key] = float(pool[key])
  return out


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
  vals = [v for v in values if not math.isnan(v)]
  if not vals:
    return math.nan, math.nan
  mean = sum(vals) / len(vals)
  std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 \
      else 0.0
  return mean, std


@dataclasses.dataclass
class Table:
  """Rows of (labels, {metric: (mean, std, n)}), the label and metric columns."""

  label_columns: list[str]
  metric_columns: list[str]
  rows: list[tuple[dict[str, str], dict[str, tuple[float, float, int]]]]

  def best(self, lower_is_better: Sequence[str]) -> dict[str, int]:
    """Row index of the best mean per metric column (ties: first row)."""
    out = {}
    for m in self.metric_columns:
      lower = any(fnmatch.fnmatchcase(m, p) for p in lower_is_better)
      scored = [(r[1][m][0], i) for i, r in enumerate(self.rows)
                if m in r[1] and not math.isnan(r[1][m][0])]
      if scored:
        out[m] = (min(scored) if lower else min((-v, i) for v, i in scored))[1]
    return out


def collect(cells: Sequence[Cell], workdir: str, patterns: Sequence[str]) -> Table:
  """Groups the finished cells into table rows (seeds of a row averaged)."""
  grouped: dict[tuple, list[dict[str, float]]] = {}
  for cell in cells:
    grouped.setdefault(cell.row, [])
    path = os.path.join(workdir, cell.name)
    if finished(path):
      grouped[cell.row].append(cell_metrics(path, patterns))
  label_columns: list[str] = []
  for row in grouped:
    label_columns += [k for k, _ in row if k not in label_columns]
  metric_columns: list[str] = []
  for pattern in patterns:
    found = sorted({k for runs in grouped.values() for r in runs for k in r
                    if fnmatch.fnmatchcase(k, pattern)})
    metric_columns += [k for k in found if k not in metric_columns]
  rows = []
  for row, runs in grouped.items():
    stats = {}
    for m in metric_columns:
      vals = [r[m] for r in runs if m in r]
      if vals:
        mean, std = _mean_std(vals)
        stats[m] = (mean, std, len(vals))
    rows.append((dict(row), stats))
  return Table(label_columns, metric_columns, rows)


def _fmt(stat: tuple[float, float, int] | None, with_std: bool) -> str:
  if stat is None:
    return "-"
  mean, std, n = stat
  if math.isnan(mean):
    return "nan"
  text = f"{mean:.4f}"
  return text + f" ± {std:.4f}" if with_std and n > 1 else text


def to_markdown(table: Table, lower_is_better: Sequence[str], title: str = "") -> str:
  """The table in Markdown, best value per metric column in bold, '-' for missing."""
  best = table.best(lower_is_better)
  with_std = any(s[2] > 1 for _, stats in table.rows for s in stats.values())
  header = table.label_columns + table.metric_columns
  lines = ([f"# {title}", ""] if title else [])
  lines += ["| " + " | ".join(header) + " |", "|" + "|".join(
      ["---"] * len(table.label_columns) + ["---:"] * len(table.metric_columns)) + "|"]
  for i, (labels, stats) in enumerate(table.rows):
    cells = [labels.get(c, "").replace("|", "\\|") for c in table.label_columns]
    for m in table.metric_columns:
      text = _fmt(stats.get(m), with_std)
      cells.append(f"**{text}**" if best.get(m) == i else text)
    lines.append("| " + " | ".join(cells) + " |")
  lowered = [m for m in table.metric_columns
             if any(fnmatch.fnmatchcase(m, p) for p in lower_is_better)]
  notes = ["Bold: best per column (higher is better" +
           (f"; lower for {', '.join(lowered)}" if lowered else "") + ")."]
  if with_std:
    notes.append("Cells with several seeds show mean ± sample std.")
  return "\n".join(lines + [""] + notes) + "\n"


def to_csv(table: Table, lower_is_better: Sequence[str]) -> str:
  """Raw numbers: label columns, per metric its mean (and _std, _n with seeds), `best`."""
  best = table.best(lower_is_better)
  with_std = any(s[2] > 1 for _, stats in table.rows for s in stats.values())
  header = list(table.label_columns)
  for m in table.metric_columns:
    header += [m] + ([f"{m}_std", f"{m}_n"] if with_std else [])
  header.append("best")
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(header)
  for i, (labels, stats) in enumerate(table.rows):
    row = [labels.get(c, "") for c in table.label_columns]
    for m in table.metric_columns:
      mean, std, n = stats.get(m, (math.nan, math.nan, 0))
      row += [repr(mean) if n else ""] + ([repr(std) if n else "", n] if with_std else [])
    row.append(";".join(m for m in table.metric_columns if best.get(m) == i))
    writer.writerow(row)
  return buf.getvalue()


def write_tables(cells: Sequence[Cell], workdir: str, patterns: Sequence[str],
                 lower_is_better: Sequence[str], title: str = "",
                 name: str = "ablation") -> Table:
  """Writes <workdir>/<name>.md and <name>.csv atomically; returns the table."""
  table = collect(cells, workdir, patterns)
  atomic_write_text(os.path.join(workdir, name + ".md"),
                    to_markdown(table, lower_is_better, title))
  atomic_write_text(os.path.join(workdir, name + ".csv"), to_csv(table, lower_is_better))
  return table
