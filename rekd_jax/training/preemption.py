"""Preemption: on SIGTERM, save a checkpoint at a step boundary all processes agree on, exit 0.

Cloud TPU (spot / preemptible VMs, queued resources) and spot GPU instances announce a
preemption with SIGTERM, some seconds before the machine goes away. Pre-training
(rekd_jax.training.pretrain) runs inside `StopOnSignal`:

    with preemption.StopOnSignal() as stop:     # after jax.distributed.initialize
        for step in range(start + 1, total + 1):
            ...train step...
            if stop.agreed(step - start):       # after every step, on every process
                save a checkpoint; raise preemption.Preempted(step)

Agreement, checked after every step at no measurable cost:

* one process: a Python SIGTERM handler sets a flag; the run stops after the step that is
  running when the signal arrives. The handler never interrupts a step or a save, and a
  second SIGTERM while the checkpoint is written is ignored. The handler does not log (a log
  line written from a signal handler can land inside another write to the same stream): the
  next `agreed()` call, right after the step, logs what arrived. The previous handler is
  restored on exit.
* several processes (jax.distributed): JAX's preemption service, which
  jax.distributed.initialize starts (jax_enable_preemption_service, on by default). Its
  notifier catches SIGTERM in any process (further ones are ignored) and tells the
  coordination service; in the background every process then reports how many steps it has
  run, and `jax.experimental.multihost_utils.reached_preemption_sync_point(n)` becomes true
  on every process at the same n: one more than the furthest process had reached. It is a
  host-side lookup (no device collective, no host-device sync), so it is called every step.
  The count passed is the number of steps this command has run (`step - start`), which is the
  same on every process and starts at 1 after a resume too (the service counts from 0).
  Without the service (jax_enable_preemption_service=False) the run warns that SIGTERM ends it
  without a checkpoint.

Ctrl-C (SIGINT), one process: once the first step has run, the first Ctrl-C is handled as
SIGTERM is (a checkpoint after the current step, one line, exit status 130); a second one, or
one during set-up (building, compiling the first step), goes to the handler that was there
before: the command line's stops the process at once with one line (rekd_jax.core.errors), Python's
raises KeyboardInterrupt (e.g. in a notebook). A Ctrl-C that arrives after the last step is
passed on when the block ends. With several processes Ctrl-C is not intercepted.

`Preempted` carries the one line the command prints ("preempted at step N: checkpoint saved,
rerun the same command to resume", or "interrupted (Ctrl-C) at step N: ..."); it is an
errors.Stopped, which rekd_jax.core.errors.run_cli turns into exit status 0 (SIGTERM) or 130
(Ctrl-C), and rerunning the same command resumes from that checkpoint
(rekd_jax.training.resume).
"""

from __future__ import annotations

import signal
import threading

from absl import logging

from rekd_jax.core import errors


class Preempted(errors.Stopped):
    """Training stopped on a preemption notice (or Ctrl-C) after saving its checkpoint; not a
    failure. `exit_code`: 0 for SIGTERM, 130 for Ctrl-C (StopOnSignal marks it on the way out)."""

    def __init__(self, step: int, *, interrupted: bool = False):
        self.step = int(step)
        self.interrupted = interrupted
        super().__init__(step)

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else 0

    def __str__(self) -> str:
        what = "interrupted (Ctrl-C)" if self.interrupted else "preempted"
        return f"{what} at step {self.step}: checkpoint saved, rerun the same command to resume"


def _jax_service_agreed(steps_done: int) -> bool:
    from jax.experimental import multihost_utils

    return bool(multihost_utils.reached_preemption_sync_point(int(steps_done)))


class StopOnSignal:
    """Context manager: while active, SIGTERM (and, once training runs, Ctrl-C) asks the run to
    stop at an agreed step (see the module docstring). `multiprocess` defaults to
    jax.process_count() > 1."""

    def __init__(self, *, multiprocess: bool | None = None):
        self.multiprocess = multiprocess
        self.requested = False  # one process: a stop signal arrived
        self.signal = None  # its name ('SIGTERM' or 'SIGINT')
        self.training = False  # the first step has run (agreed() was called)
        self.installed = False  # one process: our handlers are installed
        self._service = False  # several processes: JAX's preemption service answers
        self._previous = {}  # signal number -> the handler before ours
        self._received = 0  # stop signals received (one process)
        self._logged = 0  # how many of them agreed() has logged

    def _pass_on(self, signum, frame) -> None:
        """Hands a Ctrl-C to the handler that was installed before ours."""
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    def _handle(self, signum, frame) -> None:
        interrupt = signum == signal.SIGINT
        if interrupt and (not self.training or self.requested):
            return self._pass_on(signum, frame)  # set-up, or a second Ctrl-C: stop at once
        self._received += 1
        if not self.requested:
            self.requested, self.signal = True, signal.Signals(signum).name

    def _log_received(self) -> None:
        """Logs the stop signals that arrived since the last call (see the module docstring)."""
        if self._logged == 0 and self._received:
            if self.signal == "SIGINT":
                logging.warning(
                    "Ctrl-C: a checkpoint will be saved after the current step, "
                    "then the run exits (Ctrl-C again stops at once, losing the "
                    "steps since the last checkpoint)"
                )
            else:
                logging.warning(
                    "%s received: a checkpoint will be saved after the current "
                    "step, then the run exits",
                    self.signal,
                )
        if self._received > max(self._logged, 1):
            logging.warning(
                "%s received again: already stopping after the current step (ignored)", self.signal
            )
        self._logged = self._received

    def __enter__(self) -> StopOnSignal:
        if self.multiprocess is None:
            import jax

            self.multiprocess = jax.process_count() > 1
        if self.multiprocess:
            try:
                _jax_service_agreed(0)  # 0 steps run: the service's own starting count
                self._service = True
            except RuntimeError as e:
                logging.warning(
                    "JAX's preemption service is off (%s): SIGTERM will end the "
                    "run without a checkpoint",
                    e,
                )
            return self
        if threading.current_thread() is not threading.main_thread():
            logging.warning(
                "not in the main thread: SIGTERM will end the run without a "
                "checkpoint (signal handlers need the main thread)"
            )
            return self
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)
        self.installed = True
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.installed:
            return
        for signum, previous in self._previous.items():
            # None: a handler set outside Python, which cannot be put back
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self.installed = False
        if self.signal != "SIGINT":
            return
        if isinstance(exc, Preempted):
            exc.interrupted = True
        elif exc is None:  # Ctrl-C after the last step: the run is complete, stop now
            self._pass_on(signal.SIGINT, None)

    def agreed(self, steps_done: int) -> bool:
        """Whether every process stops after this step. Call it after every step on every
        process, with the number of steps this command has run so far (1, 2, ...)."""
        self.training = True
        if self.multiprocess:
            return self._service and _jax_service_agreed(steps_done)
        self._log_received()
        return self.requested
