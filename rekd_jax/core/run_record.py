"""The record a run leaves in its workdir, and the summary it prints at the end.

  config.json       the resolved config (written atomically at the start of every run)
  teacher.json      the offline teacher really loaded: checkpoint, arch, overrides, source, step
  train_time.json   training seconds summed over the run and its resumes (a rerun of a finished
                    run adds nothing)

`closing_summary(config, workdir, result)` is the text every command ends with: what was
written, the key numbers, and the next command to run, as the user runs commands where they are
(`python main.py` in a clone, `rekd-jax` after pip install: rekd_jax.core.config_lookup).

A workdir holds one kind of run: a run whose mode differs from the mode of the run the workdir
holds (an evaluation pointed at a pre-training workdir, say) stops with WorkdirModeError before
it writes anything there. What a run leaves decides that mode, whatever config.json says or
whether it is there at all (workdir_mode).
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

from rekd_jax.core import config_lookup, fileio

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


EVALUATION_MODES = ("linear", "conv_probe", "knn", "semi_supervised")
METRICS_FILE = "metrics.jsonl"
# What a pre-training run leaves besides config.json (rekd_jax.training.resume.SIGNATURE_FILE).
_PRETRAIN_RECORDS = ("run_signature.json", TRAIN_TIME_FILE)


def _has_entries(path: str) -> bool:
    return fileio.isdir(path) and bool(fileio.listdir(path))


def _metrics_mode(path: str) -> str | None:
    """The mode whose records fill metrics.jsonl: the 'hparams' record's mode, 'pretrain' for
    train/* records, else the first evaluation mode a record's key starts with."""
    if not fileio.exists(path):
        return None
    found = None
    with fileio.open_file(path, "r") as f:
        try:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:  # a torn line
                    continue
                if not isinstance(record, dict):
                    continue
                hparams = record.get("hparams")
                if isinstance(hparams, dict) and hparams.get("mode"):
                    return str(hparams["mode"])
                prefixes = sorted({key.split("/")[0] for key in record if "/" in key})
                if "train" in prefixes:
                    return "pretrain"
                found = found or next((p for p in prefixes if p in EVALUATION_MODES), None)
        except UnicodeDecodeError:  # not a metrics file this project wrote
            pass
    return found


def workdir_mode(workdir: str) -> tuple[str, str] | None:
    """(mode, the file that shows it) of the run WORKDIR holds; None for a new or empty one.

    What a run leaves decides, in this order: a non-empty checkpoints/, run_signature.json or
    train_time.json (pre-training); results_<mode>.json or a non-empty ckpt_<mode>/ (an
    evaluation); the records of metrics.jsonl. config.json's mode counts only when none of these
    is there, so a deleted or rewritten config.json never hands a workdir to another mode.
    """
    if _has_entries(os.path.join(workdir, "checkpoints")):
        return "pretrain", "checkpoints/"
    for name in _PRETRAIN_RECORDS:
        if fileio.exists(os.path.join(workdir, name)):
            return "pretrain", name
    for mode in EVALUATION_MODES:
        if fileio.exists(os.path.join(workdir, f"results_{mode}.json")):
            return mode, f"results_{mode}.json"
        if _has_entries(os.path.join(workdir, f"ckpt_{mode}")):
            return mode, f"ckpt_{mode}/"
    mode = _metrics_mode(os.path.join(workdir, METRICS_FILE))
    if mode:
        return mode, METRICS_FILE
    try:
        recorded = read_json(os.path.join(workdir, CONFIG_FILE), {})
    except ValueError:  # a torn or foreign config.json records no mode
        return None
    mode = recorded.get("mode") if isinstance(recorded, dict) else None
    return (str(mode), CONFIG_FILE) if mode else None


def check_mode(workdir: str, config: ml_collections.ConfigDict) -> None:
    """WorkdirModeError when WORKDIR holds a run of another mode than config's (workdir_mode)."""
    found = workdir_mode(workdir)
    mode = config.get("mode")
    if found and found[0] != mode:
        recorded, evidence = found
        suggestion = os.path.join(
            fileio.absolute(workdir),
            f"eval_{mode}" if mode not in ("pretrain", "quickstart") else mode,
        )
        raise WorkdirModeError(
            f"workdir {workdir} holds a {recorded} run (its {evidence}), not a {mode} run; "
            f"give this run its own --workdir, e.g. --workdir={suggestion}"
        )


def write_config(workdir: str, config: ml_collections.ConfigDict) -> str:
    """WORKDIR/config.json: the resolved config of this run (WorkdirModeError, and nothing
    written, when the workdir holds a run of another mode)."""
    check_mode(workdir, config)
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


# --------------------------------------------------------------------------- closing summary

_DATASET_VARIANT = {
    "imagenet2012": "imagenet",
    "cifar10": "cifar10",
    "rekd_shapes": "shapes",
    "rekd_shapes/tiny": "tiny",
}


def command(recipe: str, variant: str, *flags: str) -> str:
    """The command line that runs `recipe` with `variant` and `flags` where the user is."""
    return " ".join(
        [
            config_lookup.entry_command(),
            f"--config={config_lookup.config_argument(recipe, variant)}",
            *flags,
        ]
    )


def _dataset_args(config) -> tuple[str, str]:
    """(variant, extra flags) that point an evaluation config at this run's dataset."""
    data = config.data
    variant = _DATASET_VARIANT.get(data.dataset.split(":")[0], "")
    extra = f" --config.data.data_dir={data.data_dir}" if data.get("data_dir") else ""
    if not variant:
        extra += f" --config.data.dataset={data.dataset}"
    if variant == "tiny":
        variant = "tiny,runlocal"
    return variant, extra


def _pretrain_summary(config, workdir: str, result: Mapping) -> list[str]:
    metrics = result.get("metrics") or {}
    numbers = [f"step {result.get('step')}"]
    if "train/loss" in metrics:
        numbers.append(f"loss {metrics['train/loss']:.4g}")
    if result.get("knn"):
        numbers.append(f"kNN top-1 {100 * result['knn']['knn/top1']:.1f}%")  # a fraction
    if result.get("train_seconds") is not None:
        numbers.append(f"training {result['train_seconds']:.0f} s")
    encoders = result.get("encoders") or {}
    lines = [
        f"Pre-training done ({config.method}, {config.student.arch}): " + ", ".join(numbers) + ".",
        f"Wrote in {workdir}: "
        + ", ".join(
            [os.path.relpath(p, workdir) for p in encoders.values()]
            + ["checkpoints/", "metrics.jsonl", CONFIG_FILE, TRAIN_TIME_FILE]
            + ([TEACHER_FILE] if fileio.exists(os.path.join(workdir, TEACHER_FILE)) else [])
        )
        + ".",
    ]
    variant, extra = _dataset_args(config)
    protocol = "conv_probe" if config.student.arch == "alexnet" else "linear_eval"
    encoder = encoders.get("student", os.path.join(workdir, "encoders", "student"))
    lines.append(
        "Next, evaluate the student: "
        + command(
            protocol,
            variant,
            f"--config.checkpoint={encoder}",
            f"--workdir={os.path.join(workdir, 'eval_' + protocol.split('_')[0])}",
        )
        + extra
    )
    return lines


def _eval_summary(config, workdir: str, result: Mapping) -> list[str]:
    lines = [
        f"{config.mode} evaluation done: top-1 {result['top1']:.2f}%, top-5 "
        f"{result['top5']:.2f}% on {result.get('count')} {config.data.dataset}/"
        f"{config.data.eval_split} images ({result.get('seconds', 0):.0f} s).",
        f"Wrote in {workdir}: results_{config.mode}.json, metrics.jsonl, {CONFIG_FILE}.",
    ]
    others = [
        m
        for m in ("knn_eval", "linear_eval", "semi_supervised")
        if not m.startswith(config.mode.split("_")[0])
    ]
    variant, extra = _dataset_args(config)
    other = others[0]
    parent = os.path.dirname(fileio.absolute(workdir))
    lines.append(
        "Next, another protocol: "
        + command(
            other,
            variant,
            f"--config.checkpoint={config.checkpoint}",
            f"--workdir={os.path.join(parent, 'eval_' + other.split('_')[0])}",
        )
        + extra
    )
    return lines


def _quickstart_summary(config, workdir: str, result: Mapping) -> list[str]:
    return [
        f"Quick start done in {result.get('seconds', 0):.0f} s: the table above is "
        f"{os.path.join(workdir, 'results.json')}; each stage's workdir is under {workdir}.",
        "Next, the same comparison on real data: python -m rekd_jax.experiments.cifar10 "
        "--scale=cpu --workdir=/tmp/c10_study --data_dir=DATA_DIR --src=CIFAR10_JPEG_DIR "
        "(docs/results.md), or a recipe as a laptop smoke run: "
        + command("cifar10_student", "alexnet,online,tiny,runlocal", "--workdir=/tmp/rekd_smoke")
        + f" ({config_lookup.entry_command()} --help lists every config).",
    ]


def closing_summary(config, workdir: str, result: Any) -> str:
    """The lines every command ends with (empty when the mode has none)."""
    mode = config.get("mode")
    if not isinstance(result, Mapping):
        return ""
    if mode == "pretrain":
        lines = _pretrain_summary(config, workdir, result)
    elif mode in ("linear", "conv_probe", "knn", "semi_supervised"):
        lines = _eval_summary(config, workdir, result)
    elif mode == "quickstart":
        lines = _quickstart_summary(config, workdir, result)
    else:
        return ""
    return "\n".join(lines)
