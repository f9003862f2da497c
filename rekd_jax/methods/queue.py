"""FIFO memory queues as plain pytrees, and the all-gather that feeds them.

A queue is a dict {'<field>': array [K, ...], ..., 'ptr': int32 scalar, 'valid': bool [K]}.
`ptr` is the next row to overwrite; `valid[i]` says whether row i holds a real enqueued item
(rows still holding their initial values are not valid). Every field shares the same K rows, so
one enqueue writes one item (e.g. a student key, its teacher embedding and its label) per row.

Under pmap each device holds the same full queue; the items enqueued are those of the GLOBAL
batch, all-gathered in device-major order (`global_batch`), so the queue after a step is the same
whether the global batch ran on one device or many.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

RESERVED_FIELDS = ("ptr", "valid")
UNIT = "unit"  # field init: random unit vectors along the last axis (MoCo's queue init).


def global_batch(x: jax.Array, axis_name: str | None) -> jax.Array:
    """The global batch: `x` [b, ...] all-gathered over `axis_name` to [D*b, ...], device-major.

    With axis_name None (one un-pmapped device) `x` already is the global batch.
    """
    if axis_name is None:
        return x
    return jax.lax.all_gather(x, axis_name, axis=0, tiled=True)


def init_queue(
    rng: jax.Array, size: int, fields: Mapping[str, tuple[tuple[int, ...], Any, Any]]
) -> dict[str, jax.Array]:
    """A queue of `size` rows. `fields` maps name -> (shape_tail, dtype, init).

    init is `UNIT` ('unit': random unit vectors along the last axis, as MoCo initialises its
    queue) or a scalar fill value (e.g. -1 for labels). All rows start invalid, ptr at 0.
    """
    if size < 1:
        raise ValueError(f"queue size must be >= 1; got {size}.")
    if not fields:
        raise ValueError(
            'init_queue needs at least one field, e.g. {"key": ((128,), jnp.float32, "unit")}.'
        )
    queue: dict[str, jax.Array] = {}
    for index, name in enumerate(sorted(fields)):
        if name in RESERVED_FIELDS:
            raise ValueError(
                f"queue field name {name!r} is reserved ({RESERVED_FIELDS}); rename it."
            )
        shape_tail, dtype, init = fields[name]
        shape = (size, *tuple(shape_tail))
        if isinstance(init, str):
            if init != UNIT:
                raise ValueError(
                    f"queue field {name!r}: unknown init {init!r}; use {UNIT!r} or a "
                    "scalar fill value."
                )
            if len(shape) < 2:
                raise ValueError(
                    f"queue field {name!r}: init {UNIT!r} needs a vector per row, "
                    f"e.g. shape_tail (128,); got {tuple(shape_tail)}."
                )
            noise = jax.random.normal(jax.random.fold_in(rng, index), shape, jnp.float32)
            value = noise / jnp.linalg.norm(noise, axis=-1, keepdims=True)
            queue[name] = value.astype(dtype)
        else:
            queue[name] = jnp.full(shape, init, dtype)
    queue["ptr"] = jnp.zeros((), jnp.int32)
    queue["valid"] = jnp.zeros((size,), bool)
    return queue


def row_age(queue: Mapping[str, jax.Array]) -> jax.Array:
    """Rows enqueued after each row was written, int32 [K]: 0 for the newest row (at ptr - 1),
    K - 1 for the oldest (at ptr). Meaningful for valid rows only."""
    size = queue["valid"].shape[0]
    return ((queue["ptr"] - 1 - jnp.arange(size, dtype=jnp.int32)) % size).astype(jnp.int32)


def enqueue(queue: Mapping[str, jax.Array], items: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Writes N new rows at `ptr` (FIFO: the oldest rows are overwritten), wrapping around.

    `items` must give every field of the queue, each [N, ...] with the field's row shape. K must
    be a multiple of N (as in MoCo), so a fixed batch never straddles the end of the queue.
    Returns the new queue with ptr advanced by N (mod K) and the written rows marked valid.
    """
    fields = sorted(name for name in queue if name not in RESERVED_FIELDS)
    if sorted(items) != fields:
        raise ValueError(
            f"enqueue: items give fields {sorted(items)} but the queue has {fields}; "
            "pass exactly the queue's fields."
        )
    size = queue["valid"].shape[0]
    count = {items[name].shape[0] for name in fields}
    if len(count) != 1:
        raise ValueError(
            f"enqueue: all items need the same number of rows; got "
            f"{ {name: items[name].shape[0] for name in fields} }."
        )
    (count,) = count
    if size % count != 0:
        raise ValueError(
            f"enqueue: queue size {size} is not a multiple of the {count} rows "
            "enqueued per step (the global batch); choose queue_size as a multiple "
            "of the global batch size."
        )
    rows = (queue["ptr"] + jnp.arange(count, dtype=jnp.int32)) % size
    new_queue = dict(queue)
    for name in fields:
        value = items[name]
        if value.shape[1:] != queue[name].shape[1:]:
            raise ValueError(
                f"enqueue: field {name!r} rows are {queue[name].shape[1:]} but the "
                f"items are {value.shape[1:]}."
            )
        value = jax.lax.stop_gradient(value).astype(queue[name].dtype)
        new_queue[name] = queue[name].at[rows].set(value, unique_indices=True)
    new_queue["valid"] = queue["valid"].at[rows].set(True, unique_indices=True)
    new_queue["ptr"] = ((queue["ptr"] + count) % size).astype(jnp.int32)
    return new_queue
