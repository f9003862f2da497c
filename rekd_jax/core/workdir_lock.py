"""The workdir lock: one run at a time uses a workdir.

    with WorkdirLock(workdir, "pre-training"):      # WorkdirBusyError names the holder
        ...
    lock_holder(workdir) -> dict | None       # {'pid', 'host', 'started', 'what'} if held

The lock is an ``fcntl.flock`` on WORKDIR/.lock, which the kernel releases when its process
dies, so the lock of a killed run is taken over without any cleanup; the file records who holds
it. An object store has no O_EXCL or flock: there ``WorkdirLock`` writes its holder record to
WORKDIR/.lock and refuses to start when a record of a live process on this host is there, but
cannot see processes of other machines, so a record left by another machine (a preempted VM)
is reported and taken over: exclusivity is not enforced (a one-line warning says so once per
process).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time

from rekd_jax.core.fileio import (
    absolute,
    check_reachable,
    is_remote,
    join,
    pid_alive,
    read_text,
    remove_tree,
    warn_once,
    with_path,
    write_text,
)

LOCK_FILE = ".lock"


class WorkdirBusyError(RuntimeError):
    """Another live process holds the workdir lock (message names it)."""


def _read_holder(path: str) -> dict:
    try:
        return json.loads(read_text(path) or "{}")
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict) -> str:
    started = holder.get("started")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
        if isinstance(started, (int, float))
        else "an unknown time"
    )
    return (
        f"{holder.get('what', 'another run')} (pid {holder.get('pid', '?')} on "
        f"{holder.get('host', '?')}, started {when})"
    )


class WorkdirLock:
    """Exclusive use of a workdir by one run; see the module docstring."""

    def __init__(self, workdir: str, what: str, *, primary: bool = True):
        self.workdir = absolute(workdir)
        self.path = join(self.workdir, LOCK_FILE)
        self.what = what
        self.primary = primary
        self._file = None
        self._remote_record = None  # the holder record written on an object store

    def acquire(self) -> WorkdirLock:
        if not self.primary:
            return self
        if is_remote(self.workdir):
            return self._acquire_record()
        os.makedirs(self.workdir, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            holder = _read_holder(self.path)
            raise WorkdirBusyError(
                f"workdir {self.workdir} is in use by {describe_holder(holder)}; wait for it to "
                f"finish or stop it (kill {holder.get('pid', 'PID')}), or give another --workdir"
            ) from None
        previous = _read_holder(self.path)
        if previous.get("pid") and previous.get("pid") != os.getpid():
            logging.info(
                "workdir lock: taking over from %s, which is no longer running",
                describe_holder(previous),
            )
        try:
            f.seek(0)
            f.truncate()
            f.write(json.dumps(self._record()))
            f.flush()
        except OSError as error:  # a full disk: the write names no file, so name the workdir
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            with contextlib.suppress(OSError):  # closing flushes the unwritten record again
                f.close()
            named = with_path(error, self.workdir)
            if named is error:
                raise
            raise named from error
        self._file = f
        return self

    def _record(self) -> dict:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "what": self.what,
        }

    def _acquire_record(self) -> WorkdirLock:
        """The lock on an object store: a holder record only (see the module docstring)."""
        check_reachable(self.workdir)
        warn_once(
            "lock",
            f"workdir lock: {self.workdir} is on an object store, which has no "
            "exclusive locks; the lock is a holder record only, so a second run started on "
            "another machine with the same workdir is not stopped",
        )
        previous = _read_holder(self.path)
        if previous.get("pid") and previous.get("host") == socket.gethostname():
            if previous["pid"] != os.getpid() and pid_alive(int(previous["pid"])):
                raise WorkdirBusyError(
                    f"workdir {self.workdir} is in use by {describe_holder(previous)}; "
                    f"wait for it to finish or stop it (kill {previous['pid']}), "
                    "or give another --workdir"
                )
        elif previous.get("pid"):
            logging.warning(
                "workdir lock: taking over from %s, whose record is still there (a "
                "preempted or killed run; if it is running, stop one of the two)",
                describe_holder(previous),
            )
        self._remote_record = self._record()
        write_text(self.path, json.dumps(self._remote_record))
        return self

    def release(self) -> None:
        record = self._remote_record
        if record is not None:
            self._remote_record = None
            if _read_holder(self.path) == record:  # not taken over meanwhile
                with contextlib.suppress(FileNotFoundError):
                    remove_tree(self.path)
            return
        if self._file is None:
            return
        self._file.seek(0)
        self._file.truncate()  # before unlocking: the next holder's record is never erased
        fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def lock_holder(workdir: str) -> dict | None:
    """Who holds WORKDIR's lock ({'pid', 'host', 'started', 'what'}), or None when nobody does."""
    path = join(absolute(workdir), LOCK_FILE)
    if is_remote(path):
        holder = _read_holder(path)
        if not holder or (
            holder.get("host") == socket.gethostname()
            and not pid_alive(int(holder.get("pid", 0) or 0))
        ):
            return None
        return holder
    try:
        f = open(path, encoding="utf-8")
    except OSError:
        return None
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(path) or {"what": "another run"}
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return None
