"""Device mesh, shardings, host batches -> global arrays, and multi-host start-up.

Data parallelism on one mesh axis named `data`. The mesh uses `AxisType.Auto`: pairwise
hashing losses compare every item of the global batch with every other, so the batch axis
must be free to be all-gathered by the compiler (Explicit axes reject that; DESIGN.md).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
# Set by the launchers in launch/: the only way a run becomes multi-process.
DISTRIBUTED_ENV = "DNH_DISTRIBUTED"


def maybe_initialize_distributed() -> bool:
  """Calls `jax.distributed.initialize()` iff the launcher asked for it.

  The launchers set DNH_DISTRIBUTED=1 (plus the coordinator address / process ids, or rely
  on SLURM / TPU auto-detection). Errors are never swallowed: an N-host job that failed to
  connect must not silently become N single-host jobs.

  Returns:
    True if the distributed runtime was initialised.
  """
  flag = os.environ.get(DISTRIBUTED_ENV, "")
  if flag.lower() not in ("1", "true", "yes"):
    return False
  kwargs: dict[str, Any] = {}
  if os.environ.get("DNH_COORDINATOR"):
    kwargs["coordinator_address"] = os.environ["DNH_COORDINATOR"]
    kwargs["num_processes"] = int(os.environ["DNH_NUM_PROCESSES"])
    kwargs["process_id"] = int(os.environ["DNH_PROCESS_ID"])
  if os.environ.get("DNH_LOCAL_DEVICES"):
    kwargs["local_device_ids"] = [int(i) for i in os.environ["DNH_LOCAL_DEVICES"].split(",")]
  if jax.config.jax_platforms in (None, "", "cpu") and "cpu" in (
      os.environ.get("JAX_PLATFORMS", "cpu") or "cpu"):
    # CPU collectives across processes need an implementation (gloo ships with jaxlib).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed initialised: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
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
