"""Orbax checkpoints of one pytree plus a JSON side item: a thin, generic wrapper.

Used by pre-training (state = TrainState as host numpy, extra = data-iterator state) and by the
evaluation probes (any pytree). It knows nothing about what it stores.

API::

    ckpt = Checkpointer(directory, max_to_keep=3, async_save=True)
    ckpt.latest_step() -> int | None          # newest *complete* checkpoint (Orbax commits
                                              #   atomically: a killed save leaves no step)
    ckpt.all_steps() -> list[int]
    ckpt.save(step, tree, extra=None)         # tree: pytree of numpy / jax arrays, dicts,
                                              #   lists, None; extra: JSON-able dict
    tree, extra = ckpt.restore(target, step=None)   # step None = latest; target gives the
                                              #   structure (and dtypes); raises
                                              #   FileNotFoundError when nothing is saved
    ckpt.wait()                               # block until an async save is on disk
    ckpt.close()

Saves are skipped (returning False) when the step already exists, so a final save right
after a periodic one at the same step is harmless.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


def _to_host(tree: Any) -> Any:
    """Numpy copies of every array leaf (scalars become 0-d arrays, which Orbax accepts)."""
    return jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x)), tree)


class Checkpointer:
    """Orbax CheckpointManager keeping the last `max_to_keep` steps under `directory`."""

    def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True,
            enable_async_checkpointing=async_save)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, tree: Any, extra: dict | None = None) -> bool:
        """Write `tree` (and the JSON `extra`) as checkpoint `step`; False if it exists."""
        step = int(step)
        if step in self._manager.all_steps():
            return False
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(_to_host(tree)),
            extra=ocp.args.JsonSave(dict(extra or {})))
        return bool(self._manager.save(step, args=args, force=True))

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
        """Read checkpoint `step` (default latest) into the structure of `target`."""
        self.wait()
        if step is None:
            step = self.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(_to_host(target)),
            extra=ocp.args.JsonRestore())
        restored = self._manager.restore(int(step), args=args)
        return restored["state"], dict(restored["extra"] or {})

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
