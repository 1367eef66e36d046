"""Ablation grids: run every cell of a sweep, resume finished cells, tabulate the results.

  python -m dnh_jax.ablate --config=configs/ophash.py \\
      --sweep='bits=16,32,48,64;relational=on,off' --base=quick

A *cell* is one config argument string, `get_config(arg)` of the config file, trained and
evaluated by `train.train_and_evaluate` in its own workdir. The cells are

  variants x grid x seeds

* `--sweep='k1=a,b;k2=x,y'`: the grid, the product of every axis (k1=a,k2=x ...);
* `--variants='base;semantic=off;configs/baseline.py:loss=dch'`: explicit alternatives,
  each a config argument string ("base" or "" for none), optionally prefixed by another
  config file (`file.py:args`) - e.g. a method against its baselines, or one term off at a
  time, which a grid cannot express without running every combination;
* `--base=quick`: arguments every cell starts from (later arguments override earlier);
* `--seeds=0,1,2`: repeats each cell with config.seed set; the tables give mean and std;
* `--set='eval.relevance=organ_disease;train.steps=1500'`: config fields set in every
  cell after get_config (Python literals, else strings), e.g. to evaluate a baseline's
  config with the method's relevance rule. They are part of each cell's identity (a hash
  of them ends the folder name), so a changed --set never reuses old results.

Every cell is checked (config loaded, arguments parsed) before the first one runs, so a
typo fails in a second, not after an hour. A cell whose workdir holds results.json is done
and is not run again; a cell interrupted mid-training resumes from its checkpoints (the
trainer does that). A failed cell is recorded (error.txt in its workdir) and the others go
on; the exit status is 1 if any failed. The tables are rewritten after every cell:
<workdir>/ablation.md (best value per column in bold) and <workdir>/ablation.csv (raw
numbers and a `best` column naming the metrics a row is best at); `--name` renames them,
so several sweeps can share one workdir and reuse each other's finished cells.

Metrics (`--metrics`, comma-separated, fnmatch patterns allowed) are read from each
cell's results.json; a name absent there is looked up in the last row of the cell's
logs/metrics.jsonl holding it, so training-time metrics such as `train/dist_type1` can be
tabulated too. Higher is better, except for metrics matching `--lower_is_better`.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import fnmatch
import hashlib
import importlib.util
import io
import itertools
import json
import math
import os
import re
import sys
import time
import traceback
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
from absl import logging

from dnh_jax.utils import atomic_write_json, atomic_write_text

_CONFIG = flags.DEFINE_string("config", None, "Config file, e.g. configs/ophash.py (the "
                              "default file of variants that name none).")
_SWEEP = flags.DEFINE_string("sweep", "", "Grid: 'key=v1,v2;key2=v3,v4' (product of axes).")
_VARIANTS = flags.DEFINE_string("variants", "", "Alternatives: 'base;key=v;file.py:key=v'.")
_BASE = flags.DEFINE_string("base", "", "Config arguments every cell starts from, e.g. quick.")
_SET = flags.DEFINE_string("set", "", "Config overrides for every cell: 'a.b=1;c.d=text'.")
_SEEDS = flags.DEFINE_string("seeds", "", "Comma-separated seeds (default: the config's).")
_METRICS = flags.DEFINE_string(
    "metrics", "test/mAP@10,test/mAP@100,test/mAP@1000,test/nDCG@10,test/nDCG@100,"
    "test/nDCG@1000", "Comma-separated metric names or fnmatch patterns.")
_LOWER = flags.DEFINE_string("lower_is_better", "*seconds*,*loss*,*dist_type1*,"
                             "*quantization_error*", "Patterns of metrics where lower wins.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default "
                               "workdirs/ablate-<config name>).")
_NAME = flags.DEFINE_string("name", "ablation", "Table file names: <workdir>/<name>.md, .csv "
                            "(several tables can share one workdir and its finished cells).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "List the cells and their state, run nothing.")
_STOP_ON_ERROR = flags.DEFINE_bool("stop_on_error", False, "Stop at the first failed cell.")

RESULTS = "results.json"
ERROR = "error.txt"


# ----------------------------------------------------------------------------- cells

@dataclasses.dataclass(frozen=True)
class Cell:
  """One run of the ablation.

  Attributes:
    config_file: path of the config file.
    arg: the config argument string passed to get_config.
    labels: (column, value) pairs naming the cell in the tables (variant, swept keys).
    seed: config.seed override, or None for the config's own.
    overrides: (dotted field, value) pairs set after get_config (`parse_overrides`).
  """

  config_file: str
  arg: str
  labels: tuple[tuple[str, str], ...]
  seed: int | None = None
  overrides: tuple[tuple[str, Any], ...] = ()

  @property
  def name(self) -> str:
    """Folder name: config stem, then the arguments, then the seed; filesystem-safe."""
    stem = os.path.splitext(os.path.basename(self.config_file))[0]
    text = stem + ("-" + self.arg if self.arg else "")
    if self.seed is not None:
      text += f"-seed={self.seed}"
    if self.overrides:
      text += "-set=" + hashlib.sha1(repr(self.overrides).encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", text)

  @property
  def row(self) -> tuple[tuple[str, str], ...]:
    """The cell's labels without the seed (cells differing only by seed share a row)."""
    return self.labels


def parse_sweep(text: str) -> list[tuple[str, list[str]]]:
  """'bits=16,32;relational=on,off' -> [("bits", ["16", "32"]), ("relational", [...])].

  Raises:
    ValueError: an axis without '=', without values, or a key given twice.
  """
  axes, seen = [], set()
  for part in filter(None, (p.strip() for p in text.split(";"))):
    key, sep, values = part.partition("=")
    key = key.strip()
    vals = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key or not vals:
      raise ValueError(f"--sweep axis {part!r}: expected key=value1,value2,...")
    if key in seen:
      raise ValueError(f"--sweep names {key!r} twice")
    seen.add(key)
    axes.append((key, vals))
  return axes


def parse_variants(text: str, default_file: str | None) -> list[tuple[str, str, str]]:
  """'base;semantic=off;configs/x.py:loss=dch' -> [(label, config file, argument string)].

  Raises:
    ValueError: a variant without a config file when --config is not given.
  """
  out = []
  for part in [p.strip() for p in text.split(";")] if text.strip() else ["base"]:
    file, arg = default_file, part
    head, sep, rest = part.partition(":")
    if head.endswith(".py"):
      file, arg = head, rest if sep else ""
    elif part.endswith(".py"):
      file, arg = part, ""
    if arg in ("base", ""):
      arg = ""
    if not file:
      raise ValueError(f"--variants entry {part!r} names no config file and --config is "
                       "not given")
    if file != default_file:  # name the file in the label, shortly
      stem = os.path.splitext(os.path.basename(file))[0]
      label = stem + (f":{arg}" if arg else "")
    else:
      label = arg or "base"
    out.append((label, file, arg))
  return out


def parse_overrides(text: str) -> tuple[tuple[str, Any], ...]:
  """'eval.relevance=organ_disease;train.steps=1500' -> (("eval.relevance", "organ_disease"),
  ("train.steps", 1500)). Values are Python literals where they parse, else strings.

  Raises:
    ValueError: an item without '=' or with an empty field name.
  """
  out = []
  for item in filter(None, (p.strip() for p in text.split(";"))):
    path, sep, value = item.partition("=")
    if not sep or not path.strip():
      raise ValueError(f"--set item {item!r}: expected field.path=value")
    try:
      parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      parsed = value.strip()
    out.append((path.strip(), parsed))
  return tuple(out)


def apply_overrides(config, overrides: Sequence[tuple[str, Any]]):
  """Sets each dotted field of `config`; raises naming a field that does not exist."""
  for path, value in overrides:
    *parents, leaf = path.split(".")
    node = config
    for i, part in enumerate(parents):
      if part not in node:
        raise ValueError(f"--set {path}: config has no field {'.'.join(parents[:i + 1])!r}")
      node = node[part]
    if leaf not in node:
      raise ValueError(f"--set {path}: no field {leaf!r} in "
                       f"{'.'.join(parents) or 'the config'}; it has {sorted(node.keys())}")
    try:
      node[leaf] = value
    except (TypeError, ValueError) as e:
      raise ValueError(f"--set {path}={value!r}: {e}") from None


def join_args(*args: str) -> str:
  """Comma-joins non-empty config argument strings (later ones override earlier)."""
  return ",".join(a for a in args if a)


def make_cells(config: str | None, sweep: str = "", variants: str = "", base: str = "",
               seeds: Sequence[int] = (), overrides: str = "") -> list[Cell]:
  """The cells of variants x grid x seeds, in table order.

  Args:
    config: default config file.
    sweep: the grid (`parse_sweep`).
    variants: the alternatives (`parse_variants`).
    base: arguments every cell starts from.
    seeds: seeds to repeat each cell with (empty: the config's seed).
    overrides: config fields set in every cell (`parse_overrides`).

  Returns:
    The cells; their names are unique.
  """
  axes = parse_sweep(sweep)
  sets = parse_overrides(overrides)
  alts = parse_variants(variants, config)
  many_variants = len(alts) > 1
  cells = []
  for (label, file, arg), point in itertools.product(
      alts, itertools.product(*[[(k, v) for v in vals] for k, vals in axes])):
    labels = ((("variant", label),) if many_variants else ()) + tuple(point)
    cell_arg = join_args(base, arg, *[f"{k}={v}" for k, v in point])
    for seed in (list(seeds) or [None]):
      cells.append(Cell(file, cell_arg, labels, seed, sets))
  names = [c.name for c in cells]
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise ValueError(f"the sweep produces the same cell twice: {dupes}")
  return cells


def load_config_fn(path: str) -> Callable[[str | None], Any]:
  """get_config of a config file, imported from its path."""
  if not os.path.isfile(path):
    raise ValueError(f"config file {path!r} does not exist")
  name = "_ablate_config_" + re.sub(r"\W", "_", os.path.abspath(path))
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path!r} defines no get_config(arg)")
  return module.get_config


def build_config(cell: Cell, loaders: dict[str, Callable]):
  """The cell's config (overrides and seed applied), locked like the entry point's."""
  if cell.config_file not in loaders:
    loaders[cell.config_file] = load_config_fn(cell.config_file)
  config = loaders[cell.config_file](cell.arg or None)
  apply_overrides(config, cell.overrides)
  if cell.seed is not None:
    config.seed = int(cell.seed)
  config.lock()
  return config


# ----------------------------------------------------------------------------- results

def _read_json(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


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
    if os.path.exists(os.path.join(path, RESULTS)):
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


# ----------------------------------------------------------------------------- running

def _split(text: str) -> list[str]:
  return [t.strip() for t in text.split(",") if t.strip()]


def _eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else (
      f"{seconds // 60}m{seconds % 60:02d}s")


def run_ablation(cells: Sequence[Cell], workdir: str, *, metrics: Sequence[str],
                 lower_is_better: Sequence[str] = (), train_fn: Callable | None = None,
                 dry_run: bool = False, stop_on_error: bool = False,
                 title: str = "", name: str = "ablation",
                 log: Callable[[str], None] = print) -> dict[str, str]:
  """Runs the cells that have no results yet and writes the tables.

  Args:
    cells: from `make_cells`.
    workdir: root folder; cell c runs in <workdir>/<c.name>.
    metrics: metric names / fnmatch patterns for the tables.
    lower_is_better: patterns of metrics where the minimum is best.
    train_fn: (config, workdir) -> results (default `train.train_and_evaluate`).
    dry_run: only report each cell's state.
    stop_on_error: re-raise the first failure instead of going on.
    title: heading of the Markdown table.
    name: table file names (<workdir>/<name>.md, .csv; cells.json likewise).
    log: where progress lines go.

  Returns:
    {cell name: "done" | "ran" | "failed" | "pending"}.

  Raises:
    ValueError: a cell's config does not load (checked for all cells before any runs).
  """
  loaders: dict[str, Callable] = {}
  configs = {}
  for cell in cells:
    try:
      configs[cell.name] = build_config(cell, loaders)
    except Exception as e:  # any config error: name the cell, stop before running
      raise ValueError(f"cell {cell.name!r} ({cell.config_file}:{cell.arg}): {e}") from e
  os.makedirs(workdir, exist_ok=True)
  atomic_write_json(os.path.join(workdir, name + ".cells.json"),
                    [{"name": c.name, "config": c.config_file, "arg": c.arg,
                      "seed": c.seed, "labels": dict(c.labels),
                      "set": {k: repr(v) for k, v in c.overrides}} for c in cells])
  status = {c.name: ("done" if os.path.exists(os.path.join(workdir, c.name, RESULTS))
                     else "pending") for c in cells}
  todo = [c for c in cells if status[c.name] == "pending"]
  log(f"{len(cells)} cells, {len(cells) - len(todo)} done, {len(todo)} to run "
      f"-> {workdir}")
  for c in cells:
    log(f"  [{status[c.name]:>7}] {c.name}")
  if dry_run:
    return status
  if train_fn is None:
    from dnh_jax import train  # pylint: disable=g-import-not-at-top
    train_fn = train.train_and_evaluate
  durations = []
  for n, cell in enumerate(todo):
    path = os.path.join(workdir, cell.name)
    eta = f", ETA {_eta(sum(durations) / len(durations) * (len(todo) - n))}" if durations \
        else ""
    log(f"[{n + 1}/{len(todo)}{eta}] {cell.config_file}:{cell.arg}"
        + (f" seed={cell.seed}" if cell.seed is not None else ""))
    t0 = time.time()
    try:
      train_fn(configs[cell.name], path)
      status[cell.name] = "ran"
      if os.path.exists(os.path.join(path, ERROR)):
        os.remove(os.path.join(path, ERROR))
    except Exception:  # pylint: disable=broad-except
      status[cell.name] = "failed"
      atomic_write_text(os.path.join(path, ERROR), traceback.format_exc())
      log(f"  FAILED, traceback in {os.path.join(path, ERROR)}")
      if stop_on_error:
        write_tables(cells, workdir, metrics, lower_is_better, title, name)
        raise
    durations.append(time.time() - t0)
    write_tables(cells, workdir, metrics, lower_is_better, title, name)
  table = write_tables(cells, workdir, metrics, lower_is_better, title, name)
  if not table.metric_columns:
    log(f"no metric matches {list(metrics)}; see a cell's results.json for the names")
  return status


def default_workdir(config: str | None, variants: str) -> str:
  """workdirs/ablate-<config stem> (or -<first variant's stem>)."""
  path = config or parse_variants(variants, None)[0][1]
  return os.path.join("workdirs", "ablate-" + os.path.splitext(os.path.basename(path))[0])


def main(argv):
  if not flags.FLAGS["verbosity"].present:  # progress lines are printed; library INFO is noise
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _CONFIG.value and not _VARIANTS.value:
    raise app.UsageError("give --config, or --variants naming config files")
  try:
    seeds = [int(s) for s in _split(_SEEDS.value)]
  except ValueError:
    raise app.UsageError(f"--seeds={_SEEDS.value!r}: expected integers like 0,1,2") from None
  try:
    cells = make_cells(_CONFIG.value, _SWEEP.value, _VARIANTS.value, _BASE.value, seeds,
                       _SET.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  workdir = _WORKDIR.value or default_workdir(_CONFIG.value, _VARIANTS.value)
  title = " ".join(a for a in sys.argv[1:] if not a.startswith("--workdir"))
  status = run_ablation(cells, workdir, metrics=_split(_METRICS.value),
                        lower_is_better=_split(_LOWER.value), dry_run=_DRY_RUN.value,
                        stop_on_error=_STOP_ON_ERROR.value, name=_NAME.value,
                        title=f"python -m dnh_jax.ablate {title}")
  if not _DRY_RUN.value:
    md = os.path.join(workdir, _NAME.value + ".md")
    with open(md) as f:
      print(f.read())
    print(f"Tables: {md}, {os.path.join(workdir, _NAME.value + '.csv')}")
  failed = [n for n, s in status.items() if s == "failed"]
  if failed:
    print(f"{len(failed)} cell(s) failed: {failed}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
