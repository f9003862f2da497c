"""One line for every expected failure at the command-line entry points.

main.py, `python -m rekd_jax.data.prepare` and `python -m rekd_jax.tools.import_torch` run
their work through `run_cli`: an expected failure (a bad config or flag, a dataset that is not
prepared, a file-system error, a busy workdir, a NaN stop, ...) prints one line
``FATAL: <ErrorType>: <what>, <fix>`` on stderr and exits with status 2; with ``--debug`` (or
for anything else, i.e. a bug) Python's traceback is shown as usual. A run stopped on purpose
after saving its work (`Stopped`, e.g. rekd_jax.training.preemption.Preempted) is not a
failure: its one line ("preempted at step N: ...") goes to stderr and the status is 0.
"""
from __future__ import annotations

import errno
import sys
from typing import Callable

from rekd_jax.core import fileio

EXIT_CODE = 2

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


class Stopped(Exception):
    """A command stopped on purpose after saving its work; not a failure. Its message is the
    one line the command prints."""
    exit_code = 0


def expected_errors() -> tuple[type[BaseException], ...]:
    """Failures whose message (plus, for OSError, the path and a fix) is the whole story (a busy
    encoder, models.io.EncoderBusyError, is a WorkdirBusyError)."""
    return (ValueError, OSError, fileio.WorkdirBusyError, FloatingPointError, MemoryError)


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


def run_cli(function: Callable[[], object], *, debug: bool) -> int:
    """Runs `function`; returns the exit status: 0, or EXIT_CODE after printing the one line
    of an expected error (which `debug` re-raises instead)."""
    try:
        function()
    except Stopped as stopped:
        print(stopped, file=sys.stderr, flush=True)
        return stopped.exit_code
    except expected_errors() as error:
        if debug:
            raise
        print(one_line(error), file=sys.stderr, flush=True)
        return EXIT_CODE
    return 0
