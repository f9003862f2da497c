"""Small pieces shared by the method modules: cross-device reductions, the contrastive task's
monitors and config checks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from rekd_jax.methods import losses


def global_mean(x: jax.Array, axis_name: str | None) -> jax.Array:
    """Mean over devices of a per-device scalar (identity on one un-pmapped device)."""
    return x if axis_name is None else jax.lax.pmean(x, axis_name)


def contrast_metrics(
    q: jax.Array, k: jax.Array, queue_k: jax.Array, axis_name: str | None
) -> dict[str, jax.Array]:
    """Monitors of instance discrimination over the global batch: mean q.k, and the fraction of
    queries whose own key beats every queue entry (top-1 accuracy of the contrastive task)."""
    logits = losses.contrast_logits(q, k, queue_k, 1.0)
    accuracy = jnp.mean((jnp.argmax(logits, axis=1) == 0).astype(jnp.float32))
    return {
        "positive_similarity": global_mean(jnp.mean(logits[:, 0]), axis_name),
        "contrast_accuracy": global_mean(accuracy, axis_name),
    }


def replicated_rng(rng: jax.Array, axis_name: str | None) -> jax.Array:
    """The first device's key on every device, so state updates drawn from it stay replicated.

    Works for raw uint32 keys and typed key arrays alike.
    """
    if axis_name is None:
        return rng
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        data = jax.lax.all_gather(jax.random.key_data(rng), axis_name)[0]
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(rng))
    return jax.lax.all_gather(rng, axis_name)[0]


def local_rows(x_global: jax.Array, num_local: int, axis_name: str | None) -> jax.Array:
    """This device's rows of a device-major global batch (the inverse of `queue.global_batch`)."""
    if axis_name is None:
        return x_global
    start = jax.lax.axis_index(axis_name) * num_local
    return jax.lax.dynamic_slice_in_dim(x_global, start, num_local, axis=0)


def check_fields(
    cfg: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict, method: str
) -> None:
    """The config block must have exactly the fields of the method's default_config()."""
    unknown = sorted(set(cfg.keys()) - set(defaults.keys()))
    missing = sorted(set(defaults.keys()) - set(cfg.keys()))
    if unknown:
        raise ValueError(
            f"{method} config: unknown field(s) {unknown}; the fields are "
            f"{sorted(defaults.keys())} (check the spelling)."
        )
    if missing:
        raise ValueError(
            f"{method} config: missing field(s) {missing}; start from "
            f"rekd_jax.methods.{method}.default_config()."
        )


def check_positive(cfg: ml_collections.ConfigDict, field: str, method: str) -> None:
    if not cfg[field] > 0:
        raise ValueError(f"{method} config: {field} must be > 0; got {cfg[field]}.")


def check_choice(
    cfg: ml_collections.ConfigDict, field: str, choices: Iterable[Any], method: str
) -> None:
    choices = tuple(choices)
    if cfg[field] not in choices:
        raise ValueError(
            f"{method} config: {field}={cfg[field]!r} is unknown; choose one of {choices}."
        )


def check_int_range(
    cfg: ml_collections.ConfigDict, field: str, low: int, method: str, high: int | None = None
) -> None:
    value = cfg[field]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{method} config: {field} must be an integer; got {value!r}.")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{method} config: {field} must be {bound}; got {value}.")


def check_queue_size(cfg: ml_collections.ConfigDict, global_batch_size: int, method: str) -> None:
    """queue_size must be a positive multiple of the global batch (each step enqueues it whole)."""
    check_int_range(cfg, "queue_size", 1, method)
    if global_batch_size < 1:
        raise ValueError(f"{method}: global batch size must be >= 1; got {global_batch_size}.")
    if cfg.queue_size % global_batch_size != 0:
        lower = max(global_batch_size, cfg.queue_size // global_batch_size * global_batch_size)
        raise ValueError(
            f"{method} config: queue_size={cfg.queue_size} is not a multiple of the "
            f"global batch size {global_batch_size}; use e.g. queue_size={lower}."
        )
