"""Crash-safe outputs and the workdir lock, shared by every command that writes something.

A killed process, a full disk or a bad input never leaves a half-written output in place of a
good one: every dataset, encoder checkpoint, result file and report is built beside its target
and renamed into place when it is complete.

API::

    with atomic_dir(target, overwrite=False, what="encoder", flag="--overwrite") as tmp:
        ...write everything under tmp...      # target (if any) stays valid meanwhile
    # on success tmp replaced target (atomic exchange where the kernel offers it); on an
    # exception tmp is removed and target is untouched; a SIGKILL leaves tmp behind, removed
    # by the next atomic_dir / clean_incomplete in that folder (its process is gone).
    write_text(path, text); write_json(path, obj)   # temp file + fsync + os.replace
    clean_incomplete(parent)                  # remove leftovers of dead processes

    with WorkdirLock(workdir, "pre-training"):      # WorkdirBusyError names the holder
        ...
    lock_holder(workdir) -> dict | None       # {'pid', 'host', 'started', 'what'} if held

Temporary names are ``incomplete.<pid>.<host>.<role>.<name>`` beside the target (role 'new'
for the one being built, 'old' for a replaced one during a non-atomic swap), so leftovers can
be told apart from live builds: a leftover whose process no longer runs on this host is
removed ('new') or put back in place when its target is missing ('old'). The lock is an
``fcntl.flock`` on WORKDIR/.lock, which the kernel releases when its process dies, so the lock
of a killed run is taken over without any cleanup; the file records who holds it.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from typing import Any, Iterator

INCOMPLETE = "incomplete."
LOCK_FILE = ".lock"
_FOREIGN_STALE_SECS = 24 * 3600  # incomplete.* folders not made by this module (older TFDS).


class AlreadyExistsError(FileExistsError):
  """The output exists and replacing it was not asked for (message names the flag)."""


class WorkdirBusyError(RuntimeError):
  """Another live process holds the workdir lock (message names it)."""


def _host() -> str:
  return socket.gethostname().replace(".", "-") or "localhost"


def incomplete_path(target: str, role: str = "new", tag: str | None = None) -> str:
  """``<parent>/incomplete.<pid>.<host>.<role>.<name>`` for `target` (tag replaces pid.host)."""
  target = os.path.abspath(target)
  tag = tag or f"{os.getpid()}.{_host()}"
  return os.path.join(os.path.dirname(target),
                      f"{INCOMPLETE}{tag}.{role}.{os.path.basename(target)}")


def pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by someone else
    return True
  return True


def _remove(path: str) -> None:
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path)
  else:
    os.unlink(path)


def clean_incomplete(parent: str, log=logging.info) -> list[str]:
  """Removes `incomplete.*` leftovers in `parent` whose process is gone; returns what it did.

  Ours (``incomplete.<pid>.<host>.<role>.<name>``) from a dead process on this host: 'new' is
  removed, 'old' is moved back to <name> when <name> is missing (a swap cut in the middle),
  else removed. Others (e.g. TFDS's own ``incomplete.<hex>``) are removed when untouched for a
  day. Live builds, and builds of other hosts, are left alone.
  """
  done = []
  try:
    entries = sorted(os.listdir(parent))
  except FileNotFoundError:
    return done
  for entry in entries:
    if not entry.startswith(INCOMPLETE):
      continue
    path = os.path.join(parent, entry)
    parts = entry.split(".", 4)
    if len(parts) == 5 and parts[1].isdigit() and parts[3] in ("new", "old"):
      _, pid, host, role, name = parts
      if host != _host() or pid_alive(int(pid)):
        continue
      target = os.path.join(parent, name)
      if role == "old" and not os.path.lexists(target):
        os.rename(path, target)
        done.append(f"restored {target} from {entry} (a replacement was cut short)")
        continue
    else:
      try:
        if time.time() - os.lstat(path).st_mtime < _FOREIGN_STALE_SECS:
          continue
      except FileNotFoundError:
        continue
    with contextlib.suppress(FileNotFoundError):
      _remove(path)
    done.append(f"removed the leftover {path}")
  for line in done:
    log(line)
  return done


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
  """Atomically swaps two paths with renameat2(RENAME_EXCHANGE); False where unsupported."""
  try:
    renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
  except (AttributeError, OSError):
    return False
  if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
    return True
  code = ctypes.get_errno()
  if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
    return False
  raise OSError(code, os.strerror(code), b)


def replace_path(src: str, dst: str) -> None:
  """Puts the complete `src` at `dst`; an existing `dst` stays valid until then."""
  if not os.path.lexists(dst):
    os.rename(src, dst)
    return
  if _exchange(src, dst):  # src now holds the old one
    _remove(src)
    return
  old = incomplete_path(dst, "old")
  os.rename(dst, old)  # a kill here is repaired by clean_incomplete (moves `old` back)
  os.rename(src, dst)
  _remove(old)


@contextlib.contextmanager
def atomic_dir(target: str, *, overwrite: bool = True, what: str = "output",
               flag: str = "--overwrite", primary: bool = True,
               tag: str | None = None) -> Iterator[str]:
  """Yields an empty folder beside `target`; on success it replaces `target`.

  overwrite=False refuses an existing target (AlreadyExistsError naming `flag`), checked
  before and after the build. primary=False (other processes of a multi-host save) only
  yields the path: the primary creates, cleans and renames it, so the caller gives every
  process the same `tag` (the default tag holds this process's pid).
  """
  target = os.path.abspath(target)
  parent = os.path.dirname(target)

  def refuse_existing():
    if not overwrite and os.path.lexists(target):
      raise AlreadyExistsError(f"{what} {target} already exists; pass {flag} to replace it (the "
                               "old one stays in place until the new one is complete)")

  refuse_existing()
  tmp = incomplete_path(target, "new", tag)
  if not primary:
    yield tmp
    return
  os.makedirs(parent, exist_ok=True)
  clean_incomplete(parent)
  if os.path.lexists(tmp):
    _remove(tmp)
  os.makedirs(tmp)
  try:
    yield tmp
    refuse_existing()
    replace_path(tmp, target)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def write_text(path: str, text: str) -> None:
  """Writes `text` to a temp file beside `path`, syncs it and renames it into place."""
  path = os.path.abspath(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = incomplete_path(path)
  try:
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise


def write_json(path: str, obj: Any, **kwargs) -> None:
  write_text(path, json.dumps(obj, **{"indent": 2, **kwargs}) + "\n")


def _read_holder(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      return json.loads(f.read() or "{}")
  except (OSError, ValueError):
    return {}


def describe_holder(holder: dict) -> str:
  started = holder.get("started")
  when = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
          if isinstance(started, (int, float)) else "an unknown time")
  return (f"{holder.get('what', 'another run')} (pid {holder.get('pid', '?')} on "
          f"{holder.get('host', '?')}, started {when})")


class WorkdirLock:
  """Exclusive use of a workdir by one run; see the module docstring."""

  def __init__(self, workdir: str, what: str, *, primary: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.path = os.path.join(self.workdir, LOCK_FILE)
    self.what = what
    self.primary = primary
    self._file = None

  def acquire(self) -> "WorkdirLock":
    if not self.primary:
      return self
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
      logging.info("workdir lock: taking over from %s, which is no longer running",
                   describe_holder(previous))
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                        "started": time.time(), "what": self.what}))
    f.flush()
    self._file = f
    return self

  def release(self) -> None:
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
  path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
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
