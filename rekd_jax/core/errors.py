"""One line for every expected failure at the command-line entry points.

main.py, `python -m rekd_jax.data.prepare` and `python -m rekd_jax.tools.import_torch` run
their work through `run_cli`: an expected failure (a bad config or flag, a dataset that is not
prepared, a file-system error, a busy workdir, a NaN stop, ...) prints one line
``FATAL: <ErrorType>: <what>, <fix>`` on stderr and exits with status 2; with ``--debug`` (or
for anything else, i.e. a bug) Python's traceback is shown as usual. A run stopped on purpose
after saving its work (`Stopped`, e.g. rekd_jax.training.preemption.Preempted) is not a
failure: its one line ("preempted at step N: ...") goes to stderr and its `exit_code` is the
status (0 after a preemption notice, 130 after Ctrl-C).

Ctrl-C (SIGINT) and SIGTERM. While `run_cli` runs, they print one line and end the process at
once with status 130 (143 for SIGTERM), never a KeyboardInterrupt (rekd_jax.core.interrupts,
whose `stop_at_once` and `signals_stop_at_once` are used from here).

A URL whose storage library is missing (gs:// without gcsfs) is one line too
(fileio.StorageLibraryMissingError), naming what to install.
"""

from __future__ import annotations

import errno
import re
import sys
import threading
from collections.abc import Callable

from rekd_jax.core import fileio, workdir_lock
from rekd_jax.core.interrupts import (  # noqa: F401  (stop_at_once: part of this module's API)
    INTERRUPTED,
    signals_stop_at_once,
    stop_at_once,
)

EXIT_CODE = 2

_OS_FIXES = {
    errno.ENOSPC: "the disk is full: free space or write elsewhere",
    errno.EDQUOT: "the disk quota is exceeded: free space or write elsewhere",
    errno.EROFS: "the file system is read-only: choose a writable location",
    errno.EACCES: "check its permissions or choose a location you can write to",
    errno.EPERM: "check its permissions or choose a location you can write to",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "it is a folder where a file is expected: choose another path",
    errno.EEXIST: (
        "it exists and is not what is expected there (e.g. a file where a folder belongs): "
        "choose another path"
    ),
    errno.ENOENT: "check the path",
    errno.ELOOP: "it is a symlink loop: fix or remove the link",
    errno.EIO: "the storage reports an I/O error: check the disk",
}


class Stopped(Exception):
    """A command stopped on purpose after saving its work; not a failure. Its message is the
    one line the command prints, its `exit_code` the exit status."""

    exit_code = 0


# How libraries word a full disk when they do not raise OSError(ENOSPC): TensorStore (Orbax)
# "RESOURCE_EXHAUSTED ... Failed writing", TFDS / array_record "write() failed: No space left".
_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded")
_PATH_IN_TEXT = re.compile(r'"(/[^"]+|[a-z][a-z0-9+.-]*://[^"]+)"|\s(/[^\s:"\',]+)')


def _chain(error: BaseException | None):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def is_disk_full(error: BaseException | None) -> bool:
    """Whether `error` (or an exception it was raised from) reports a full disk or quota."""
    for e in _chain(error):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e)
        if any(t in text for t in _DISK_FULL_TEXT) or (
            "RESOURCE_EXHAUSTED" in text and "writ" in text.lower()
        ):
            return True
    return False


def disk_full_path(error: BaseException) -> str:
    """The folder being written when the disk filled up, as the user named it: the first path
    in the error, cut before this project's temporary names (incomplete.*) and library
    scratch names (*-tmp*)."""
    for e in _chain(error):
        if isinstance(e, OSError) and e.filename:
            path = str(e.filename)
            break
        match = _PATH_IN_TEXT.search(str(e))
        if match:
            path = match.group(1) or match.group(2)
            break
    else:
        return "the output location"
    parts = path.rstrip("/").split("/")
    for i, part in enumerate(parts):
        if part.startswith("incomplete.") or "-tmp" in part:
            return "/".join(parts[:i]) or "/"
    return "/".join(parts)


def expected_errors() -> tuple[type[BaseException], ...]:
    """Failures whose message (plus, for OSError, the path and a fix) is the whole story (a busy
    encoder, models.io.EncoderBusyError, is a WorkdirBusyError)."""
    return (
        ValueError,
        OSError,
        workdir_lock.WorkdirBusyError,
        fileio.StorageLibraryMissingError,
        FloatingPointError,
        MemoryError,
    )


def one_line(error: BaseException) -> str:
    """``FATAL: <ErrorType>: <what>, <fix>`` on one line."""
    name = type(error).__name__
    if is_disk_full(error):
        name, text = (
            "DiskFullError",
            (
                f"no space left on the device holding "
                f"{disk_full_path(error)}, free space or choose another "
                "location (what was written before stays valid)"
            ),
        )
    elif isinstance(error, OSError) and error.errno in _OS_FIXES and error.strerror:
        where = error.filename if error.filename is not None else ""
        if error.filename2 is not None:
            where = f"{where} -> {error.filename2}"
        text = f"{error.strerror}: {where}, {_OS_FIXES[error.errno]}"
    elif isinstance(error, MemoryError):
        text = (
            f"out of host memory{': ' + str(error) if str(error) else ''}, lower the "
            "parallelism (--num_workers, data.num_workers), the batch size or "
            "data.resident_max_mb, or use a machine with more memory"
        )
    else:
        text = str(error) or "(no message)"
    return "FATAL: " + " ".join(f"{name}: {text}".split())


def _closed_loop_callback(unraisable) -> bool:
    """Orbax's aftermath of a failed write or read: TensorStore callbacks into an asyncio loop
    Orbax has closed ('Event loop is closed', reported through sys.unraisablehook)."""
    return (
        unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed"
    )


def quiet_background_failures(debug: bool = False) -> None:
    """From now on in this process (the echoes come in late, some after the command returned),
    the echoes of a failure that the command reports in its one line are not printed as
    tracebacks: a full disk met by a background thread (Orbax's savers) and Orbax's
    closed-loop callbacks after a failed write. (Library log records that carry a full disk are
    dropped by rekd_jax.core.logging.) Nothing is hidden with `debug`; idempotent."""
    if debug or getattr(threading.excepthook, "_quiet_background_failures", False):
        return
    previous_thread_hook, previous_unraisable_hook = threading.excepthook, sys.unraisablehook

    def thread_hook(args):
        if not is_disk_full(args.exc_value):
            previous_thread_hook(args)

    def unraisable_hook(unraisable):
        if not _closed_loop_callback(unraisable):
            previous_unraisable_hook(unraisable)

    thread_hook._quiet_background_failures = True
    threading.excepthook, sys.unraisablehook = thread_hook, unraisable_hook


def fatal_exit_message(exit_request: SystemExit) -> str | None:
    """The text of a `SystemExit("FATAL: ...")`, or None for any other exit."""
    code = exit_request.code
    return code if isinstance(code, str) and code.startswith("FATAL") else None


def run_cli(function: Callable[[], object], *, debug: bool) -> int:
    """Runs `function`; returns the exit status: 0, EXIT_CODE after printing the one line of
    an expected error (which `debug` re-raises instead) or of a `SystemExit("FATAL: ...")`,
    or the `exit_code` of a `Stopped` run (0 after a preemption notice, 130 after Ctrl-C in
    pre-training). Ctrl-C or SIGTERM outside pre-training's steps ends the process at once
    (`stop_at_once`)."""
    quiet_background_failures(debug)
    try:
        with signals_stop_at_once():
            function()
    except Stopped as stopped:
        print(stopped, file=sys.stderr, flush=True)
        return stopped.exit_code
    except Exception as error:  # pylint: disable=broad-except  (others are re-raised)
        if debug or not (isinstance(error, expected_errors()) or is_disk_full(error)):
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
