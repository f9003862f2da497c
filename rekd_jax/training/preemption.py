"""Preemption: on SIGTERM, stop at an agreed step boundary after saving a checkpoint, exit 0.

Cloud TPU (spot / preemptible VMs, queued resources) and spot GPU instances announce a
preemption with SIGTERM, some seconds before the machine goes away. Pre-training
(rekd_jax.training.pretrain) runs inside `StopOnSignal`:

    with preemption.StopOnSignal() as stop:        # installs the SIGTERM handler
        for step in ...:
            ...train step...
            if stop.agreed(step, every):           # all processes agree on the step
                save a checkpoint; raise preemption.Preempted(step)
    # the previous SIGTERM handler is back

The handler only sets a flag (and logs), so a signal never interrupts a step or a save; a
second SIGTERM while the checkpoint is written is logged and otherwise ignored. Every
`every` steps (config.preemption_check_every_steps) each process contributes its flag and
all of them stop at that step if any process was signalled: one all-gather of one int per
process (jax.experimental.multihost_utils.process_allgather), skipped when there is one
process. The checks sit at steps that are multiples of `every`, so every process reaches the
same ones in the same order. `Preempted` carries the one line the command prints
("preempted at step N: checkpoint saved, rerun the same command to resume");
rekd_jax.errors.run_cli turns it into exit status 0, and rerunning the same command resumes
from that checkpoint (rekd_jax.training.resume).

The handler is installed after jax.distributed.initialize, so it takes SIGTERM over from
JAX's own preemption notifier (which serves multihost_utils.reached_preemption_sync_point);
it needs the main thread, and elsewhere (a worker thread) the run goes on without it and
says so in the log.
"""
from __future__ import annotations

import signal
import threading
from typing import Callable, Sequence

import numpy as np
from absl import logging


class Preempted(Exception):
    """Training stopped on a preemption notice after saving its checkpoint; not a failure."""

    def __init__(self, step: int):
        self.step = int(step)
        super().__init__(f"preempted at step {self.step}: checkpoint saved, rerun the same "
                         "command to resume")


def is_check_step(step: int, every: int) -> bool:
    """Whether `step` is one of the steps where the processes compare their stop flags
    (`every` >= 1: config.preemption_check_every_steps, checked by config validation)."""
    return step % every == 0


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on any of them (a collective: all processes
    must call it at the same point)."""
    import jax
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils
    flags = multihost_utils.process_allgather(np.asarray(int(flag), np.int32))
    return bool(np.any(flags))


class StopOnSignal:
    """Context manager: while active, `signals` (default SIGTERM) request a stop instead of
    ending the process; the previous handlers are restored on exit."""

    def __init__(self, signals: Sequence[int] = (signal.SIGTERM,), *,
                 agree: Callable[[bool], bool] = any_process):
        self.signals = tuple(signals)
        self.requested = False
        self.installed = False
        self._agree = agree
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            logging.warning("%s received again: already stopping at the next agreed step "
                            "boundary (ignored)", name)
            return
        self.requested = True
        logging.warning("%s received: a checkpoint will be saved at the next agreed step "
                        "boundary, then the run exits", name)

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is not threading.main_thread():
            logging.warning("not in the main thread: SIGTERM will not save a checkpoint "
                            "before the process ends (no preemption handling)")
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        self.installed = True
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():  # None: a handler set outside Python
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()
        self.installed = False

    def agreed(self, step: int, every: int) -> bool:
        """At check steps (see is_check_step): whether any process asked to stop. Every
        process must call this after every step, with the same `every`."""
        if not is_check_step(step, every):
            return False
        return self._agree(self.requested)
