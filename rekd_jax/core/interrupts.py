"""Ctrl-C (SIGINT) and SIGTERM at the command-line entry points: one line, then the process ends.

At the command line, Ctrl-C never raises KeyboardInterrupt: raised inside XLA's compilation
(which polls for signals) it abandons a compile whose native threads keep running, and the
interpreter can then crash with a segmentation fault while shutting down; raised inside a
garbage-collection callback (JAX has one) it is swallowed ("Exception ignored in ...") and the
command goes on to write its output; raised while a module is imported it is a traceback.
Instead `stop_at_once` prints one line and ends the process at once, without the interpreter's
shutdown; what was written stays valid, since every output is written beside its target and
renamed into place (the same guarantee as for SIGKILL). Status 130, the shell's convention for
Ctrl-C; SIGTERM is handled the same way, with status 143. Pre-training replaces these handlers
while it trains: there, SIGTERM and Ctrl-C save a checkpoint at the next step boundary first
(rekd_jax.training.preemption).

From the first line on: a `python -m rekd_jax.<module>` command (the dataset builder, the
importer, the report, ...) takes these handlers when this module is imported, which its module
does first, before the imports that take seconds (JAX, TFDS, PyTorch). Imported anywhere else
(a notebook, a script, `python main.py`, pytest) it changes nothing; `python main.py` and the
console command take them in rekd_jax.cli.main. Only the standard library is imported here, so
that this costs nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

# What a signal prints, and the exit status (128 + the signal).
_STOPPED = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}
INTERRUPTED = (
    ": stopped at once; everything already written stays valid (outputs are "
    "written atomically), rerun the same command to continue"
)


def stop_at_once(signum: int = signal.SIGINT, frame=None) -> None:
    """The SIGINT / SIGTERM handler of the command-line entry points: one line on stderr, then
    the process ends with status 128 + signum without the interpreter's shutdown (see the
    module docstring)."""
    del frame
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # never let a flush keep the process alive
            stream.flush()
    line = _STOPPED.get(signum, signal.Signals(signum).name) + INTERRUPTED + "\n"
    with contextlib.suppress(Exception):  # Python's stderr (rekd_jax.cli filters fd 2)
        os.write(sys.stderr.fileno(), line.encode())
    os._exit(128 + signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def signals_stop_at_once():
    """While the block runs (in the main thread), Ctrl-C and SIGTERM call `stop_at_once`."""
    if not _in_main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, stop_at_once) for signum in _STOPPED}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def running_as_command() -> bool:
    """Whether this process is a `python -m rekd_jax.<module>` command."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec is not None and (spec.name or "").startswith("rekd_jax.")


if running_as_command() and _in_main_thread():
    for _signum in _STOPPED:
        signal.signal(_signum, stop_at_once)
