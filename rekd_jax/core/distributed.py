"""Multi-host setup: jax.distributed.initialize from config.distributed, before any JAX call.

config.distributed: enabled (bool), coordinator_address ('host:port'; '' lets JAX detect a
cluster such as SLURM or Cloud TPU), num_processes, process_id, cpu_collectives ('gloo': the CPU
backend needs it for cross-process collectives; ignored on GPU/TPU).
Each process then feeds its own local devices with its shard of every global batch; pmap's axis
spans all devices of all processes.
"""

from __future__ import annotations

import jax
import ml_collections


def initialize(dist: ml_collections.ConfigDict) -> None:
    """Connects this process to the others when dist.enabled (idempotent)."""
    if not dist.enabled:
        return
    if jax.distributed.is_initialized():
        return
    if dist.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", dist.cpu_collectives)
    if dist.coordinator_address:
        jax.distributed.initialize(
            coordinator_address=dist.coordinator_address,
            num_processes=dist.num_processes,
            process_id=dist.process_id,
        )
    else:
        jax.distributed.initialize()


def is_primary() -> bool:
    return jax.process_index() == 0
