"""Resuming safely: the run signature of a pre-training run.

`check_signature(config, workdir, resuming)` compares the fields that define a pre-training run
(architectures, method and its block, data, batch, image size, optimiser, step count, dtype,
seed, EMA, shuffle-BN) with WORKDIR/run_signature.json, written by the run that made the
checkpoints. A resumed run whose config differs stops with ConfigChangedError listing every
difference; `--config.allow_config_change=True` accepts them (and records the new signature).
A field added to the project since the run started is no difference while it keeps its default
(teacher.method, the online teacher's own method, is one: older online runs were trained by the
base recipe's default).
Operational fields (logging and checkpoint cadence, data_dir, worker threads, residency, the
kNN monitor, TensorBoard, the distributed setup) may change freely. An offline teacher is part
of the signature by what it computes (`teacher.fingerprint`: rekd_jax.models.io.fingerprint),
not by its path: another teacher put at the same path is a change, the same teacher moved is
not. Every checkpoint
stores the signature (its side item's SIGNATURE_KEY): a deleted run_signature.json is rebuilt
from the newest checkpoint, so the check cannot be switched off by accident. A workdir that
records another mode of run (an evaluation's) is refused first
(rekd_jax.core.run_record.check_mode).

metrics.jsonl is trimmed to the restored step by rekd_jax.core.logging.trim_metrics.
"""

from __future__ import annotations

import json
import logging
import os

import ml_collections

from rekd_jax import defaults, methods
from rekd_jax.core import checkpoint as checkpoint_lib
from rekd_jax.core import fileio, run_record
from rekd_jax.models import io as model_io

SIGNATURE_FILE = "run_signature.json"
SIGNATURE_KEY = "signature"  # the signature in every pre-training checkpoint's side item
TEACHER_FINGERPRINT = "teacher.fingerprint"
OVERRIDE = "--config.allow_config_change=True"
# Fields that change how a run is executed or observed, not what it computes.
OPERATIONAL = (
    "mode",
    "allow_config_change",
    "log_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "async_checkpointing",
    "knn_monitor",
    "distributed",
    "export_encoder_steps",
    "tensorboard",
    "data.data_dir",
    "data.num_workers",
    "data.prefetch",
    "data.resident",
    "data.resident_max_mb",
    "data.max_skipped_fraction",
)


class ConfigChangedError(ValueError):
    """The config of a resumed run differs from the one that wrote its checkpoints."""


def flatten_config(node, prefix="") -> dict:
    """Dotted name -> value of every leaf field of a config."""
    out = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, (ml_collections.ConfigDict, dict)):
            out.update(flatten_config(value, name + "."))
        else:
            out[name] = value
    return out


def signature(config: ml_collections.ConfigDict, plan: methods.TeacherPlan) -> dict:
    """The run-defining fields of a pre-training config, dotted names -> JSON values. Method
    blocks other than the one in use (and the online teacher's own method's, `plan.method`),
    the teacher block of a run without a teacher and teacher.method of a run without an online
    teacher are left out: changing them changes nothing."""
    used = {config.method}
    if plan.mode == "online":
        used.add(plan.method)
    unused = [m for m in methods.METHODS if m not in used]
    if plan.mode is None:
        unused.append("teacher")
    elif plan.mode != "online":
        unused.append("teacher.method")
    flat = flatten_config(config)
    keep = {
        k: v
        for k, v in flat.items()
        if not any(k == p or k.startswith(p + ".") for p in OPERATIONAL + tuple(unused))
    }
    return json.loads(json.dumps(keep, default=str))


def signature_defaults() -> dict:
    """The base config's value of every field (rekd_jax.defaults), as signatures
    hold them. A field the old signature lacks (added to the project after that run started)
    is no change when the resumed run leaves it at this default: new fields default to the
    behaviour runs had before they existed."""
    return json.loads(json.dumps(flatten_config(defaults.base_config()), default=str))


def _show(value) -> str:
    return json.dumps(value) if not isinstance(value, str) else repr(value)


def run_signature(config: ml_collections.ConfigDict, plan: methods.TeacherPlan) -> dict:
    """signature(config, plan) plus the fingerprint of an offline teacher (which it loads)."""
    out = signature(config, plan)
    if plan.mode == "offline" and config.teacher.checkpoint:
        out[TEACHER_FINGERPRINT] = model_io.fingerprint(config.teacher.checkpoint)
    return out


def _recorded_signature(workdir: str) -> dict | None:
    """WORKDIR/run_signature.json, or (when it is missing) the signature stored in the newest
    checkpoint, written back to run_signature.json; None when neither exists."""
    path = os.path.join(workdir, SIGNATURE_FILE)
    if fileio.exists(path):
        return json.loads(fileio.read_text(path))
    ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
        stored = (ckpt.newest_extra() or {}).get(SIGNATURE_KEY)
    finally:
        ckpt.close()
    if stored is not None:
        logging.warning("%s was missing: rebuilt from the newest checkpoint's stored config", path)
    return stored


def check_signature(
    config: ml_collections.ConfigDict, workdir: str, *, resuming: bool, primary: bool = True
) -> dict:
    """Raises ConfigChangedError when a resumed run's config differs (see module docstring);
    otherwise records the signature in WORKDIR/run_signature.json and returns it (each
    checkpoint stores it under SIGNATURE_KEY)."""
    run_record.check_mode(workdir, config)
    path = os.path.join(workdir, SIGNATURE_FILE)
    new = run_signature(config, methods.teacher_plan(config))
    old = _recorded_signature(workdir) if resuming else None
    if old is not None:
        defaults = signature_defaults()
        fingerprinted = TEACHER_FINGERPRINT in old and TEACHER_FINGERPRINT in new
        unset = lambda k: (
            k not in old
            and (
                k == TEACHER_FINGERPRINT or (k in defaults and new[k] == defaults[k])
            )  # fields the old run did not record
            or (k == "teacher.checkpoint" and fingerprinted)
        )  # the teacher, not its path
        diffs = [
            f"{k}: {_show(old.get(k, '<absent>'))} -> {_show(new.get(k, '<absent>'))}"
            for k in sorted(set(old) | set(new))
            if old.get(k, "<absent>") != new.get(k, "<absent>") and not unset(k)
        ]
        teacher_changed = any(d.startswith(TEACHER_FINGERPRINT) for d in diffs)
        if diffs and not config.get("allow_config_change", False):
            teacher = (
                f"; the encoder at teacher.checkpoint={config.teacher.checkpoint} is not "
                "the teacher this run was trained with: put that one back"
                if teacher_changed
                else ""
            )
            raise ConfigChangedError(
                f"the config changes the run whose checkpoints are in {workdir} "
                f"({'; '.join(diffs)}){teacher}; rerun with the original values, pass "
                f"{OVERRIDE} to resume with these changes, or give a new --workdir"
            )
        if diffs:
            logging.warning(
                "resuming with a changed config (%s accepted): %s", OVERRIDE, "; ".join(diffs)
            )
        elif old == new and fileio.exists(path):
            return new
    if primary:
        fileio.write_json(path, new, sort_keys=True)
    return new
