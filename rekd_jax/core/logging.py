"""Metric writers: clu (TensorBoard + console) when TensorFlow is importable, else console only;
JSON lines in WORKDIR/metrics.jsonl always. Generic: knows nothing about training.

API::

    writer = create_writer(workdir, is_primary=True, tensorboard='auto')
    writer.write_scalars(step, {'train/loss': 1.2, ...})   # floats / 0-d arrays
    writer.write_hparams({'lr': 0.1, ...})                  # flat JSON-able dict
    writer.flush(); writer.close()
    read_jsonl(path) -> list[dict]                          # every record, in order
    trim_metrics(path, step)    # a resumed run: drop records after its restored step

Each JSON line is {"step": int, "time": unix seconds, "<name>": value, ...}. Only the primary
process (is_primary) writes files; the others log nothing, so multi-host runs write one copy.
`tensorboard`: 'auto' uses clu when TensorFlow is importable, 'on' requires it, 'off' never.

The console: `setup_console()` gives log lines a plain "HH:MM:SS message" format (absl's
"I1205 01:42:28.500334 139906263821184 progress.py:130]" prefix only with prefix=True), and
metric lines hold at most METRIC_LINE_CHARS characters (the first metrics by METRIC_ORDER; every
value is in metrics.jsonl).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from absl import flags as absl_flags
from absl import logging as absl_logging

from rekd_jax.core import errors, fileio
from rekd_jax.core import progress as progress_lib

METRIC_LINE_CHARS = 120
# Metrics shown first on a console line (by the last part of their name); the rest follow in
# name order while the line has room.
METRIC_ORDER = ("loss", "top1", "learning_rate", "epoch", "images_per_sec")
_SHORT_NAMES = {"learning_rate": "lr", "images_per_sec": "img/s"}
# Library warnings about this project's own, deliberate choices (TFDS: images are decoded with
# PIL, which is what the loader's worker threads use).
_KNOWN_WARNINGS = ("OpenCV is not installed",)


class _LibraryInfoFilter(logging.Filter):
    """Drops the INFO/DEBUG records of third-party libraries (JAX's backend probing, TFDS's
    builder and writer lines, Orbax's several lines per save); their warnings and errors, and
    every record of this project, still pass. --verbosity=1 (or more) lets everything through."""

    def filter(self, record: logging.LogRecord) -> bool:
        if absl_logging.get_verbosity() >= 1:
            return True
        path = record.pathname.replace(os.sep, "/")
        if "/rekd_jax/" in path or path.endswith("/main.py"):
            return True
        if record.levelno >= logging.WARNING:
            return not (str(record.msg).startswith(_KNOWN_WARNINGS) or _reports_disk_full(record))
        return False


def _reports_disk_full(record: logging.LogRecord) -> bool:
    """A library's report of a full disk (Orbax's background savers, asyncio's 'Task exception
    was never retrieved'): the command reports it once, in its FATAL line."""
    error = record.exc_info[1] if record.exc_info else None
    if error is not None:
        return errors.is_disk_full(error)
    return errors.is_disk_full(Exception(str(record.msg)))


class PlainFormatter(logging.Formatter):
    """'HH:MM:SS message' ('HH:MM:SS WARNING: message' above INFO), tracebacks appended."""

    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = "" if record.levelno <= logging.INFO else f"{record.levelname}: "
        text = f"{when} {level}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_console(*, prefix: bool = False, command_line: bool = False) -> None:
    """Console logging for a run (idempotent): the plain format (absl's prefix with `prefix`)
    and INFO lines of this project. On the command line (after absl's flags are parsed) absl's
    handler is used; from Python (app.run in a script or notebook, the argparse tools) a stderr
    handler is put on the root logger when logging is not set up yet (no handler, or only the
    default one that absl's first log call adds through logging.basicConfig), so progress
    shows as on the command line; logging set up by the caller is left as it is."""
    formatter = absl_logging.PythonFormatter() if prefix else PlainFormatter()
    if command_line:
        absl_logging.use_absl_handler()
        absl_logging.get_absl_handler().setFormatter(formatter)
        if absl_flags.FLAGS["verbosity"].using_default_value:  # INFO, as absl.app does
            absl_flags.FLAGS.verbosity = 0
    elif _logging_not_set_up():
        for default in list(logging.root.handlers):
            logging.root.removeHandler(default)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        logging.root.addHandler(handler)
        logging.root.setLevel(logging.INFO)
    quiet_library_logs()


def _logging_not_set_up() -> bool:
    """No root handler, or only logging.basicConfig()'s default one (stderr, BASIC_FORMAT)."""
    handlers = logging.root.handlers
    if not handlers:
        return True
    handler = handlers[0]
    plain_stream_handler = type(handler) is logging.StreamHandler  # not a subclass: a file's
    return (
        len(handlers) == 1
        and plain_stream_handler
        and handler.stream in (sys.stderr, sys.__stderr__)
        and getattr(handler.formatter, "_fmt", None) in (None, logging.BASIC_FORMAT)
    )


def quiet_library_logs() -> None:
    """Keeps the console to this project's own lines (idempotent): library INFO lines are
    filtered (see _LibraryInfoFilter) and TFDS's progress bars only go to a terminal."""
    targets = [
        absl_logging.get_absl_logger(),
        absl_logging.get_absl_handler(),
        *logging.root.handlers,
    ]
    for target in targets:
        if not any(isinstance(f, _LibraryInfoFilter) for f in target.filters):
            target.addFilter(_LibraryInfoFilter())
    if not progress_lib.on_terminal():
        import tensorflow_datasets as tfds  # here only: importing TFDS takes seconds

        tfds.disable_progress_bar()


def tensorflow_available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _scalar(value: Any) -> float:
    return float(np.asarray(value).reshape(()))


class JsonlWriter:
    """Appends one JSON object per write to `path` (resume-friendly: never truncates). Each
    record is handed to the OS (or the object store) when written, so a record logged just
    before a checkpoint survives a SIGKILL or a preemption that follows it.

    On an object store (gs://...), which cannot append, each write reads the object, adds the
    line and writes it back whole (only the primary process writes)."""

    def __init__(self, path: str):
        self.path = path
        self._remote = fileio.is_remote(path)
        self._pending: list[str] = []
        if self._remote:
            fileio.makedirs(os.path.dirname(path))
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")

    def _write(self, line: str) -> None:
        if self._remote:
            self._pending.append(line)
        else:
            self._file.write(line)
        self.flush()

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        record = {"step": int(step), "time": time.time()}
        record.update({k: _scalar(v) for k, v in scalars.items()})
        self._write(json.dumps(record) + "\n")

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        self._write(json.dumps({"hparams": dict(hparams)}, default=str) + "\n")

    def flush(self) -> None:
        if not self._remote:
            self._file.flush()
            return
        if self._pending:
            old = fileio.read_bytes(self.path) if fileio.exists(self.path) else b""
            if old and not old.endswith(b"\n"):
                old += b"\n"  # a torn last line stays a line of its own (read_jsonl skips it)
            fileio.write_bytes(self.path, old + "".join(self._pending).encode("utf-8"))
            self._pending.clear()

    def close(self) -> None:
        self.flush()
        if not self._remote:
            self._file.close()


def metric_line(step: int, scalars: Mapping[str, Any], width: int = METRIC_LINE_CHARS) -> str:
    """'[step] loss=.. knn/top1=.. lr=.. ...': the metrics of METRIC_ORDER first (by the last
    part of their name), then the others by name, each while the line stays within `width`
    characters; names lose their 'train/' prefix."""
    leaf = lambda name: name.rsplit("/", 1)[-1]
    rank = lambda name: (
        METRIC_ORDER.index(leaf(name)) if leaf(name) in METRIC_ORDER else len(METRIC_ORDER),
        name,
    )
    line = f"[{int(step)}]"
    for name in sorted(scalars, key=rank):
        short = name.removeprefix("train/")
        item = f" {_SHORT_NAMES.get(short, short)}={_scalar(scalars[name]):.4g}"
        if len(line) + len(item) <= width:
            line += item
    return line


class ConsoleWriter:
    """Logs scalars through absl logging, at most one line every `every_secs` (the latest
    record; the one still held back is logged at close()), so that a run logs about one line
    per 30 s however fast its epochs or log intervals are; each line holds the main metrics in
    at most METRIC_LINE_CHARS characters (metric_line). Hparams are not logged: the resolved
    config is WORKDIR/config.json."""

    def __init__(self, every_secs: float = progress_lib.EVERY_SECS, clock=time.monotonic):
        self.every_secs = every_secs
        self._clock = clock
        self._last = None
        self._pending = None

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        text = metric_line(step, scalars)
        now = self._clock()
        if self._last is not None and now - self._last < self.every_secs:
            self._pending = text
            return
        self._last, self._pending = now, None
        absl_logging.info("%s", text)

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._pending is not None:
            absl_logging.info("%s", self._pending)
            self._pending = None


class MultiWriter:
    """Forwards every call to several writers."""

    def __init__(self, writers):
        self.writers = list(writers)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        scalars = {k: _scalar(v) for k, v in scalars.items()}
        for w in self.writers:
            w.write_scalars(step, scalars)

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        for w in self.writers:
            w.write_hparams(hparams)

    def flush(self) -> None:
        for w in self.writers:
            w.flush()

    def close(self) -> None:
        for w in self.writers:
            w.close()


def create_writer(workdir: str, *, is_primary: bool = True, tensorboard: str = "auto"):
    """JSON lines + (clu TensorBoard/console writer | console writer); nothing off-primary."""
    if tensorboard not in ("auto", "on", "off"):
        raise ValueError(f"tensorboard={tensorboard!r}: use 'auto', 'on' or 'off'")
    if not is_primary:
        return MultiWriter([])
    use_clu = tensorboard == "on" or (tensorboard == "auto" and tensorflow_available())
    if use_clu:
        if not tensorflow_available():
            raise ValueError(
                "tensorboard='on' needs TensorFlow: pip install -r requirements-tf.txt, "
                "or set tensorboard='auto'"
            )
        from clu import metric_writers  # imports TensorFlow

        writers = [
            ConsoleWriter(),  # rate-limited, instead of clu's line per write
            metric_writers.AsyncMultiWriter([metric_writers.SummaryWriter(workdir)]),
        ]
    else:
        writers = [ConsoleWriter()]
    return MultiWriter(writers + [JsonlWriter(os.path.join(workdir, "metrics.jsonl"))])


def read_jsonl(path: str) -> list[dict]:
    """All records of a metrics.jsonl file (empty list if it does not exist). A torn last line
    (a run killed mid-write) is skipped; a malformed line elsewhere raises ValueError naming it."""
    if not fileio.exists(path):
        return []
    text = fileio.read_bytes(path).decode("utf-8", errors="replace")
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    records = []
    for i, (number, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError as e:
            if i == len(lines) - 1:
                break
            raise ValueError(
                f"{path} line {number} is not JSON ({e}); repair or delete that "
                "line (a run resumed in this workdir drops torn lines itself)"
            ) from None
    return records


def trim_metrics(path: str, step: int, *, keep_hparams: bool = True) -> int:
    """Rewrites the JSON-lines file at `path` in place without records of steps after `step`
    and without unparsable (torn) lines (and without the hparams record unless keep_hparams:
    a fresh start writes it again); returns how many lines it dropped. In place (not a
    rename), so a writer that has the file open for appending keeps writing to it. On an
    object store the object is rewritten whole (its writer holds no open file there)."""
    if not fileio.exists(path):
        return 0

    def keep(lines):
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not line.endswith(b"\n") or not isinstance(record, dict):
                continue
            if record.get("step", -1) > step or ("hparams" in record and not keep_hparams):
                continue
            kept.append(line)
        return kept

    if fileio.is_remote(path):
        lines = fileio.read_bytes(path).splitlines(keepends=True)
        kept = keep(lines)
        if len(kept) == len(lines):
            return 0
        fileio.write_bytes(path, b"".join(kept))
    else:
        with open(path, "r+b") as f:
            lines = f.read().splitlines(keepends=True)
            kept = keep(lines)
            if len(kept) == len(lines):
                return 0
            f.seek(0)
            f.write(b"".join(kept))
            f.truncate()
            f.flush()
            os.fsync(f.fileno())
    dropped = len(lines) - len(kept)
    absl_logging.info(
        "metrics: dropped %d records logged after the restored step %d from %s", dropped, step, path
    )
    return dropped
