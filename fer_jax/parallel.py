"""Devices, processes and the data-parallel mesh.

One mesh axis, `data`, spans every device of every process. Steps are written per device (pmap
semantics: `lax.pmean` over `data`) and mapped with `jax.shard_map` under `jax.jit`. The train
state is replicated; a batch is split along its first axis, each process contributing the rows
it read (`jax.make_array_from_process_local_data`), so Orbax saves global arrays on any number
of hosts. A run folder's lock is taken by process 0 for all (`acquire_everywhere`).
"""

from __future__ import annotations

import contextlib
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

from fer_jax import errors
from fer_jax import files

DATA_AXIS = "data"
REPLICATED = P()  # an argument or result every device holds whole (the state, the variables)
SHARDED = P(DATA_AXIS)  # one split along its first axis over the devices (a batch)

def initialize(mh: ml_collections.ConfigDict) -> None:
  """Starts `jax.distributed` when the config (or the cluster) asks for several processes.

  - `coordinator_address` set: explicit (address, num_processes, process_id);
  - `auto`: `jax.distributed.initialize()` reads SLURM, Open MPI or TPU pod environments.
  Local CPU processes use gloo collectives.
  """
  if jax.distributed.is_initialized():
    return
  if mh.coordinator_address:
    if mh.num_processes < 1 or not 0 <= mh.process_id < mh.num_processes:
      raise ValueError(f"config.multihost: process_id {mh.process_id} is not in "
                       f"[0, num_processes={mh.num_processes})")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=mh.coordinator_address,
                               num_processes=mh.num_processes, process_id=mh.process_id)
  elif mh.auto:
    jax.distributed.initialize()
  else:
    return
  logging.info("jax.distributed: process %d of %d, %d local of %d devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh named `data` over `devices` (default: every device of every process)."""
  devices = list(devices) if devices is not None else jax.devices()
  return jax.sharding.Mesh(np.asarray(devices), (DATA_AXIS,))


def data_parallel(step, mesh, in_specs: tuple, out_specs, donate_argnums: tuple[int, ...] = ()):
  """jit(shard_map(step)): the one way fer_jax maps a per-device step onto the mesh. `step`
  sees its device's share of each SHARDED argument and every REPLICATED one whole, and
  averages over DATA_AXIS itself (`lax.pmean`); `in_specs`/`out_specs` give each argument's and
  result's spec (REPLICATED, SHARDED, or a PartitionSpec of their own)."""
  mapped = jax.shard_map(step, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                         check_vma=False)
  return jax.jit(mapped, donate_argnums=donate_argnums)


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def global_batch(local: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """This process's rows -> one global array per key, split along the data axis."""
  sharding = data_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}


def to_host(tree: Any) -> Any:
  """Global arrays -> numpy on every process (all rows, gathered across processes)."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def is_main() -> bool:
  return jax.process_index() == 0


def sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def sum_over_processes(values) -> np.ndarray:
  """The element-wise sum of `values` over every process (a collective: call it on all)."""
  values = np.asarray(values)
  if jax.process_count() == 1:
    return values
  return np.asarray(multihost_utils.process_allgather(values)).sum(axis=0)


def any_process(flag: bool) -> bool:
  """True on every process if `flag` is True on any (a collective: call it on all)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(np.max(multihost_utils.process_allgather(np.int32(flag))))


def acquire_everywhere(lock: files.RunLock) -> contextlib.AbstractContextManager:
  """`lock` (a run folder's) taken by process 0 and, where it is refused or fails, the error
  raised on every process (a collective: call it on all), so that none waits for the others;
  on the other processes a no-op stands in for it."""
  refused = None
  if is_main():
    try:
      lock.acquire()
    except (errors.RunLockedError, OSError) as e:
      refused = e
  if any_process(refused is not None):
    if isinstance(refused, OSError):
      raise RuntimeError(f"{lock.folder}: cannot take its lock: {refused}") from None
    raise refused or errors.RunLockedError(f"{lock.folder} is in use by another run (its lock "
                                          "is held; process 0 names the holder)")
  return lock if is_main() else contextlib.nullcontext()
