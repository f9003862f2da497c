"""Metric writers: clu (TensorBoard + console) when TensorFlow is importable, else console only;
JSON lines in WORKDIR/metrics.jsonl always. Generic: knows nothing about training.

API::

    writer = create_writer(workdir, is_primary=True, tensorboard='auto')
    writer.write_scalars(step, {'train/loss': 1.2, ...})   # floats / 0-d arrays
    writer.write_hparams({'lr': 0.1, ...})                  # flat JSON-able dict
    writer.flush(); writer.close()
    progress = create_progress(num_train_steps, writer, every_secs=60.0)
    progress(step)      # reports steps/s and ETA (clu.periodic_actions.ReportProgress with TF)
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


class _LibraryInfoFilter(logging.Filter):
    """Drops INFO/DEBUG records that third-party libraries (Orbax: several lines per save) send
    through absl's logger; their warnings and errors still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "orbax" not in record.pathname


def quiet_library_logs() -> None:
    """Keeps the console to this project's own lines (idempotent)."""
    logger = absl_logging.get_absl_logger()
    if not any(isinstance(f, _LibraryInfoFilter) for f in logger.filters):
        logger.addFilter(_LibraryInfoFilter())


def tensorflow_available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _scalar(value: Any) -> float:
    return float(np.asarray(value).reshape(()))


class JsonlWriter:
    """Appends one JSON object per write to `path` (resume-friendly: never truncates)."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._file = open(path, "a", encoding="utf-8")

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        record = {"step": int(step), "time": time.time()}
        record.update({k: _scalar(v) for k, v in scalars.items()})
        self._file.write(json.dumps(record) + "\n")

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        self._file.write(json.dumps({"hparams": dict(hparams)}, default=str) + "\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class ConsoleWriter:
    """Logs scalars through absl logging (what clu's LoggingWriter does, without TF)."""

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        text = ", ".join(f"{k}={_scalar(v):.5g}" for k, v in sorted(scalars.items()))
        absl_logging.info("[%d] %s", int(step), text)

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        absl_logging.info("hparams: %s", dict(hparams))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


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
        main = metric_writers.create_default_writer(workdir, asynchronous=True)
    else:
        main = ConsoleWriter()
    return MultiWriter([main, JsonlWriter(os.path.join(workdir, "metrics.jsonl"))])


class _Progress:
    """Steps/s and ETA every `every_secs` seconds (fallback for clu's ReportProgress)."""

    def __init__(self, num_train_steps: int, writer, every_secs: float):
        self.num_train_steps = num_train_steps
        self.writer = writer
        self.every_secs = every_secs
        self._last_time = None
        self._last_step = None

    def __call__(self, step: int) -> None:
        now = time.time()
        if self._last_time is None:
            self._last_time, self._last_step = now, step
            return
        if now - self._last_time < self.every_secs or step == self._last_step:
            return
        rate = (step - self._last_step) / (now - self._last_time)
        self.writer.write_scalars(step, {"steps_per_sec": rate})
        eta_min = (self.num_train_steps - step) / max(rate, 1e-9) / 60
        absl_logging.info("step %d/%d: %.3g steps/s, ETA %.1f min",
                          step, self.num_train_steps, rate, eta_min)
        self._last_time, self._last_step = now, step


def create_progress(num_train_steps: int, writer, *, every_secs: float = 60.0):
    """clu.periodic_actions.ReportProgress with TensorFlow, else the same report without it."""
    if tensorflow_available():
        from clu import periodic_actions
        return periodic_actions.ReportProgress(
            num_train_steps=num_train_steps, writer=writer, every_secs=every_secs)
    return _Progress(num_train_steps, writer, every_secs)


def read_jsonl(path: str) -> list[dict]:
    """All records of a metrics.jsonl file (empty list if it does not exist). A torn last line
    (a run killed mid-write) is skipped; a malformed line elsewhere raises ValueError naming it."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
    records = []
    for i, (number, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError as e:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path} line {number} is not JSON ({e})") from None
    return records
