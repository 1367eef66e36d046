"""The load guard every benchmark runs under: timings taken beside other work are not results.

FAISS's and PyTorch's thread pools lose far more than XLA when other processes share the
cores, so a ratio measured on a loaded machine flatters us (figures taken at load 3-17 were
5.1x FAISS and 2x PyTorch; on a quiet machine they were 1.06x and 0.65-0.86x). Each
benchmark therefore

* prints the load average before and after,
* refuses to run when the 1-minute load is above MAX_LOAD, unless `--allow-load` is given,
* marks every figure "[UNDER LOAD]" when it ran loaded (allowed, or the load rose during
  the run above MAX_LOAD), so such a figure is never mistaken for a result.

Usage in a benchmark::

    parser = argparse.ArgumentParser(...)
    load_guard.add_flag(parser)
    args = parser.parse_args(argv)
    guard = load_guard.start(args)        # exits with status 1 when refused
    ... print(f"... {value}{guard.mark}") ...
    # guard.finish() runs at exit: the load after, and a warning if it rose.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import os
import sys

MAX_LOAD = 1.5


def add_flag(parser: argparse.ArgumentParser) -> None:
  """Adds --allow-load to a benchmark's argument parser."""
  parser.add_argument("--allow-load", action="store_true",
                      help=f"run even when the 1-minute load average is above {MAX_LOAD}; "
                           "the figures are then marked [UNDER LOAD]")


def _fmt(load) -> str:
  return " ".join(f"{x:.2f}" for x in load)


@dataclasses.dataclass
class Guard:
  """The state of one guarded run: `mark` is appended to every printed figure."""

  before: tuple[float, float, float]
  mark: str
  finished: bool = False

  def finish(self) -> bool:
    """Prints the load after the run (once); returns whether the run was quiet throughout."""
    if self.finished:
      return not self.mark
    self.finished = True
    after = os.getloadavg()
    print(f"load average after: {_fmt(after)}", flush=True)
    # The 1-minute average lags: the benchmark's own threads raise it by up to the number
    # of threads it runs, so only a rise above MAX_LOAD + own threads says someone else ran.
    quiet = not self.mark and after[0] <= MAX_LOAD + (os.cpu_count() or 1)
    if not quiet and not self.mark:
      print(f"WARNING: the load rose to {after[0]:.2f} during the run: the figures above are "
            "taken under load [UNDER LOAD], not results", flush=True)
    return quiet


def start(args: argparse.Namespace, before: tuple[float, float, float] | None = None
          ) -> Guard:
  """Prints the load before the run; exits (status 1) when it is too high and
  --allow-load was not given.

  `before`: a load read earlier, judged instead of the current one - a driver that runs a
  benchmark's parts one process after another (bench/gpu.sh) reads it once, before the
  first part, whose own threads would otherwise count against the next."""
  if before is None:
    before = os.getloadavg()
    print(f"load average before: {_fmt(before)} (guard: 1-minute load <= {MAX_LOAD})",
          flush=True)
  else:
    print(f"load average before: {_fmt(before)} (read before the first part; now "
          f"{_fmt(os.getloadavg())}) (guard: 1-minute load <= {MAX_LOAD})", flush=True)
  loaded = before[0] > MAX_LOAD
  if loaded and not getattr(args, "allow_load", False):
    print(f"refusing to run: 1-minute load {before[0]:.2f} > {MAX_LOAD}; other processes "
          "would distort the timings (rerun on a quiet machine, or pass --allow-load to "
          "get figures marked [UNDER LOAD])", flush=True)
    sys.exit(1)
  guard = Guard(before=before, mark="  [UNDER LOAD]" if loaded else "")
  if loaded:
    print("WARNING: --allow-load: every figure below is taken UNDER LOAD, not a result",
          flush=True)
  atexit.register(guard.finish)   # the load after, however the benchmark ends
  return guard
