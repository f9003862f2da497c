"""Crash-safe outputs, shared by every command that writes something, and the one place that
touches local or remote paths (the workdir lock: rekd_jax.core.workdir_lock).

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

Temporary names are ``incomplete.<pid>.<host>.<role>.<name>`` beside the target (role 'new'
for the one being built, 'old' for a replaced one during a non-atomic swap), so leftovers can
be told apart from live builds: a leftover whose process no longer runs on this host is
removed ('new') or put back in place when its target is missing ('old').

Remote paths. Every workdir, checkpoint, metrics, encoder, result and data_dir path may be a
URL such as ``gs://bucket/run`` (anything with ``://``). The helpers below are the one place
that touches those paths; they use ``etils.epath`` (what Orbax and TFDS use: fsspec/gcsfs, or
tf.io.gfile when TensorFlow is installed) for URLs and ``os`` for local paths::

    is_remote(path); absolute(path)          # abspath for local paths, URLs unchanged
    exists / isdir / listdir / makedirs / mtime / read_text / read_bytes / write_bytes
    open_file(path, mode)                    # 'r', 'w', 'rb', 'wb' (also on URLs)
    remove_tree(path); rename(src, dst)
    check_reachable(path)                    # before slow work: the storage library is there

A URL whose storage library this Python cannot import (gs:// without gcsfs: install the
``tpu`` extra) raises StorageLibraryMissingError, whose message names what to install, from
every helper; nothing is written.

What an object store cannot do, and what these helpers do instead (each says so once per
process in a one-line warning):
  * no atomic rename: ``atomic_dir`` still builds beside the target and then renames (a copy of
    every object) into place; the old target stays until the new one is complete, but a
    reader may see a partly copied target during the swap, and a kill during it leaves the
    old one at ``incomplete.<pid>.<host>.old.<name>`` (restored by the next build);
  * no O_EXCL/flock: the workdir lock is a holder record only (rekd_jax.core.workdir_lock);
  * objects are written whole: ``write_text`` uploads in one write (readers see the old or
    the new object, never a torn one), and the metrics writer rewrites metrics.jsonl.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import posixpath
import shutil
import socket
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from etils import epath

INCOMPLETE = "incomplete."


class AlreadyExistsError(FileExistsError):
    """The output exists and replacing it was not asked for (message names the flag)."""


class StorageLibraryMissingError(RuntimeError):
    """A URL's storage needs a library this Python cannot import (gs:// without gcsfs); the
    message names what to install."""


def _host() -> str:
    return socket.gethostname().replace(".", "-") or "localhost"


# ------------------------------------------------------------------ local or remote paths


def is_remote(path) -> bool:
    """True for a URL (gs://bucket/..., s3://...), False for a local path."""
    return "://" in os.fspath(path)


def absolute(path) -> str:
    """os.path.abspath of a local path; a URL is returned unchanged (it is absolute)."""
    path = os.fspath(path)
    return path if is_remote(path) else os.path.abspath(path)


def missing_library_message(path: str, error: ImportError) -> str:
    """What to install to reach `path`, after the ImportError its storage library raised."""
    scheme = path.split("://", 1)[0]
    if scheme in ("gs", "gcs"):
        detail = "" if "gcsfs" in str(error) else f" ({error})"
        return (
            f"{path}: reaching gs:// needs gcsfs, which this Python cannot import{detail}; "
            'install it with pip install "rekd-jax[tpu]" (or pip install gcsfs)'
        )
    return (
        f"{path}: reaching {scheme}:// needs a library this Python cannot import ({error}); "
        "install the package that message names"
    )


_T = TypeVar("_T")


def _remote(path, operation: Callable[[], _T]) -> _T:
    """`operation()` on the URL `path` (through etils.epath); a storage library that cannot be
    imported is StorageLibraryMissingError."""
    try:
        return operation()
    except ImportError as error:
        raise StorageLibraryMissingError(missing_library_message(os.fspath(path), error)) from error


def check_reachable(path) -> None:
    """StorageLibraryMissingError now, before any slow work, when `path` is a URL whose storage
    library cannot be imported (one lookup of the path); nothing for a local path."""
    if is_remote(path):
        exists(path)


_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """Logs `message` as a warning the first time `key` is seen in this process."""
    if key not in _warned:
        _warned.add(key)
        logging.warning(message)


def exists(path) -> bool:
    if is_remote(path):
        return _remote(path, lambda: epath.Path(path).exists())
    return os.path.lexists(path)


def isdir(path) -> bool:
    if is_remote(path):
        return _remote(path, lambda: epath.Path(path).is_dir())
    return os.path.isdir(path)


def listdir(path) -> list[str]:
    """Entry names of a folder (FileNotFoundError when it does not exist)."""
    if not is_remote(path):
        return os.listdir(path)
    if not isdir(path):
        raise FileNotFoundError(f"no folder {path}")
    return _remote(path, lambda: [p.name for p in epath.Path(path).iterdir()])


def makedirs(path) -> None:
    """mkdir -p (a no-op for object-store prefixes that need no folder object)."""
    if is_remote(path):
        _remote(path, lambda: epath.Path(path).mkdir(parents=True, exist_ok=True))
    else:
        os.makedirs(path, exist_ok=True)


def mtime(path) -> float:
    if is_remote(path):
        return _remote(path, lambda: float(epath.Path(path).stat().mtime))
    return os.path.getmtime(path)


def open_file(path, mode: str = "r"):
    """open() for local paths and URLs; text modes use UTF-8."""
    if is_remote(path):
        return _remote(path, lambda: epath.Path(path).open(mode))
    return open(path, mode, encoding=None if "b" in mode else "utf-8")


def read_text(path) -> str:
    with open_file(path, "r") as f:
        return f.read()


def read_bytes(path) -> bytes:
    with open_file(path, "rb") as f:
        return f.read()


def write_bytes(path, data: bytes) -> None:
    """Writes `data` completely to `path` (atomic: temp file + rename locally, one object
    upload on an object store)."""
    path = absolute(path)
    makedirs(posixpath.dirname(path) if is_remote(path) else os.path.dirname(path))
    if is_remote(path):
        with open_file(path, "wb") as f:
            f.write(data)
        return
    tmp = incomplete_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        named = with_path(error, path)
        if named is error:
            raise
        raise named from error


def remove_tree(path) -> None:
    """Removes a file or a folder tree (local or remote)."""
    if is_remote(path):
        p = epath.Path(path)
        _remote(path, lambda: p.rmtree() if p.is_dir() else p.unlink())
    else:
        _remove(path)


def rename(src, dst) -> None:
    """Moves `src` to a `dst` that does not exist. Atomic locally; on an object store it copies
    every object and deletes the source (not atomic)."""
    if is_remote(src) or is_remote(dst):
        _remote(src if is_remote(src) else dst, lambda: epath.Path(src).rename(dst))
    else:
        os.rename(src, dst)


def join(parent: str, name: str) -> str:
    """os.path.join for a local parent, posixpath.join for a URL."""
    return posixpath.join(parent, name) if is_remote(parent) else os.path.join(parent, name)


def _dirname(path: str) -> str:
    return posixpath.dirname(path.rstrip("/")) if is_remote(path) else os.path.dirname(path)


def _basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/")) if is_remote(path) else os.path.basename(path)


# ------------------------------------------------------------------ crash-safe outputs


def incomplete_path(target: str, role: str = "new", tag: str | None = None) -> str:
    """``<parent>/incomplete.<pid>.<host>.<role>.<name>`` for `target` (tag replaces pid.host)."""
    target = absolute(target)
    tag = tag or f"{os.getpid()}.{_host()}"
    return join(_dirname(target), f"{INCOMPLETE}{tag}.{role}.{_basename(target)}")


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


def _leftover_name(entry: str) -> tuple[int, str, str, str] | None:
    """(pid, host, role, name) of a name this module gives its temporary outputs
    (``incomplete.<pid>.<host>.<role>.<name>``), or None for any other name."""
    parts = entry.split(".", 4)
    if (
        len(parts) == 5
        and parts[0] + "." == INCOMPLETE
        and parts[1].isdigit()
        and parts[2]
        and parts[3] in ("new", "old")
        and parts[4]
    ):
        return int(parts[1]), parts[2], parts[3], parts[4]
    return None


def clean_incomplete(parent: str, log=logging.info) -> list[str]:
    """Removes the leftovers in `parent` of this project's own dead writers; returns (and logs)
    what it did.

    Only names of the exact form ``incomplete.<pid>.<host>.<role>.<name>`` whose process no
    longer runs on this host are touched: 'new' is removed, 'old' is moved back to <name> when
    <name> is missing (a swap cut in the middle), else removed. Anything else, such as a user's
    ``incomplete.drafts`` folder, is never touched; live builds and builds of other hosts are
    left alone.
    """
    done = []
    try:
        entries = sorted(listdir(parent))
    except FileNotFoundError:
        return done
    for entry in entries:
        leftover = _leftover_name(entry)
        if leftover is None:
            continue
        pid, host, role, name = leftover
        if host != _host() or pid_alive(pid):
            continue
        path, target = join(parent, entry), join(parent, name)
        if role == "old" and not exists(target):
            rename(path, target)
            done.append(f"restored {target} from {entry} (a replacement was cut short)")
            continue
        with contextlib.suppress(FileNotFoundError):
            remove_tree(path)
        done.append(f"removed the leftover {path} of an interrupted write (process {pid})")
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
    """Puts the complete `src` at `dst`; an existing `dst` stays valid until then (on an object
    store: until it is moved aside, just before `src` is copied in; see the module docstring)."""
    if not exists(dst):
        rename(src, dst)
        return
    if not is_remote(dst) and _exchange(src, dst):  # src now holds the old one
        _remove(src)
        return
    old = incomplete_path(dst, "old")
    rename(dst, old)  # a kill here is repaired by clean_incomplete (moves `old` back)
    rename(src, dst)
    remove_tree(old)


@contextlib.contextmanager
def atomic_dir(
    target: str,
    *,
    overwrite: bool = True,
    what: str = "output",
    flag: str = "--overwrite",
    primary: bool = True,
    tag: str | None = None,
) -> Iterator[str]:
    """Yields an empty folder beside `target`; on success it replaces `target`.

    overwrite=False refuses an existing target (AlreadyExistsError naming `flag`), checked
    before and after the build. primary=False (other processes of a multi-host save) only
    yields the path: the primary creates, cleans and renames it, so the caller gives every
    process the same `tag` (the default tag holds this process's pid).
    """
    target = absolute(target)
    parent = _dirname(target)

    def refuse_existing():
        if not overwrite and exists(target):
            raise AlreadyExistsError(
                f"{what} {target} already exists; pass {flag} to replace it (the "
                "old one stays in place until the new one is complete)"
            )

    refuse_existing()
    tmp = incomplete_path(target, "new", tag)
    if not primary:
        yield tmp
        return
    if is_remote(target):
        warn_once(
            "atomic_dir",
            f"{what} {target}: an object store cannot rename a folder "
            "atomically, so it is built beside its target and then copied into place; a "
            "reader may see it partly copied until the copy is done (this warning is shown "
            "once)",
        )
    makedirs(parent)
    clean_incomplete(parent)
    if exists(tmp):
        remove_tree(tmp)
    makedirs(tmp)
    try:
        yield tmp
        refuse_existing()
        replace_path(tmp, target)
    except BaseException as error:
        with contextlib.suppress(OSError):
            if exists(tmp):
                remove_tree(tmp)
        named = with_path(error, target)
        if named is error:
            raise
        raise named from error


def with_path(error: BaseException, path: str) -> BaseException:
    """`error`, or for an OSError that names no file (e.g. a full disk met inside a library's
    writer) the same error naming `path`, the output being written."""
    if isinstance(error, OSError) and error.filename is None and error.errno is not None:
        named = type(error)(error.errno, error.strerror or str(error), path)
        named.__cause__ = error
        return named
    return error


def write_text(path: str, text: str) -> None:
    """Writes `text` (UTF-8) completely to `path` (see write_bytes)."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj: Any, **kwargs) -> None:
    write_text(path, json.dumps(obj, **{"indent": 2, **kwargs}) + "\n")
