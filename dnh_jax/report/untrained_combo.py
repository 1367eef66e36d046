"""The table of the main command: held-out vs seen combinations, per preference.

`held_out_table(results)` reads the flat results dict written by the trainer for a config
with `eval.query_groups = ("held_out",)` (configs/untrained_combo.py) and formats:

* retrieval: one row per preference ("all" = the main metrics: mAP relevance = exact
  combination, nDCG gain = number of matched characteristics; a characteristic =
  relevance on that characteristic, ranking by its sub-code), columns mAP@k and nDCG@k for
  held-out queries, seen queries and all queries;
* sub-code accuracy: one row per characteristic, the k-NN accuracy of its sub-code
  ("<c>/knn_accuracy", see `dnh_jax.evaluation.subcode_accuracy`).

`comparison_table({model: results})` puts several runs side by side (held-out and seen
columns per model), for the independent / structured / flat comparison.
"""

from __future__ import annotations

from typing import Mapping, Sequence

GROUPS = (("held_out", "held-out"), ("seen", "seen"), ("", "all queries"))
_CELL = 9


def _get(results: Mapping[str, float], split: str, group: str, key: str) -> float | None:
  path = "/".join(p for p in (split, group, key) if p)
  value = results.get(path)
  return None if value is None else float(value)


def _fmt(value: float | None) -> str:
  return f"{'-':>{_CELL}}" if value is None else f"{value:>{_CELL}.4f}"


def _preferences(results: Mapping[str, float], split: str, k: int) -> list[str]:
  """Preference names present in the results ("<split>/<pref>/mAP@k"), sorted by name."""
  names = set()
  for key in results:
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == split and parts[2] == f"mAP@{k}":
      names.add(parts[1])
  return sorted(names - {"held_out", "seen", "all"})


def _characteristics(results: Mapping[str, float], split: str) -> list[str]:
  names = []
  for key in results:
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == split and parts[2] == "knn_accuracy":
      names.append(parts[1])
  return names


def held_out_table(results: Mapping[str, float], split: str = "test", k: int = 100,
                   knn: int | None = None, title: str = "") -> str:
  """Held-out vs seen retrieval per preference, and per-characteristic sub-code accuracy.

  Args:
    results: flat results ("test/held_out/mAP@100", "test/seen/organ/nDCG@100",
      "test/held_out/organ/knn_accuracy", "test/held_out/num_queries", ...).
    split: results prefix.
    k: the cutoff shown.
    knn: neighbours of the accuracy vote, for the caption (None: not stated).
    title: first line (default: names the split and the query counts).

  Returns:
    The table as text.
  """
  counts = {g: _get(results, split, g, "num_queries") for g, _ in GROUPS if g}
  if title:
    lines = [title]
  else:
    held, seen = counts["held_out"], counts["seen"]
    lines = [f"Untrained combinations ({split}): "
             f"{int(held or 0)} held-out / {int(seen or 0)} seen queries"]
  width = 26
  group_head = "".join(f"{label:>{2 * _CELL}}" for _, label in GROUPS)
  metric_head = "".join(f"{'mAP@' + str(k):>{_CELL}}{'nDCG@' + str(k):>{_CELL}}"
                        for _ in GROUPS)
  lines += [f"{'':<{width}}{group_head}", f"{'preference':<{width}}{metric_head}"]
  lines.append("-" * len(lines[-1]))
  rows = [("all (exact combination)", "")] + [(p, p) for p in _preferences(results, split, k)]
  for label, pref in rows:
    cells = "".join(
        _fmt(_get(results, split, g, "/".join(x for x in (pref, f"mAP@{k}") if x)))
        + _fmt(_get(results, split, g, "/".join(x for x in (pref, f"nDCG@{k}") if x)))
        for g, _ in GROUPS)
    lines.append(f"{label:<{width}}{cells}")
  chars = _characteristics(results, split)
  if chars:
    caption = "sub-code k-NN accuracy" + (f" (k={knn})" if knn else "")
    lines += ["", f"{caption:<{width}}" + "".join(
        f"{label:>{2 * _CELL}}" for _, label in GROUPS)]
    lines.append("-" * len(lines[-1]))
    for c in chars:
      lines.append(f"{c:<{width}}" + "".join(
          f"{'':>{_CELL}}" + _fmt(_get(results, split, g, f"{c}/knn_accuracy"))
          for g, _ in GROUPS))
    lines.append("(voters: the gallery items of seen pairs when pairs are held out)")
  return "\n".join(lines)


def comparison_table(runs: Mapping[str, Mapping[str, float]], split: str = "test",
                     k: int = 100, preferences: Sequence[str] = ("modality", "organ",
                                                                   "disease")) -> str:
  """Several runs side by side: held-out and seen columns of mAP@k and nDCG@k per model.

  Args:
    runs: {model name: flat results dict}.
    split: results prefix.
    k: the cutoff shown.
    preferences: preference rows shown after the exact-combination row.

  Returns:
    A Markdown table (rows: metric; columns: model x {held-out, seen}).
  """
  names = list(runs)
  head = "| metric | " + " | ".join(f"{n} held-out | {n} seen" for n in names) + " |"
  rule = "|---|" + "---:|" * (2 * len(names))
  lines = [head, rule]
  metric_rows = [(f"mAP@{k} (exact combination)", f"mAP@{k}"),
                 (f"nDCG@{k} (matched characteristics)", f"nDCG@{k}")]
  metric_rows += [(f"{p}: mAP@{k}", f"{p}/mAP@{k}") for p in preferences]
  metric_rows += [(f"{c} sub-code k-NN accuracy", f"{c}/knn_accuracy")
                  for c in ("modality", "organ", "disease")]
  for label, key in metric_rows:
    cells = []
    for n in names:
      for g in ("held_out", "seen"):
        v = _get(runs[n], split, g, key)
        cells.append("-" if v is None else f"{v:.3f}")
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
