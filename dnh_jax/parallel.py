"""Device mesh, shardings, host batches -> global arrays, and multi-host start-up.

Data parallelism on one mesh axis named `data`. The mesh uses `AxisType.Auto`: pairwise
hashing losses compare every item of the global batch with every other, so the batch axis
must be free to be all-gathered by the compiler (Explicit axes reject that: see JAX's
explicit-sharding documentation).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
# Set by the launchers in launch/: the only way a run becomes multi-process.
DISTRIBUTED_ENV = "DNH_DISTRIBUTED"


def _env_int(name: str) -> int:
  text = os.environ.get(name, "")
  try:
    return int(text)
  except ValueError:
    raise ValueError(f"{DISTRIBUTED_ENV}=1 and DNH_COORDINATOR are set, so {name} must be an "
                     f"integer, got {text!r}") from None


def _exit_at_once_on_uncaught_exception():
  """Makes an uncaught exception end this process immediately (status 1).

  Otherwise Python's exit runs `jax.distributed.shutdown()`, whose barrier waits for every
  other process - which are themselves blocked in a collective with this one - and the
  job hangs until a timeout instead of failing. Exiting at once lets the launcher (or
  SLURM's --kill-on-bad-exit) stop the whole job.
  """
  previous = sys.excepthook

  def hook(exc_type, exc, tb):
    previous(exc_type, exc, tb)
    print(f"process {jax.process_index()}: uncaught {exc_type.__name__}; exiting without "
          "the distributed shutdown barrier", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)

  sys.excepthook = hook


def maybe_initialize_distributed() -> bool:
  """Calls `jax.distributed.initialize()` iff the launcher asked for it.

  The launchers in launch/ set DNH_DISTRIBUTED=1 and either
    DNH_COORDINATOR=host:port, DNH_NUM_PROCESSES, DNH_PROCESS_ID (launch/local.sh), or
    nothing more, leaving JAX to auto-detect SLURM / Cloud TPU (slurm.sh, tpu_vm.sh);
  optionally DNH_LOCAL_DEVICES=0,1,... restricts this process to some local accelerators.
  Errors are never swallowed: an N-host job that failed to connect must not silently
  become N single-host jobs. Call it before anything touches a JAX backend.

  Returns:
    True if the distributed runtime was initialised, False when DNH_DISTRIBUTED is unset.

  Raises:
    ValueError: DNH_DISTRIBUTED has an unknown value, or the coordinator variables are
      incomplete or malformed.
    RuntimeError: the runtime came up with a different process count than requested.
  """
  flag = os.environ.get(DISTRIBUTED_ENV, "").strip().lower()
  if flag in ("", "0", "false", "no"):
    return False
  if flag not in ("1", "true", "yes"):
    raise ValueError(f"{DISTRIBUTED_ENV}={os.environ[DISTRIBUTED_ENV]!r}; expected 1 (start "
                     "the multi-process runtime) or 0 / unset (single process)")
  kwargs: dict[str, Any] = {}
  if os.environ.get("DNH_COORDINATOR"):
    missing = [n for n in ("DNH_NUM_PROCESSES", "DNH_PROCESS_ID") if not os.environ.get(n)]
    if missing:
      raise ValueError(f"DNH_COORDINATOR is set but {missing} are not; a launcher must set "
                       "DNH_COORDINATOR, DNH_NUM_PROCESSES and DNH_PROCESS_ID together")
    kwargs["coordinator_address"] = os.environ["DNH_COORDINATOR"]
    kwargs["num_processes"] = _env_int("DNH_NUM_PROCESSES")
    kwargs["process_id"] = _env_int("DNH_PROCESS_ID")
    if not 0 <= kwargs["process_id"] < kwargs["num_processes"]:
      raise ValueError(f"DNH_PROCESS_ID={kwargs['process_id']} must be in "
                       f"[0, DNH_NUM_PROCESSES={kwargs['num_processes']})")
  if os.environ.get("DNH_LOCAL_DEVICES"):
    text = os.environ["DNH_LOCAL_DEVICES"]
    try:
      kwargs["local_device_ids"] = [int(i) for i in text.split(",")]
    except ValueError:
      raise ValueError(f"DNH_LOCAL_DEVICES={text!r}; expected comma-separated device "
                       "numbers such as 0,1,2,3") from None
  # CPU collectives across processes need an implementation (gloo ships with jaxlib); the
  # setting only affects CPU devices, so it is harmless on GPU/TPU hosts.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  # Without DNH_COORDINATOR, JAX auto-detects SLURM / Cloud TPU / Open MPI and raises if
  # it finds none of them.
  jax.distributed.initialize(**kwargs)
  if "num_processes" in kwargs and jax.process_count() != kwargs["num_processes"]:
    raise RuntimeError(f"DNH_NUM_PROCESSES={kwargs['num_processes']} but the runtime has "
                       f"{jax.process_count()} processes")
  _exit_at_once_on_uncaught_exception()
  # Printed by every process (not logged: INFO is off by default), so each task's log
  # shows it joined the runtime.
  print(f"jax.distributed initialised: process {jax.process_index()} of "
        f"{jax.process_count()}, {jax.local_device_count()} local / {jax.device_count()} "
        "global devices", file=sys.stderr, flush=True)
  return True


def make_mesh(num_data: int = -1) -> Mesh:
  """A 1-D mesh over `num_data` devices (-1: all devices of all processes).

  Args:
    num_data: devices on the `data` axis.

  Returns:
    Mesh with axis `data`, Auto axis type.
  """
  devices = jax.devices()
  n = len(devices) if num_data in (-1, 0, None) else int(num_data)
  if n > len(devices) or n < 1:
    raise ValueError(f"config.mesh.data={num_data} but {len(devices)} devices are available")
  return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                       devices=devices[:n])


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`, the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Host-local numpy batch -> global jax.Arrays sharded on the batch axis.

  Args:
    local_batch: pytree of numpy arrays [B_local, ...]; each process passes its own slice
      of the global batch (B_global = B_local * process_count).

  Returns:
    The same pytree of jax.Arrays [B_global, ...].
  """
  sharding = data_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def check_batch_size(global_batch_size: int, mesh: Mesh, flag: str = "train.batch_size"):
  n = mesh.devices.size
  if global_batch_size % n or global_batch_size % jax.process_count():
    raise ValueError(f"{flag}={global_batch_size} must be divisible by the {n} devices of "
                     f"the mesh and the {jax.process_count()} processes")
