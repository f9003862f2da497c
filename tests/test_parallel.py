"""parallel.replicate: a pmapped step fed its own outputs traces (and compiles) only once."""

import flax
import jax
import jax.numpy as jnp
import numpy as np

from rekd_jax.core import parallel


def _count_traces(replicate):
    traces = []

    def step(state):
        traces.append(1)  # runs once per trace
        return jax.tree_util.tree_map(
            lambda x: (x + jax.lax.pmean(x, "batch")).astype(x.dtype), state
        )

    p_step = jax.pmap(step, axis_name="batch", donate_argnums=(0,))
    state = replicate({"w": jnp.ones((3,)), "step": jnp.zeros((), jnp.int32)})
    for _ in range(3):
        state = p_step(state)
    return len(traces), state


def test_replicated_state_fed_back_traces_once():
    count, state = _count_traces(lambda t: parallel.replicate(t, "batch"))
    assert count == 1
    np.testing.assert_allclose(np.asarray(state["w"]), 8.0)  # 1 -> 2 -> 4 -> 8 on every device
    assert state["w"].shape == (jax.local_device_count(), 3)


def test_flax_replicate_alone_would_trace_twice():
    """Documents why parallel.replicate exists (if JAX changes this, the helper can go)."""
    count, _ = _count_traces(flax.jax_utils.replicate)
    assert count == 2


def test_empty_tree_is_returned_as_is():
    assert parallel.replicate({}) == {}
