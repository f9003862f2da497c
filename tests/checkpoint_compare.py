"""Reading a pre-training workdir's Orbax checkpoints in tests, and comparing two runs' bit for
bit (SIGKILL / SIGTERM resume against an uninterrupted run). Not collected (no test_ prefix)."""

import os

import numpy as np
import orbax.checkpoint as ocp


def read_checkpoint(workdir, step=None):
    """(step, state, extra) of WORKDIR/checkpoints at `step` (default: the newest)."""
    manager = ocp.CheckpointManager(
        os.path.join(workdir, "checkpoints"), options=ocp.CheckpointManagerOptions(read_only=True)
    )
    step = manager.latest_step() if step is None else step
    restored = manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(), extra=ocp.args.JsonRestore()),
    )
    return step, restored["state"], restored["extra"]


def leaves(tree, prefix=""):
    """{'/path/to/leaf': array} of a nested dict."""
    if isinstance(tree, dict):
        out = {}
        for key in sorted(tree):
            out.update(leaves(tree[key], f"{prefix}/{key}"))
        return out
    return {prefix: np.asarray(tree)}


def assert_checkpoints_equal(workdir, reference, step=None, expected_step=None):
    """The two runs' checkpoints at `step` (default: newest) hold the same step, the same
    iterator state and bitwise equal arrays."""
    got_step, state, extra = read_checkpoint(workdir, step)
    ref_step, ref_state, ref_extra = read_checkpoint(reference, step)
    assert got_step == ref_step and extra == ref_extra
    if expected_step is not None:
        assert got_step == expected_step
    ours, theirs = leaves(state), leaves(ref_state)
    assert ours.keys() == theirs.keys() and len(ours) > 10
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
