"""Orbax checkpoints: the last N training states plus the best one by a validation metric.

Two `orbax.checkpoint.CheckpointManager`s under `<workdir>/checkpoints/`:
  last/  keep-last-N, written every `train.checkpoint_every` steps and at the end;
  best/  keep-1, selected by `train.best_metric` (a validation metric, never test), the
         highest or, with `train.best_mode="min"`, the lowest.
All processes call save/restore together (Orbax coordinates multi-host writes).

A step that cannot be restored (a truncated or damaged file: Orbax and TensorStore give
pages of output) is named in one line, moved aside to `<workdir>/checkpoints/corrupt/`,
and the previous step is tried, with a warning (`restore_last_good`).
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp


BEST_MODES = ("max", "min")


def check_best_mode(best_mode: str) -> str:
  """Raises a ValueError listing the valid modes unless `best_mode` is one."""
  if best_mode not in BEST_MODES:
    raise ValueError(f"train.best_mode={best_mode!r}; choose one of {list(BEST_MODES)}")
  return best_mode


class CorruptCheckpointError(RuntimeError):
  """No step of a workdir's checkpoints can be restored."""


class Interrupted(KeyboardInterrupt):
  """Ctrl-C during training, raised after pending checkpoint writes have finished."""

  def __init__(self, step: int | None):
    super().__init__(step)
    self.step = step

  def __str__(self) -> str:
    if self.step is None:
      return "interrupted before the first checkpoint; rerun to start again"
    return f"interrupted; the checkpoint of step {self.step} is safe; rerun to resume"


class Checkpoints:
  """The pair of managers of one workdir.

  Args:
    directory: `<workdir>/checkpoints`.
    keep: how many recent states `last/` keeps.
    best_metric: the metric name used to select `best/`.
    best_mode: "max" (higher is better) or "min" (lower is better, e.g. a loss).
  """

  def __init__(self, directory: str, *, keep: int, best_metric: str, best_mode: str = "max"):
    check_best_mode(best_mode)
    directory = os.path.abspath(directory)
    self._directory = directory
    self.best_metric = best_metric
    self._last = ocp.CheckpointManager(
        os.path.join(directory, "last"),
        options=ocp.CheckpointManagerOptions(max_to_keep=max(1, keep), create=True))
    self._best = ocp.CheckpointManager(
        os.path.join(directory, "best"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, best_fn=lambda m: m[best_metric], best_mode=best_mode,
            keep_checkpoints_without_metrics=False))

  def latest_step(self) -> int | None:
    return self._last.latest_step()

  def best_step(self) -> int | None:
    return self._best.best_step()

  def save_last(self, step: int, state: Any):
    self._best.wait_until_finished()  # one manager saving at a time: see save_best
    self._last.save(step, args=ocp.args.StandardSave(state))

  def save_best(self, step: int, state: Any, metrics: dict[str, float]):
    """Offers `state` as a best candidate; Orbax keeps it only if it beats the kept one."""
    if self.best_metric not in metrics:
      raise KeyError(f"train.best_metric={self.best_metric!r} is not among the validation "
                     f"metrics {sorted(metrics)}")
    # The two managers' multi-host save trackers synchronise on the same barrier name, so
    # a save starting while the other manager's async save is still finishing fails on
    # several processes with "Barrier ThreadSaveMultiHostValueHolder:set_value_start is
    # already ongoing" (seen in CI). Saves are therefore serialised across the managers.
    self._last.wait_until_finished()
    self._best.save(step, args=ocp.args.StandardSave(state),
                    metrics={self.best_metric: float(metrics[self.best_metric])})

  def restore_last(self, abstract_state: Any, step: int | None = None) -> Any:
    step = self._last.latest_step() if step is None else step
    return self._last.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def restore_last_good(self, abstract_state: Any, log: Callable[[str], None] = print):
    """The newest restorable state of `last/`, or None when there is no checkpoint.

    A step that fails to restore is moved to `<checkpoints>/corrupt/<step>.<time>` (so
    that the run can save that step again) and the previous one is tried, with a warning.

    Raises:
      CorruptCheckpointError: one line, when no step of `last/` can be restored.
    """
    tried = []
    for step in sorted(self._last.all_steps(), reverse=True):
      try:
        return self._last.restore(step, args=ocp.args.StandardRestore(abstract_state))
      except Exception as e:   # pylint: disable=broad-except  (Orbax/TensorStore raise many)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        moved = self._quarantine(step)
        tried.append(step)
        log(f"Warning: checkpoint step {step} in {self._directory}/last is unreadable "
            f"({type(e).__name__}: {first}); moved it to {moved}; trying the previous step")
    if tried:
      raise CorruptCheckpointError(
          f"no checkpoint in {self._directory}/last can be restored (steps {tried} are "
          f"corrupt and were moved to {self._directory}/corrupt); delete the workdir to "
          "start over")
    return None

  def _quarantine(self, step: int) -> str:
    source = os.path.join(self._directory, "last", str(step))
    target = os.path.join(self._directory, "corrupt", f"{step}.{int(time.time())}")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.exists(source):
      shutil.move(source, target)
    self._last.reload()
    return target

  def restore_best(self, abstract_state: Any) -> Any:
    return self._best.restore(self._best.best_step(),
                              args=ocp.args.StandardRestore(abstract_state))

  def wait(self):
    self._last.wait_until_finished()
    self._best.wait_until_finished()

  def close(self):
    self._last.close()
    self._best.close()


def model_variables(state: Any) -> dict:
  """The model's Flax variables of a train state ({"params", "batch_stats" if any})."""
  variables = {"params": state["params"]["model"]}
  if jax.tree.leaves(state.get("batch_stats") or {}):
    variables["batch_stats"] = state["batch_stats"]
  return variables


def restore_best_variables(workdir: str) -> tuple[int, dict]:
  """(step, model variables) of a finished run's best checkpoint, as host arrays.

  For tools reading a run afterwards (reports): no train state or model is needed.
  """
  best = os.path.join(os.path.abspath(workdir), "checkpoints", "best")
  steps = [int(s) for s in os.listdir(best) if s.isdigit()] if os.path.isdir(best) else []
  if not steps:
    raise FileNotFoundError(f"{best} holds no checkpoint; is {workdir} a finished run?")
  step = max(steps)
  state = ocp.StandardCheckpointer().restore(os.path.join(best, str(step), "default"))
  return step, model_variables(state)


def abstract(state: Any) -> Any:
  """ShapeDtypeStructs with shardings of a live state (the restore target)."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
