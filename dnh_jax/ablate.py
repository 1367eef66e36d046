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
typo fails in a second, not after an hour. A cell whose workdir holds a readable
results.json is done and is not run again (a corrupt one is run again); a cell
interrupted mid-training resumes from its checkpoints (the trainer does that). A failed
cell is recorded (error.txt in its workdir) and the others go on; the exit status is 1
if any failed. The tables are rewritten after every cell: <workdir>/ablation.md (best
value per column in bold) and <workdir>/ablation.csv (raw numbers and a `best` column
naming the metrics a row is best at); `--name` renames them,
so several sweeps can share one workdir and reuse each other's finished cells.

Metrics (`--metrics`, comma-separated, fnmatch patterns allowed) are read from each
cell's results.json; a name absent there is looked up in the last row of the cell's
logs/metrics.jsonl holding it, so training-time metrics such as `train/dist_type1` can be
tabulated too. Higher is better, except for metrics matching `--lower_is_better`.

Where the parts live: the cells (`dnh_jax.report.sweep`), the tables
(`dnh_jax.report.ablation_tables`); this module holds the run loop and the command line.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging

from dnh_jax.report.ablation_tables import (RESULTS, Table, cell_metrics, collect,  # noqa: F401
                                            finished, to_csv, to_markdown, write_tables)
from dnh_jax.report.sweep import (Cell, build_config, default_workdir,  # noqa: F401
                                  make_cells, parse_overrides, parse_sweep, parse_variants)
from dnh_jax.utils import atomic_write_json, atomic_write_text, format_eta

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

ERROR = "error.txt"


# ----------------------------------------------------------------------------- cells


# ----------------------------------------------------------------------------- running

def _split(text: str) -> list[str]:
  return [t.strip() for t in text.split(",") if t.strip()]


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
  status = {c.name: ("done" if finished(os.path.join(workdir, c.name)) else "pending")
            for c in cells}
  todo = [c for c in cells if status[c.name] == "pending"]
  log(f"{len(cells)} cells, {len(cells) - len(todo)} done, {len(todo)} to run "
      f"-> {workdir}")
  for c in cells:
    log(f"  [{status[c.name]:>7}] {c.name}")
  if dry_run:
    return status
  if train_fn is None:
    import functools  # pylint: disable=g-import-not-at-top
    from dnh_jax import train  # pylint: disable=g-import-not-at-top
    from dnh_jax.report import run_report  # pylint: disable=g-import-not-at-top
    train_fn = functools.partial(train.train_and_evaluate,
                                 after_run=run_report.write_after_run)
  durations = []
  for n, cell in enumerate(todo):
    path = os.path.join(workdir, cell.name)
    eta = f", ETA {format_eta(sum(durations) / len(durations) * (len(todo) - n))}" if durations \
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
