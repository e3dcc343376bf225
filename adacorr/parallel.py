"""Data parallelism over every device of every host, with `jax.jit` and `NamedSharding`.

One 1-D mesh with axis `"data"` spans all devices (`jax.devices()`, i.e. all hosts).
Batches are sharded along their leading axis over that axis; parameters and optimizer
state are replicated. Under `jax.jit`, XLA inserts the cross-device reductions, so a
mean over the batch axis (the loss, BatchNorm statistics) is a mean over the *global*
batch: an 8-device step computes the same function as a 1-device step.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D `Mesh` with axis `"data"` over `devices` (default: all devices of all hosts)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding that splits the leading (batch) axis over the mesh's data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding that keeps a full copy on every device."""
  return NamedSharding(mesh, P())


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """Rows of a global batch that this host reads; checks divisibility.

  Raises:
    ValueError: if `global_batch_size` is not a positive multiple of the number of
      devices in `mesh`.
  """
  num_devices = mesh.devices.size
  if global_batch_size <= 0 or global_batch_size % num_devices:
    raise ValueError(
        f"global_batch_size={global_batch_size} must be a positive multiple of the "
        f"number of devices ({num_devices}).")
  return global_batch_size // jax.process_count()


def host_local_slice(global_batch_size: int, mesh: Mesh) -> slice:
  """The rows `[start, stop)` of a global batch that this host (process) provides."""
  local = local_batch_size(global_batch_size, mesh)
  start = jax.process_index() * local
  return slice(start, start + local)


def shard_batch(tree: Any, mesh: Mesh) -> Any:
  """Assembles host-local batch rows (numpy, leading axis) into global sharded arrays.

  With one host this is a sharded `device_put`; with several, each host passes its
  own rows (see `host_local_slice`) and the result is one global array.
  """
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a pytree, identical on every host, fully replicated on every device."""
  sharding = replicated_sharding(mesh)
  return jax.device_put(tree, sharding)


def initialize_distributed() -> None:
  """`jax.distributed.initialize()` for a multi-process run; call before jax runs anything.

  On Cloud TPU and under SLURM (and other clusters jax detects) it needs nothing; elsewhere
  set `JAX_COORDINATOR_ADDRESS=host:port` (read by jax), `JAX_NUM_PROCESSES` and
  `JAX_PROCESS_ID` (read here) in every process.
  """
  kwargs = {}
  for name, key in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
    if os.environ.get(name):
      try:
        kwargs[key] = int(os.environ[name])
      except ValueError as e:
        raise ValueError(f"{name}={os.environ[name]!r} must be an integer.") from e
  jax.distributed.initialize(**kwargs)
