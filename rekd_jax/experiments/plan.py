"""Experiment plans: pre-training runs, their evaluations and random-init baselines, as rows.

A plan is a list of `Arm`s; each arm is one row of a result table:
  - a random-init arm scores an untrained encoder (`init:ARCH:...`, see
    rekd_jax.evaluation.features.parse_init_checkpoint) and trains nothing;
  - a trained arm pre-trains with its config (resuming like any run), then evaluates its student.
`run_plan` runs the arms in order into ROOT/<arm.name>/, writes ROOT/<arm.name>/row.json when an
arm is done (rerunning skips it), prints progress with an ETA, and returns the rows. Used by the
quick start (rekd_jax.training.quickstart) and the CIFAR-10 study (rekd_jax.experiments.cifar10).

Every table `format_table` prints has a random-init row for each student architecture in it and
each trained row's kNN gain over that row: a trained number means nothing without it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Callable, Sequence

import ml_collections
import numpy as np

from rekd_jax import fileio, run_record

RANDOM_INIT = "random init"
# metrics.jsonl scalars summarised per trained run (mean over the last quarter of the log lines).
DIAGNOSTICS = ("positive_label_precision", "positives_per_anchor", "prototype_entropy",
               "contrast_accuracy", "loss")


@dataclasses.dataclass
class Arm:
    """One row: a trained run (config) or a random-init baseline (init text)."""
    name: str                                      # unique relative path, e.g. 'alexnet/mocov2/s0'
    arch: str                                      # the student architecture (table column)
    label: str                                     # 'random init', 'MoCo v2', 'ReKD (offline)', ...
    config: ml_collections.ConfigDict | None = None  # pre-training config; None = random init
    init: str = ""                                 # init: checkpoint text of a random-init arm
    teacher: str = ""                              # arm whose encoders/student is the offline teacher
    group: str = ""                                # 'teacher', 'student', 'mechanism', ...
    seed: int = 0

    @property
    def trained(self) -> bool:
        return self.config is not None


def init_text(arch: str, overrides: dict, seed: int = 0) -> str:
    """`init:ARCH:field=value,...,seed=N` for an untrained encoder with these model overrides."""
    fields = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
              for k, v in sorted(overrides.items())] + [f"seed={seed}"]
    return f"init:{arch}:{','.join(fields)}"


def random_init_arm(run_config: ml_collections.ConfigDict, name: str, group: str = "",
                    seed: int | None = None) -> Arm:
    """The random-init baseline of a pre-training config's student (same arch and overrides;
    the same initialisation seed as the run unless `seed` is given)."""
    from rekd_jax.training import state as state_lib
    overrides = state_lib.backbone_overrides(run_config.student.overrides)
    seed = int(run_config.rng_seed) if seed is None else seed
    return Arm(name=name, arch=run_config.student.arch, label=RANDOM_INIT,
               init=init_text(run_config.student.arch, overrides, seed), group=group, seed=seed)


def summarize_metrics(metrics_path: str, keys: Sequence[str] = DIAGNOSTICS) -> dict:
    """Mean of each train/<key> over the last quarter of its log lines (at least one line)."""
    from rekd_jax.training import logging as logging_lib
    records = logging_lib.read_jsonl(metrics_path)
    out = {}
    for key in keys:
        values = [r[f"train/{key}"] for r in records if f"train/{key}" in r]
        if values:
            tail = values[-max(1, len(values) // 4):]
            out[key] = float(np.mean(tail))
    return out


def _train(arm: Arm, root: str, run_dir: str) -> dict:
    """Pre-trains the arm (resumes); returns {'steps', 'train_seconds', 'encoder', metrics}."""
    from rekd_jax.training import pretrain
    config = arm.config.copy_and_resolve_references()
    if arm.teacher:
        config.teacher.checkpoint = os.path.join(root, arm.teacher, "encoders", "student")
    summary = pretrain.train_and_evaluate(config, run_dir)
    # summary["train_seconds"]: the first run's training time plus each resume's (run_record)
    return {"steps": int(summary["step"]), "train_seconds": round(summary["train_seconds"], 1),
            "encoder": summary["encoders"]["student"],
            "final_loss": summary["metrics"].get("train/loss")}


def evaluate_encoder(evaluation: ml_collections.ConfigDict, modes: Sequence[str],
                     checkpoint: str, workdir: str) -> dict:
    """{mode: {'top1', 'top5'}} of an encoder directory or `init:` text (each mode resumes)."""
    from rekd_jax.evaluation import run as eval_run
    out = {}
    for mode in modes:
        cfg = evaluation.copy_and_resolve_references()
        cfg.mode = mode
        cfg.checkpoint = checkpoint
        cfg.features_dir = os.path.join(workdir, "features")  # one extraction for kNN + linear
        result = eval_run.evaluate(cfg, os.path.join(workdir, f"eval_{mode}"))
        out[mode] = {"top1": float(result["top1"]), "top5": float(result["top5"])}
    return out


def run_arm(arm: Arm, root: str, evaluation: ml_collections.ConfigDict,
            modes: Sequence[str], *, clear_caches: bool = True) -> dict:
    """Runs (or skips, when ROOT/<name>/row.json exists) one arm; returns its row.

    `clear_caches` drops JAX's compiled functions afterwards: a long plan compiles a step per
    arm and should not keep them all in memory; a short one (the quick start) keeps them, so
    that later arms reuse what earlier ones compiled (model initialisers, above all).
    """
    run_dir = os.path.join(root, arm.name)
    row_path = os.path.join(run_dir, "row.json")
    if os.path.exists(row_path):
        return run_record.read_json(row_path)
    row = {"name": arm.name, "arch": arm.arch, "label": arm.label, "group": arm.group,
           "seed": arm.seed, "steps": 0, "train_seconds": 0.0}
    if arm.trained:
        row.update(_train(arm, root, run_dir))
        row["method"] = arm.config.method
        row["diagnostics"] = summarize_metrics(os.path.join(run_dir, "metrics.jsonl"))
        if arm.teacher:
            row["teacher"] = arm.teacher
        checkpoint = row["encoder"]
    else:
        row["method"] = "none"
        row["encoder"] = checkpoint = arm.init
    start = time.time()
    row["eval"] = evaluate_encoder(evaluation, modes, checkpoint, run_dir)
    row["eval_seconds"] = round(time.time() - start, 1)
    fileio.write_json(row_path, row, sort_keys=True, default=float)
    if clear_caches:
        import jax
        jax.clear_caches()
    return row


def format_duration(seconds: float) -> str:
    """h:mm:ss."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def run_plan(arms: Sequence[Arm], root: str, evaluation: ml_collections.ConfigDict,
             modes: Sequence[str], *, cost: Callable[[Arm], float] | None = None,
             log: Callable[[str], None] = print, clear_caches: bool = True) -> list[dict]:
    """Runs every arm in order (skipping finished ones); logs progress with an ETA.

    `cost(arm)` is a relative cost estimate (default: training steps; a random-init arm, which
    only evaluates, a tenth of the mean trained arm). The ETA prices the trained arms left at
    the seconds per cost unit the trained arms done so far took, and the evaluation-only arms
    left at theirs; it is '?' until a trained arm is done (evaluation-only arms, the first one
    also building the dataset, say little about the time training takes).
    """
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be unique; got {names}")
    steps = [float(a.config.num_train_steps or 1) for a in arms if a.trained] or [1.0]
    cost = cost or (lambda a: float(a.config.num_train_steps or 1) if a.trained
                    else 0.1 * float(np.mean(steps)))
    done = {True: [0.0, 0.0], False: [0.0, 0.0]}  # trained? -> [cost done, seconds spent]
    rows, start = [], time.time()
    for i, arm in enumerate(arms, 1):
        finished = os.path.exists(os.path.join(root, arm.name, "row.json"))
        t0 = time.time()
        rows.append(run_arm(arm, root, evaluation, modes, clear_caches=clear_caches))
        if not finished:
            done[arm.trained][0] += cost(arm)
            done[arm.trained][1] += time.time() - t0
        eta = _eta(arms[i:], root, cost, done)
        knn = rows[-1]["eval"].get("knn", {}).get("top1")
        log(f"[{i}/{len(arms)}] {arm.name}: {'skipped (done)' if finished else 'done'}"
            f"{'' if knn is None else f', kNN {knn:.1f}'}; elapsed "
            f"{format_duration(time.time() - start)}, ETA "
            f"{'?' if math.isnan(eta) else format_duration(eta)}")
    return rows


def _eta(left: Sequence[Arm], root: str, cost: Callable[[Arm], float],
         done: dict[bool, list[float]]) -> float:
    """Seconds for the arms `left` (those without a row.json) at the seconds per cost unit of
    the arms of their kind done so far (evaluation-only arms without a measurement of their
    own: the trained arms' rate); NaN before a trained arm is done."""
    if not done[True][0]:
        return float("nan")
    rate = {kind: (spent / cost_done if cost_done else done[True][1] / done[True][0])
            for kind, (cost_done, spent) in done.items()}
    return sum(rate[a.trained] * cost(a) for a in left
               if not os.path.exists(os.path.join(root, a.name, "row.json")))


def _fmt(value, spec=".1f") -> str:
    return "-" if value is None else format(value, spec)


def random_init_rows(rows: Sequence[dict]) -> dict[str, dict]:
    """arch -> the first random-init row of that arch."""
    out = {}
    for row in rows:
        if row["label"] == RANDOM_INIT:
            out.setdefault(row["arch"], row)
    return out


def format_table(rows: Sequence[dict], chance: float | None = None) -> str:
    """A text table of rows; each trained row shows its kNN gain over its arch's random init.

    Raises ValueError when an architecture has trained rows but no random-init row.
    """
    baselines = random_init_rows(rows)
    missing = sorted({r["arch"] for r in rows} - set(baselines))
    if missing:
        raise ValueError(f"no random-init row for {missing}: every table needs one per arch")
    header = (f"{'run':<26} {'arch':<18} {'method':<22} {'steps':>6} {'train s':>8} "
              f"{'kNN':>6} {'dkNN':>6} {'linear':>7} {'dlin':>6} {'label prec.':>11}")
    lines = [header, "-" * len(header)]
    for r in rows:
        knn = r["eval"].get("knn", {}).get("top1")
        lin = r["eval"].get("linear", {}).get("top1")
        base = baselines[r["arch"]]["eval"]
        trained = r["label"] != RANDOM_INIT
        d_knn = knn - base["knn"]["top1"] if trained and knn is not None and "knn" in base \
            else None
        d_lin = lin - base["linear"]["top1"] if trained and lin is not None and "linear" in base \
            else None
        precision = r.get("diagnostics", {}).get("positive_label_precision")
        if precision is not None and r.get("method") != "rekd":
            precision = None
        prec_text = _fmt(precision, ".3f")
        if precision is not None and chance:
            prec_text += f" ({precision / chance:.1f}x)"
        lines.append(f"{r['name']:<26.26} {r['arch']:<18.18} {r['label']:<22.22} "
                     f"{r['steps']:>6} {r['train_seconds']:>8.0f} {_fmt(knn):>6} "
                     f"{_fmt(d_knn, '+.1f'):>6} {_fmt(lin):>7} {_fmt(d_lin, '+.1f'):>6} "
                     f"{prec_text:>11}")
    if chance:
        lines.append(f"(top-1 in %; dkNN / dlin: gain over the same architecture's random init; "
                     f"label prec.: fraction of ReKD's mined positives with the anchor's class, "
                     f"chance {chance:.3f})")
    return "\n".join(lines)


def label_chance(data_cfg, split: str) -> float:
    """Probability that two random examples of `split` share a label (0.1 for balanced
    10-class data): the chance level of the mined positives' label precision."""
    from rekd_jax.data import pipeline
    labels = pipeline.split_metadata(data_cfg, split)["labels"]
    counts = np.bincount(labels)
    p = counts / counts.sum()
    return float(np.sum(p * p))
