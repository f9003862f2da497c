"""Placing pytrees on the local devices for `jax.pmap` steps.

`flax.jax_utils.replicate` gives arrays whose sharding names a mesh axis of its own; a pmapped
step's outputs name the step's axis. A step fed its own outputs (state -> step -> state) then
sees a new input sharding on its second call and compiles a second time. Replicating through an
identity pmap over the step's axis name gives the inputs the outputs' sharding from the start.
"""

from __future__ import annotations

import flax
import jax

AXIS_NAME = "batch"


def replicate(tree, axis_name: str = AXIS_NAME, devices=None):
    """Copies `tree` to every local device (leading axis = device), sharded like the outputs of
    `jax.pmap(..., axis_name=axis_name)`."""
    replicated = flax.jax_utils.replicate(tree, devices)
    if not jax.tree_util.tree_leaves(replicated):
        return replicated  # nothing to place (e.g. no teacher variables)
    return jax.pmap(lambda x: x, axis_name=axis_name, devices=devices)(replicated)
