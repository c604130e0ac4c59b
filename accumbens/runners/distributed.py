"""Several JAX processes (hosts) as one: `jax.distributed` set-up and host-side array helpers.

The compiled runner shards its seed axis over `jax.devices()`, which, after
`jax.distributed.initialize`, lists the devices of every process. Each process runs the same
program on its own devices (its share of the seeds); the helpers here move the host-side data
across processes:

  initialize()        `jax.distributed.initialize` from the environment, before any JAX computation:
                        JAX_COORDINATOR_ADDRESS  host:port of process 0's coordinator (any free port)
                        JAX_NUM_PROCESSES        how many processes take part
                        JAX_PROCESS_ID           this process's index, 0 .. JAX_NUM_PROCESSES-1
                      (unset ones are auto-detected by JAX on SLURM, Open MPI, Kubernetes, TPU pods);
                      on CPU it selects gloo collectives.
  global_array()      a global array sharded as asked, from the full host value every process holds
                      (`jax.make_array_from_callback`: each process fills its own shards).
  to_host()           a global array's full value on every process (`process_allgather`; a plain
                      `device_get` when all of it is addressable here).
  broadcast_from_0()  process 0's host values on every process (`broadcast_one_to_all`).

Who writes what (the compiled runner): process 0 alone writes `config.gin`, the per-seed logs and
the checkpoints, which hold every seed (gathered to process 0 at checkpoint time); on resume,
process 0 reads the checkpoint and broadcasts it. So `base_dir` need only exist on the first host
(a shared file system works too), the layout is the one-process layout (`accumbens.aggregate`,
`accumbens.plot` and the sweep's completion check read it unchanged), and a run may be resumed
with a different number of processes or devices. The cost: a checkpoint passes every seed's state
(replay included) through process 0's memory.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import jax
import numpy as np


def is_initialized() -> bool:
    """Whether `jax.distributed.initialize` has run in this process."""
    from jax._src import distributed as _distributed  # noqa: PLC0415 - JAX keeps no public flag

    return _distributed.global_state.client is not None


def initialize(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    initialization_timeout: int = 300,
) -> None:
    """Joins this process to the others (`jax.distributed.initialize`); a no-op if already joined.

    Arguments left None come from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID,
    else from JAX's cluster auto-detection. Must run before anything computes with JAX.

    Raises:
      ValueError: a variable is malformed, or JAX cannot find the coordinator or process count.
    """
    if is_initialized():
        return

    def env_int(name: str) -> Optional[int]:
        value = os.environ.get(name)
        if value in (None, ""):
            return None
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {value!r}") from None

    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num_processes = num_processes if num_processes is not None else env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else env_int("JAX_PROCESS_ID")
    platforms = os.environ.get("JAX_PLATFORMS") or str(getattr(jax.config, "jax_platforms", None) or "")
    if platforms.split(",")[0] == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=initialization_timeout,
        )
    except (ValueError, RuntimeError) as e:
        raise ValueError(
            f"jax.distributed.initialize failed ({e}). Set JAX_COORDINATOR_ADDRESS=host:port (process 0's "
            "address, a free port), JAX_NUM_PROCESSES and JAX_PROCESS_ID on every process, or run under a "
            "cluster manager JAX detects (SLURM, Open MPI)."
        ) from e


def is_main_process() -> bool:
    """Process 0: the one that writes files."""
    return jax.process_index() == 0


def global_array(value: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
    """A global array with `sharding` from `value`, the full array (the same on every process)."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def global_tree(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """`global_array` over a pytree of full host arrays."""
    return jax.tree.map(lambda x: global_array(x, sharding), tree)


def to_host(tree: Any) -> Any:
    """The full values of a pytree of (possibly multi-process) arrays, as NumPy, on every process.

    A collective when any leaf spans several processes: every process must call it.
    """
    leaves = jax.tree.leaves(tree)
    if all(getattr(x, "is_fully_addressable", True) for x in leaves):
        return jax.tree.map(np.asarray, jax.device_get(tree))
    from jax.experimental import multihost_utils  # noqa: PLC0415

    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def broadcast_from_0(tree: Any) -> Any:
    """Process 0's values of a pytree of host arrays on every process (others pass same-shaped
    placeholders). A collective in a multi-process run; the identity in a single process."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils  # noqa: PLC0415

    return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(tree))


__all__ = ["broadcast_from_0", "global_array", "global_tree", "initialize", "is_initialized", "is_main_process", "to_host"]
