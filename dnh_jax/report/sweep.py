"""Ablation sweeps: the cells of a grid x variants x seeds, and each cell's config.

A *cell* is one config argument string, `get_config(arg)` of a config file, with optional
field overrides and a seed; `make_cells` expands the command line's `--sweep`,
`--variants`, `--base`, `--seeds` and `--set` (see `dnh_jax.ablate`) into cells with unique,
filesystem-safe names, and `build_config` loads a cell's config locked, as the entry point
does. Nothing here trains or reads results (`report/ablation_tables.py` reads them).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.util
import itertools
import os
import re
from typing import Any, Callable, Sequence


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


def default_workdir(config: str | None, variants: str) -> str:
  """workdirs/ablate-<config stem> (or -<first variant's stem>)."""
  path = config or parse_variants(variants, None)[0][1]
  return os.path.join("workdirs", "ablate-" + os.path.splitext(os.path.basename(path))[0])
