"""The record a run leaves in its workdir, and the mode of run a workdir holds.

  config.json       the resolved config (written atomically at the start of every run)
  teacher.json      the offline teacher really loaded: checkpoint, arch, overrides, source, step
  train_time.json   training seconds summed over the run and its resumes (a rerun of a finished
                    run adds nothing)

A workdir holds one kind of run: a run whose config.mode differs from the mode of the run the
workdir holds (an evaluation pointed at a pre-training workdir, say) stops with
WorkdirModeError before it writes anything there. What a run leaves decides that mode, whatever
config.json says or whether it is there at all (workdir_mode). The records are read by their
form, so no mode is named here: a file or folder named after its mode (`results_<mode>.json`,
`ckpt_<mode>/`), the mode a training run states in the first record of metrics.jsonl, and
config.json's mode.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from typing import Any

import ml_collections
from absl import logging

from rekd_jax.core import fileio

CONFIG_FILE = "config.json"
TEACHER_FILE = "teacher.json"
TRAIN_TIME_FILE = "train_time.json"


def write_json_atomic(path: str, value: Any) -> None:
    """Writes JSON through a temporary file and os.replace (never a torn file)."""
    fileio.write_json(path, value, sort_keys=True, default=str)


def read_json(path: str, default: Any = None) -> Any:
    if not fileio.exists(path):
        return default
    return json.loads(fileio.read_text(path))


class WorkdirModeError(ValueError):
    """The workdir holds a run of another mode (the message names a workdir to use instead)."""


METRICS_FILE = "metrics.jsonl"
# What a training run leaves besides config.json: checkpoints, its run signature
# (rekd_jax.training.resume.SIGNATURE_FILE) and its training clock. None names its mode.
TRAINING_RECORDS = ("checkpoints/", "run_signature.json", TRAIN_TIME_FILE)
# Records named after the mode of the run that wrote them: results_<mode>.json, ckpt_<mode>/.
_NAMED_RECORD = re.compile(r"^(?:results_(?P<result>\w+)\.json|ckpt_(?P<checkpoints>\w+))$")


def _has_entries(path: str) -> bool:
    return fileio.isdir(path) and bool(fileio.listdir(path))


def _present(workdir: str, record: str) -> bool:
    """A file that exists, or (for a name ending in '/') a folder with entries."""
    path = os.path.join(workdir, record.rstrip("/"))
    return _has_entries(path) if record.endswith("/") else fileio.exists(path)


def _metrics_mode(path: str) -> str | None:
    """The mode stated by the 'hparams' record of metrics.jsonl (a training run writes one
    before its first step), None without one."""
    if not fileio.exists(path):
        return None
    with fileio.open_file(path, "r") as f:
        try:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:  # a torn line
                    continue
                hparams = record.get("hparams") if isinstance(record, dict) else None
                if isinstance(hparams, dict) and hparams.get("mode"):
                    return str(hparams["mode"])
        except UnicodeDecodeError:  # not a metrics file this project wrote
            pass
    return None


def _config_mode(workdir: str) -> str | None:
    try:
        recorded = read_json(os.path.join(workdir, CONFIG_FILE), {})
    except ValueError:  # a torn or foreign config.json records no mode
        return None
    mode = recorded.get("mode") if isinstance(recorded, dict) else None
    return str(mode) if mode else None


def _named_records(workdir: str) -> list[tuple[str, str]]:
    """(mode, record) of every results_<mode>.json and non-empty ckpt_<mode>/ in WORKDIR."""
    if not fileio.isdir(workdir):
        return []
    found = []
    for entry in sorted(fileio.listdir(workdir)):
        match = _NAMED_RECORD.match(entry.rstrip("/"))
        if not match:
            continue
        if match.group("result") and fileio.exists(os.path.join(workdir, entry)):
            found.append((match.group("result"), entry))
        elif match.group("checkpoints") and _has_entries(os.path.join(workdir, entry)):
            found.append((match.group("checkpoints"), entry.rstrip("/") + "/"))
    return sorted(found, key=lambda item: not item[1].startswith("results_"))


def workdir_mode(workdir: str) -> tuple[str, str] | None:
    """(mode, the file that shows it) of the run WORKDIR holds; None for a new or empty one.

    What a run leaves decides, in this order: the records of a training run (TRAINING_RECORDS:
    their mode is the one metrics.jsonl's first record states, else config.json's); a
    results_<mode>.json or a non-empty ckpt_<mode>/; the mode metrics.jsonl states.
    config.json's mode counts alone only when none of these is there, so a deleted or rewritten
    config.json never hands a workdir to another mode.
    """
    stated = _metrics_mode(os.path.join(workdir, METRICS_FILE))
    for record in TRAINING_RECORDS:
        if _present(workdir, record):
            mode = stated or _config_mode(workdir)
            return (mode, record) if mode else None
    named = _named_records(workdir)
    if named:
        return named[0]
    if stated:
        return stated, METRICS_FILE
    mode = _config_mode(workdir)
    return (mode, CONFIG_FILE) if mode else None


def check_mode(
    workdir: str, config: ml_collections.ConfigDict, suggested_folder: str | None = None
) -> None:
    """WorkdirModeError when WORKDIR holds a run of another mode than config's (workdir_mode);
    the message suggests WORKDIR/`suggested_folder` (default: the mode's name) instead."""
    found = workdir_mode(workdir)
    mode = config.get("mode")
    if found and found[0] != mode:
        recorded, evidence = found
        suggestion = os.path.join(fileio.absolute(workdir), suggested_folder or str(mode))
        raise WorkdirModeError(
            f"workdir {workdir} holds a {recorded} run (its {evidence}), not a {mode} run; "
            f"give this run its own --workdir, e.g. --workdir={suggestion}"
        )


def write_config(
    workdir: str, config: ml_collections.ConfigDict, suggested_folder: str | None = None
) -> str:
    """WORKDIR/config.json: the resolved config of this run (WorkdirModeError, and nothing
    written, when the workdir holds a run of another mode; see check_mode)."""
    check_mode(workdir, config, suggested_folder)
    path = os.path.join(workdir, CONFIG_FILE)
    write_json_atomic(path, config.to_dict())
    return path


def teacher_record(checkpoint: str, spec: Mapping[str, Any]) -> dict:
    """What was loaded as the offline teacher: arch, overrides, source and step (from the
    'source' of its spec, e.g. 'rekd_jax mocov2 step 600'; None when the source has no step)."""
    source = str(spec.get("source", ""))
    match = re.search(r"step (\d+)", source)
    return {
        "checkpoint": fileio.absolute(checkpoint),
        "arch": spec.get("arch"),
        "overrides": dict(spec.get("overrides") or {}),
        "source": source,
        "step": int(match.group(1)) if match else None,
    }


def record_teacher(
    workdir: str, checkpoint: str, spec: Mapping[str, Any], config_arch: str | None = None
) -> dict:
    """Logs the teacher really loaded and saves it as WORKDIR/teacher.json (the checkpoint's
    spec decides the architecture; a different config.teacher.arch, unused, is noted at
    --verbosity=1: recipes keep their default teacher arch when a checkpoint is given)."""
    record = teacher_record(checkpoint, spec)
    logging.info(
        "offline teacher: %s %s from %s (source: %s)",
        record["arch"],
        record["overrides"],
        record["checkpoint"],
        record["source"] or "unknown",
    )
    if config_arch and config_arch != record["arch"]:
        logging.vlog(
            1, "config.teacher.arch=%r is not used: the checkpoint's arch decides", config_arch
        )
    write_json_atomic(os.path.join(workdir, TEACHER_FILE), record)
    return record


class TrainClock:
    """Training seconds of a workdir, summed over its resumes (WORKDIR/train_time.json).

    `save()` stores earlier seconds + the seconds since this clock started; call it at each
    checkpoint and at the end of a run that trained. A run that trains no step never saves,
    so rerunning a finished run leaves the total as it was.
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, TRAIN_TIME_FILE)
        self.before = float(read_json(self.path, {}).get("train_seconds", 0.0))
        self._t0 = time.time()

    def total(self) -> float:
        return self.before + (time.time() - self._t0)

    def save(self) -> float:
        seconds = round(self.total(), 1)
        write_json_atomic(self.path, {"train_seconds": seconds})
        return seconds
