"""Metric writers: clu (TensorBoard + console) when TensorFlow is importable, else console only;
JSON lines in WORKDIR/metrics.jsonl always. Generic: knows nothing about training.

API::

    writer = create_writer(workdir, is_primary=True, tensorboard='auto')
    writer.write_scalars(step, {'train/loss': 1.2, ...})   # floats / 0-d arrays
    writer.write_hparams({'lr': 0.1, ...})                  # flat JSON-able dict
    writer.flush(); writer.close()
    read_jsonl(path) -> list[dict]                          # every record, in order

Each JSON line is {"step": int, "time": unix seconds, "<name>": value, ...}. Only the primary
process (is_primary) writes files; the others log nothing, so multi-host runs write one copy.
`tensorboard`: 'auto' uses clu when TensorFlow is importable, 'on' requires it, 'off' never.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from typing import Any, Mapping

import numpy as np
from absl import logging as absl_logging

from rekd_jax.core import fileio
from rekd_jax.core import progress as progress_lib


class _LibraryInfoFilter(logging.Filter):
    """Drops the INFO/DEBUG records of third-party libraries (JAX's backend probing, TFDS's
    builder and writer lines, Orbax's several lines per save); their warnings and errors, and
    every record of this project, still pass. --verbosity=1 (or more) lets everything through."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or absl_logging.get_verbosity() >= 1:
            return True
        path = record.pathname.replace(os.sep, "/")
        return "/rekd_jax/" in path or path.endswith("/main.py")


def quiet_library_logs() -> None:
    """Keeps the console to this project's own lines (idempotent): library INFO lines are
    filtered (see _LibraryInfoFilter) and TFDS's progress bars only go to a terminal."""
    for target in (absl_logging.get_absl_logger(), absl_logging.get_absl_handler()):
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


class ConsoleWriter:
    """Logs scalars through absl logging, at most one line every `every_secs` (the latest
    record; the one still held back is logged at close()), so that a run logs about one line
    per 30 s however fast its epochs or log intervals are. Hparams are not logged: the
    resolved config is WORKDIR/config.json."""

    def __init__(self, every_secs: float = progress_lib.EVERY_SECS, clock=time.monotonic):
        self.every_secs = every_secs
        self._clock = clock
        self._last = None
        self._pending = None

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        text = ", ".join(f"{k}={_scalar(v):.5g}" for k, v in sorted(scalars.items()))
        now = self._clock()
        if self._last is not None and now - self._last < self.every_secs:
            self._pending = (int(step), text)
            return
        self._last, self._pending = now, None
        absl_logging.info("[%d] %s", int(step), text)

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._pending is not None:
            absl_logging.info("[%d] %s", *self._pending)
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
            raise ValueError("tensorboard='on' needs TensorFlow: pip install -r requirements-tf.txt, "
                             "or set tensorboard='auto'")
        from clu import metric_writers  # imports TensorFlow
        writers = [ConsoleWriter(),  # rate-limited, instead of clu's line per write
                   metric_writers.AsyncMultiWriter([metric_writers.SummaryWriter(workdir)])]
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
            raise ValueError(f"{path} line {number} is not JSON ({e})") from None
    return records
