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
    tree, extra, step = ckpt.restore_newest(target, check_extra=None)
                                              # falls back past unrestorable steps (and past
                                              #   side items check_extra raises ValueError for)
    ckpt.wait()                               # block until an async save is on disk
    ckpt.close()

Saves are skipped (returning False) when the step already exists, so a final save right
after a periodic one at the same step is harmless.

`restore_newest` is what resuming uses: a newest checkpoint that fails to restore (truncated,
partly deleted, or altered: see below; or a side item that the caller's `check_extra` finds
missing or incomplete) is named in the log and moved to
`<directory>_unrestorable/` (never deleted), and the previous one is used. When no checkpoint
restores, nothing is moved and CheckpointRestoreError names them all (typically the config no
longer matches them).

Checksums: every save also stores a CRC-32 of each array (with its dtype and shape) and of the
JSON side item (item 'checksums'); a restore recomputes them and raises CheckpointCorruptError
naming what differs, so a flipped bit or an edited side item is never restored silently.
Checkpoints written before checksums existed restore unverified, with one warning naming the
step.
`newest_extra(directory)` reads only the side item of the newest checkpoint that has one.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from rekd_jax.core import fileio


def _to_host(tree: Any) -> Any:
    """Numpy copies of every array leaf (scalars become 0-d arrays, which Orbax accepts)."""
    return jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x)), tree)


class CheckpointRestoreError(ValueError):
    """No checkpoint of a directory can be restored into the expected structure."""


class CheckpointCorruptError(ValueError):
    """A checkpoint's data differs from the checksums stored with it."""


CHECKSUMS = "checksums"


def _crc(data) -> str:
    return f"{zlib.crc32(data):08x}"


def checksums(tree: Any, extra: dict) -> dict:
    """{'arrays': {leaf path: 'dtype shape crc32'}, 'extra': crc32 of the JSON side item}."""
    arrays = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = np.ascontiguousarray(leaf)
        arrays[jax.tree_util.keystr(path)] = (
            f"{array.dtype} {list(array.shape)} {_crc(array.reshape(-1).view(np.uint8))}"
        )
    return {
        "arrays": arrays,
        "extra": _crc(json.dumps(extra, sort_keys=True, default=str).encode()),
    }


def _verify(directory: str, step: int, tree: Any, extra: dict, stored: dict) -> None:
    """CheckpointCorruptError naming the arrays (or the side item) whose checksum differs."""
    now = checksums(tree, extra)
    bad = sorted(
        k
        for k in set(now["arrays"]) | set(stored.get("arrays", {}))
        if now["arrays"].get(k) != stored.get("arrays", {}).get(k)
    )
    if now["extra"] != stored.get("extra"):
        bad.append("the side item (extra)")
    if bad:
        raise CheckpointCorruptError(
            f"checkpoint {directory}/{step} does not match its checksums ({len(bad)} differ, "
            f"e.g. {', '.join(bad[:3])}): the data was altered after it was written"
        )


# What a damaged or mismatched checkpoint raises from Orbax/TensorStore (ValueError for
# missing or short data files, OSError / KeyError for missing metadata).
_RESTORE_ERRORS = (ValueError, OSError, KeyError)


class Checkpointer:
    """Orbax CheckpointManager keeping the last `max_to_keep` steps under `directory`."""

    def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
        self.directory = fileio.absolute(directory)  # a gs:// URL stays as it is
        self._options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save
        )
        self._manager = ocp.CheckpointManager(self.directory, options=self._options)
        self._warned_unverified: set[int] = set()

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, tree: Any, extra: dict | None = None) -> bool:
        """Write `tree` (and the JSON `extra`) as checkpoint `step`; False if it exists."""
        step = int(step)
        if step in self._manager.all_steps():
            return False
        host, extra = _to_host(tree), dict(extra or {})
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(host),
            extra=ocp.args.JsonSave(extra),
            **{CHECKSUMS: ocp.args.JsonSave(checksums(host, extra))},
        )
        return bool(self._manager.save(step, args=args, force=True))

    def _has_checksums(self, step: int) -> bool:
        return fileio.exists(os.path.join(self.directory, str(step), CHECKSUMS))

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
        """Read checkpoint `step` (default latest) into the structure of `target`."""
        self.wait()
        if step is None:
            step = self.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        tree, extra, verified = self._restore(target, step)
        if not verified:
            self._warn_unverified(step)
        return tree, extra

    def _warn_unverified(self, step: int) -> None:
        if step not in self._warned_unverified:
            self._warned_unverified.add(step)
            logging.warning(
                "checkpoint %s/%d has no checksums (it was written without them): restoring "
                "it unverified",
                self.directory,
                step,
            )

    def _restore(self, target: Any, step: int) -> tuple[Any, dict, bool]:
        """(tree, extra, whether checksums verified them) of checkpoint `step`."""
        verified = self._has_checksums(step)
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(_to_host(target)),
            extra=ocp.args.JsonRestore(),
            **({CHECKSUMS: ocp.args.JsonRestore()} if verified else {}),
        )
        restored = self._manager.restore(int(step), args=args)
        extra = dict(restored["extra"] or {})
        if verified:
            _verify(self.directory, step, restored["state"], extra, restored[CHECKSUMS] or {})
        return restored["state"], extra, verified

    def restore_newest(
        self, target: Any, check_extra: Callable[[dict], None] | None = None
    ) -> tuple[Any, dict, int] | None:
        """(tree, extra, step) of the newest checkpoint that restores and whose side item
        `check_extra` accepts (it raises ValueError for a missing or incomplete one), or None
        when there is none; the newer ones are moved aside (see the module docstring)."""
        _drop_closed_loop_callbacks()
        self.wait()
        failed = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                tree, extra, verified = self._restore(target, step)
                if check_extra is not None:
                    check_extra(extra)
            except _RESTORE_ERRORS as e:
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                logging.warning(
                    "checkpoint %s/%d cannot be restored: %s", self.directory, step, reason
                )
                failed.append((step, reason))
                continue
            if not verified:
                self._warn_unverified(step)
            if failed:
                self._move_aside([s for s, _ in failed])
                logging.warning("resuming from the previous complete checkpoint, step %d", step)
            return tree, extra, step
        if failed:
            self.close()
            listed = "; ".join(f"step {s}: {r}" for s, r in failed)
            raise CheckpointRestoreError(
                f"no checkpoint in {self.directory} can be restored ({listed}). If the config "
                "changed since they were written, rerun with the config that wrote them; if "
                f"they are damaged, move {self.directory} aside to start afresh"
            )
        return None

    def newest_extra(self) -> dict | None:
        """The side item of the newest checkpoint whose side item reads (None: none does)."""
        self.wait()
        for step in sorted(self.all_steps(), reverse=True):
            try:
                restored = self._manager.restore(
                    step, args=ocp.args.Composite(extra=ocp.args.JsonRestore())
                )
            except _RESTORE_ERRORS:
                continue
            return dict(restored["extra"] or {})
        return None

    def _move_aside(self, steps: list[int]) -> None:
        aside = self.directory + "_unrestorable"
        fileio.makedirs(aside)
        self._manager.close()
        for step in steps:
            dst = os.path.join(aside, f"{step}.{time.strftime('%Y%m%d-%H%M%S')}")
            fileio.rename(os.path.join(self.directory, str(step)), dst)
            logging.warning(
                "moved the unrestorable checkpoint step %d to %s (kept, not deleted)", step, dst
            )
        self._manager = ocp.CheckpointManager(self.directory, options=self._options)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _is_closed_loop_callback(unraisable) -> bool:
    return (
        unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed"
    )


def _drop_closed_loop_callbacks() -> None:
    """After a read of a damaged checkpoint fails, Orbax closes its asyncio loop while
    TensorStore still has reads in flight; each one that finishes later (possibly after the
    restore returned) calls back into the closed loop and Python reports the RuntimeError
    through `sys.unraisablehook` as a 'Event loop is closed' traceback. Those reports, and only
    those, are dropped from then on; every other unraisable error reaches the previous hook.
    Installed once per process, by the first `restore_newest`."""
    previous = sys.unraisablehook
    if getattr(previous, "_drops_closed_loop_callbacks", False):
        return

    def hook(unraisable):
        if not _is_closed_loop_callback(unraisable):
            previous(unraisable)

    hook._drops_closed_loop_callbacks = True
    sys.unraisablehook = hook
