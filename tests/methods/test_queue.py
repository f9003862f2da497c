"""FIFO queue: initial contents, order, wrap-around, errors, and the device-major all-gather."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rekd_jax.methods import queue as queue_lib

FIELDS = {"key": ((3,), jnp.float32, queue_lib.UNIT), "label": ((), jnp.int32, -1)}


def batch(start, n=2):
    values = np.arange(start, start + n, dtype=np.float32)
    return {"key": np.repeat(values[:, None], 3, axis=1), "label": values.astype(np.int32)}


def test_init_queue_contents():
    queue = queue_lib.init_queue(jax.random.PRNGKey(0), 6, FIELDS)
    assert set(queue) == {"key", "label", "ptr", "valid"}
    np.testing.assert_allclose(np.linalg.norm(queue["key"], axis=1), 1.0, rtol=1e-6)
    assert len({tuple(np.round(row, 6)) for row in np.asarray(queue["key"])}) == 6
    np.testing.assert_array_equal(queue["label"], -1)
    assert queue["label"].dtype == jnp.int32
    assert int(queue["ptr"]) == 0 and not np.any(queue["valid"])


def test_enqueue_is_fifo_and_wraps_around():
    queue = queue_lib.init_queue(jax.random.PRNGKey(0), 6, FIELDS)
    step = jax.jit(queue_lib.enqueue)
    for start in (10, 20, 30):
        queue = step(queue, batch(start))
    np.testing.assert_array_equal(queue["label"], [10, 11, 20, 21, 30, 31])
    assert int(queue["ptr"]) == 0 and np.all(queue["valid"])
    queue = step(queue, batch(40))  # the oldest two rows go first
    np.testing.assert_array_equal(queue["label"], [40, 41, 20, 21, 30, 31])
    np.testing.assert_array_equal(queue["key"][:, 0], [40, 41, 20, 21, 30, 31])
    assert int(queue["ptr"]) == 2


def test_enqueue_marks_only_written_rows_valid_and_wraps_past_the_end():
    queue = queue_lib.init_queue(jax.random.PRNGKey(1), 6, FIELDS)
    queue = queue_lib.enqueue(queue, batch(1))
    np.testing.assert_array_equal(queue["valid"], [1, 1, 0, 0, 0, 0])
    queue = dict(queue, ptr=jnp.asarray(5, jnp.int32))  # a write that straddles the end
    queue = queue_lib.enqueue(queue, batch(7))
    np.testing.assert_array_equal(queue["label"], [8, 2, -1, -1, -1, 7])
    np.testing.assert_array_equal(queue["valid"], [1, 1, 0, 0, 0, 1])
    assert int(queue["ptr"]) == 1


def test_enqueue_errors_name_the_problem():
    queue = queue_lib.init_queue(jax.random.PRNGKey(0), 6, FIELDS)
    with pytest.raises(ValueError, match="not a multiple"):
        queue_lib.enqueue(queue, batch(0, n=4))
    with pytest.raises(ValueError, match="queue's fields"):
        queue_lib.enqueue(queue, {"key": np.zeros((2, 3), np.float32)})
    with pytest.raises(ValueError, match="reserved"):
        queue_lib.init_queue(jax.random.PRNGKey(0), 4, {"ptr": ((), jnp.int32, 0)})
    with pytest.raises(ValueError, match="unknown init"):
        queue_lib.init_queue(jax.random.PRNGKey(0), 4, {"x": ((2,), jnp.float32, "gaussian")})


def test_global_batch_is_device_major():
    local = np.arange(8, dtype=np.float32).reshape(4, 2)
    gathered = jax.pmap(lambda x: queue_lib.global_batch(x, "batch"), axis_name="batch")(local)
    for device in range(4):
        np.testing.assert_array_equal(gathered[device], np.arange(8))
    np.testing.assert_array_equal(queue_lib.global_batch(local, None), local)


def test_row_age_counts_rows_enqueued_since():
    queue = queue_lib.init_queue(jax.random.PRNGKey(0), 6, FIELDS)
    queue = queue_lib.enqueue(queue, batch(0))  # rows 0, 1
    queue = queue_lib.enqueue(queue, batch(2))  # rows 2, 3; ptr 4
    np.testing.assert_array_equal(queue_lib.row_age(queue)[:4], [3, 2, 1, 0])
    for start in (4, 6):  # wraps: rows 4, 5 then 0, 1; ptr 2
        queue = queue_lib.enqueue(queue, batch(start))
    np.testing.assert_array_equal(queue_lib.row_age(queue), [1, 0, 5, 4, 3, 2])
