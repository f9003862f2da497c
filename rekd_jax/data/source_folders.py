"""The source folder of `rekd_jax.data.prepare`: its splits, classes and image files, and every
file or folder that is not used, with its reason (see that module's docstring for the layouts
and the reasons)."""

from __future__ import annotations

import errno
import os

SPLIT_NAMES = {"val": "validation"}


class PrepareError(ValueError):
    """The source folder cannot be turned into a dataset (message says why and the fix)."""


def os_reason(error: OSError) -> str:
    if error.errno in (errno.EACCES, errno.EPERM):
        return "permission"
    if error.errno == errno.ELOOP:
        return "symlink_loop"
    if error.errno == errno.ENOENT:
        return "broken_link"
    return "unreadable"


def printable(path: str) -> str:
    """`path` with the bytes that are not valid UTF-8 and the control characters escaped (e.g.
    'caf\\xe9.png', 'a\\nb')."""
    text = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(
        c.encode("unicode_escape").decode() if ord(c) < 32 or ord(c) == 127 else c for c in text
    )


def bad_name(name: str) -> bool:
    """A file or folder name TFDS cannot store: not valid UTF-8, or with a control character."""
    return printable(name) != name


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def _walk(top: str, src: str, skipped: list) -> list[str]:
    """Every file under the class folder `top` (sorted, following symlinked folders once each
    while they stay inside `top`: a link that leaves it would store other folders' images under
    this class); folders and entries that cannot be read or are not followed are added to
    `skipped` with their reason."""
    files, seen = [], set()
    real_top = os.path.realpath(top)

    def skip(path, reason, detail=""):
        skipped.append(
            {"path": printable(os.path.relpath(path, src)), "reason": reason, "detail": detail}
        )

    def visit(path):
        try:
            st = os.stat(path)
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as e:
            return skip(path, os_reason(e), e.strerror or str(e))
        if (st.st_dev, st.st_ino) in seen:
            return skip(path, "symlink_loop", "a folder link back to a folder already read")
        seen.add((st.st_dev, st.st_ino))
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows links; False for broken links and loops
            except OSError as e:
                skip(entry.path, os_reason(e), e.strerror or str(e))
                continue
            target = os.path.realpath(entry.path) if is_dir and entry.is_symlink() else None
            if bad_name(entry.name):
                skip(
                    entry.path,
                    "bad_name",
                    "the name is not valid UTF-8 or holds a control character",
                )
            elif target is not None and _inside(real_top, target):
                skip(entry.path, "symlink_loop", "a folder link up to a folder holding its class")
            elif target is not None and not _inside(target, real_top):
                skip(
                    entry.path,
                    "link_outside_class",
                    f"a folder link to {printable(target)}, outside its class folder: its "
                    "images would be labelled with this class",
                )
            elif is_dir:
                visit(entry.path)
            else:
                files.append(entry.path)

    visit(top)
    return files


def scan(src: str):
    """Find splits, classes and files: ({split: [(path, relative, class)]}, classes, skipped)."""
    if not os.path.isdir(src):
        raise PrepareError(
            f"--src {src!r} is not a directory; point it at a folder of class "
            "subfolders (DIR/<class>/*.jpg) or split folders (DIR/train/<class>/*)"
        )
    skipped = []

    def listdir(path):
        try:
            return sorted(os.listdir(path))
        except OSError as e:
            raise PrepareError(
                f"cannot read {path!r} ({e.strerror}); fix its permissions or point --src elsewhere"
            ) from None

    def subdirs(path):
        found = []
        for d in listdir(path):
            if not os.path.isdir(os.path.join(path, d)) or d.startswith("."):
                continue
            if bad_name(d):
                entry = {
                    "path": printable(os.path.relpath(os.path.join(path, d), src)),
                    "reason": "bad_name",
                    "detail": "a folder name that is not valid UTF-8 or holds a control character",
                }
                if entry not in skipped:
                    skipped.append(entry)
                continue
            found.append(d)
        return found

    train = os.path.join(src, "train")
    if os.path.isdir(train) and os.access(train, os.R_OK | os.X_OK) and subdirs(train):
        split_dirs = {}
        for entry in listdir(src):
            path = os.path.join(src, entry)
            if os.path.isdir(path) and not os.access(path, os.R_OK | os.X_OK):
                skipped.append(
                    {"path": entry, "reason": "permission", "detail": "folder not readable"}
                )
            elif os.path.isdir(path) and not bad_name(entry) and subdirs(path):
                split_dirs[SPLIT_NAMES.get(entry, entry)] = path
            else:
                skipped.append({"path": printable(entry), "reason": "outside_layout"})
    else:
        split_dirs = {"train": src}
    classes = sorted({c for path in split_dirs.values() for c in subdirs(path)})
    if not classes:
        raise PrepareError(
            f"no class subfolders in {src!r}; expected DIR/<class>/*.jpg or DIR/train/<class>/*.jpg"
        )
    splits = {}
    for split, split_dir in split_dirs.items():
        files = []
        for entry in listdir(split_dir):
            if not os.path.isdir(os.path.join(split_dir, entry)):
                skipped.append(
                    {
                        "path": printable(os.path.relpath(os.path.join(split_dir, entry), src)),
                        "reason": "outside_layout",
                    }
                )
        for cls in subdirs(split_dir):
            for path in _walk(os.path.join(split_dir, cls), src, skipped):
                files.append((path, os.path.relpath(path, split_dir), cls))
        splits[split] = files
    return splits, classes, skipped
