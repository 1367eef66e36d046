"""Plain-text and Markdown tables of results for people."""

from __future__ import annotations

from typing import Mapping, Sequence

_METRIC_ORDER = ("mAP@10", "mAP@100", "mAP@1000", "nDCG@10", "nDCG@100", "nDCG@1000",
                 "ACG@100", "wMAP@100", "P@r2", "bit_balance")


def _sort_key(metric: str):
  return (_METRIC_ORDER.index(metric) if metric in _METRIC_ORDER else len(_METRIC_ORDER),
          metric)


def results_table(results: Mapping[str, float], split: str = "test",
                  metrics: Sequence[str] | None = None) -> str:
  """A fixed-width table: one row per group/preference of `split`, one column per metric.

  Args:
    results: the flat results dict ("test/mAP@100", "test/held_out/mAP@100", ...).
    split: which split prefix to show.
    metrics: columns to show (default: every metric present, in a standard order).

  Returns:
    The table as text.
  """
  rows: dict[str, dict[str, float]] = {}
  for key, value in results.items():
    parts = key.split("/")
    if parts[0] != split or len(parts) < 2:
      continue
    row = "/".join(parts[1:-1]) or "all queries"
    rows.setdefault(row, {})[parts[-1]] = value
  if not rows:
    return f"(no {split} results)"
  cols = list(metrics) if metrics else sorted(
      {m for r in rows.values() for m in r if not m.startswith("num_")}, key=_sort_key)
  width = max(len(r) for r in rows) + 2
  col_w = {c: max(10, len(c)) + 2 for c in cols}
  lines = [f"{split + ' results':<{width}}" + "".join(f"{c:>{col_w[c]}}" for c in cols)]
  lines.append("-" * len(lines[0]))
  for name in sorted(rows, key=lambda r: (r != "all queries", r)):
    cells = "".join(f"{rows[name][c]:>{col_w[c]}.4f}" if c in rows[name]
                    else f"{'-':>{col_w[c]}}" for c in cols)
    lines.append(f"{name:<{width}}" + cells)
  return "\n".join(lines)
