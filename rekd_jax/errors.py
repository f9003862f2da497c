"""One line for every expected failure at the command-line entry points.

main.py, `python -m rekd_jax.data.prepare` and `python -m rekd_jax.tools.import_torch` run
their work through `run_cli`: an expected failure (a bad config or flag, a dataset that is not
prepared, a file-system error, a busy workdir, a NaN stop, ...) prints one line
``FATAL: <ErrorType>: <what>, <fix>`` on stderr and exits with status 2; with ``--debug`` (or
for anything else, i.e. a bug) Python's traceback is shown as usual. A run stopped by a
preemption notice after saving its checkpoint (rekd_jax.training.preemption.Preempted) is not
a failure: its one line ("preempted at step N: ...") goes to stderr and the status is 0.

Ctrl-C (SIGINT). While `run_cli` runs, Ctrl-C never raises KeyboardInterrupt: raised inside
XLA's compilation (which polls for signals) it abandoned a compile whose native threads kept
running, and the interpreter then crashed with a segmentation fault while shutting down; raised
inside a garbage-collection callback it was swallowed ("Exception ignored in ...") and the run
went on. Instead the handler prints one line and ends the process at once, without the
interpreter's shutdown; what was written stays valid, since every output is written beside its
target and renamed into place (the same guarantee as for SIGKILL). Status 130, the shell's
convention for Ctrl-C. Pre-training replaces this handler while it trains: there, Ctrl-C
saves a checkpoint at the next step boundary first (rekd_jax.training.preemption).
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
from typing import Callable

EXIT_CODE = 2
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT
INTERRUPTED = ("interrupted (Ctrl-C): stopped at once; everything already written stays valid "
               "(outputs are written atomically), rerun the same command to continue")

_OS_FIXES = {
    errno.ENOSPC: "the disk is full: free space or write elsewhere",
    errno.EDQUOT: "the disk quota is exceeded: free space or write elsewhere",
    errno.EROFS: "the file system is read-only: choose a writable location",
    errno.EACCES: "check its permissions or choose a location you can write to",
    errno.EPERM: "check its permissions or choose a location you can write to",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "it is a folder where a file is expected: choose another path",
    errno.EEXIST: "it exists and is not what is expected there (e.g. a file where a folder belongs): choose another path",
    errno.ENOENT: "check the path",
    errno.ELOOP: "it is a symlink loop: fix or remove the link",
    errno.EIO: "the storage reports an I/O error: check the disk",
}


def expected_errors() -> tuple[type[BaseException], ...]:
    """Failures whose message (plus, for OSError, the path and a fix) is the whole story."""
    from rekd_jax.fileio import WorkdirBusyError
    from rekd_jax.models.io import EncoderBusyError
    return (ValueError, OSError, WorkdirBusyError, EncoderBusyError, FloatingPointError,
            MemoryError)


def one_line(error: BaseException) -> str:
    """``FATAL: <ErrorType>: <what>, <fix>`` on one line."""
    name = type(error).__name__
    if isinstance(error, OSError) and error.errno in _OS_FIXES and error.strerror:
        where = error.filename if error.filename is not None else ""
        if error.filename2 is not None:
            where = f"{where} -> {error.filename2}"
        text = f"{error.strerror}: {where}, {_OS_FIXES[error.errno]}"
    elif isinstance(error, MemoryError):
        text = (f"out of host memory{': ' + str(error) if str(error) else ''}, lower the "
                "parallelism (--num_workers, data.num_workers), the batch size or "
                "data.resident_max_mb, or use a machine with more memory")
    else:
        text = str(error) or "(no message)"
    return "FATAL: " + " ".join(f"{name}: {text}".split())


def stop_at_once(signum=signal.SIGINT, frame=None) -> None:
    """The SIGINT handler of the command-line entry points: one line on stderr, then the
    process ends with status 130 without the interpreter's shutdown (see the module
    docstring)."""
    del signum, frame
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # never let a flush keep the process alive
            stream.flush()
    os.write(2, (INTERRUPTED + "\n").encode())
    os._exit(INTERRUPTED_EXIT_CODE)


@contextlib.contextmanager
def ctrl_c_stops_at_once():
    """While the block runs (in the main thread), Ctrl-C calls `stop_at_once`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, stop_at_once)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)


def fatal_exit_message(exit_request: SystemExit) -> str | None:
    """The text of a `SystemExit("FATAL: ...")`, or None for any other exit."""
    code = exit_request.code
    return code if isinstance(code, str) and code.startswith("FATAL") else None


def run_cli(function: Callable[[], object], *, debug: bool) -> int:
    """Runs `function`; returns the exit status: 0, EXIT_CODE after printing the one line of
    an expected error (which `debug` re-raises instead) or of a `SystemExit("FATAL: ...")`,
    or the status of a stop on a signal (0 for SIGTERM, 130 for Ctrl-C). Ctrl-C outside
    pre-training's steps ends the process at once (`stop_at_once`)."""
    from rekd_jax.training.preemption import Preempted
    try:
        with ctrl_c_stops_at_once():
            function()
    except Preempted as stopped:
        print(stopped, file=sys.stderr, flush=True)
        return stopped.exit_code
    except expected_errors() as error:
        if debug:
            raise
        print(one_line(error), file=sys.stderr, flush=True)
        return EXIT_CODE
    except SystemExit as exit_request:
        message = fatal_exit_message(exit_request)
        if message is None:
            raise
        print(" ".join(message.split()), file=sys.stderr, flush=True)
        return EXIT_CODE
    return 0
