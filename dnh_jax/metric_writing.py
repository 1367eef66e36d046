"""Metric writing: TensorBoard event files plus a JSON-lines log, on process 0 only.

clu's `metric_writers` package imports TensorFlow at import time (clu 0.0.12), and this
project must run without TensorFlow, so this module provides the same small interface
(`write_scalars`, `flush`, `close`) on top of tensorboardX for the event files. Every
other process gets a writer that does nothing, so call sites need no checks. Each
`write_scalars` call is flushed: a killed job keeps every row it logged.

An undefined metric (NaN or Inf: e.g. a multi-label metric over a split without a positive
label) is not written to the event file - TensorBoard cannot plot it and tensorboardX
warns once per value - and is `null` in metrics.jsonl, so the JSON stays valid.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np


class MetricWriter:
  """Writes scalars to `<logdir>/metrics.jsonl` and TensorBoard event files."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._tb = SummaryWriter(logdir)
    self._jsonl = open(os.path.join(logdir, "metrics.jsonl"), "a")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    """Args: step: the training step; scalars: name -> scalar (python or 0-d array)."""
    row = {"step": int(step)}
    for name, value in scalars.items():
      value = float(np.asarray(value))
      if not np.isfinite(value):
        row[name] = None   # undefined: skipped in the event file (module docstring)
        continue
      row[name] = value
      self._tb.add_scalar(name, value, int(step))
    self._jsonl.write(json.dumps(row) + "\n")
    self.flush()  # rows are written every log_every steps: flushing each costs nothing

  def flush(self):
    self._tb.flush()
    self._jsonl.flush()

  def close(self):
    self.flush()
    self._tb.close()
    self._jsonl.close()


class _NullWriter:
  def write_scalars(self, step, scalars):
    del step, scalars

  def flush(self):
    pass

  def close(self):
    pass


def create_writer(logdir: str):
  """The writer for this process: a real one on process 0, a no-op elsewhere."""
  if jax.process_index() == 0:
    return MetricWriter(logdir)
  return _NullWriter()
