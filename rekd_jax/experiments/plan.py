"""Experiment plans: pre-training runs, their evaluations and random-init baselines, as rows.

A plan is a list of `Arm`s; each arm is one row of a result table:
  - a random-init arm scores an untrained encoder (`init:ARCH:...`, see
    rekd_jax.readout.features.parse_init_checkpoint) and trains nothing;
  - an encoder arm scores an encoder another arm wrote (`source`: a ROOT-relative encoder
    directory, e.g. a teacher's snapshot), trains nothing;
  - a trained arm pre-trains with its config (resuming like any run), then evaluates its student;
  - a reuse arm scores the student another trained arm pre-trained (`reuse`), under its own
    evaluation (e.g. on the test split, once a validation search chose that run), and carries
    that arm's training record.
Each arm may carry its own evaluation config (`evaluation`; default: the plan's).
`run_plan` runs the arms in order into ROOT/<arm.name>/, writes ROOT/<arm.name>/row.json when an
arm is done (rerunning skips it), prints progress with an ETA, and returns the rows. Used by the
quick start (rekd_jax.experiments.quickstart) and the CIFAR-10 study (rekd_jax.experiments.cifar10).

Every table `format_table` prints has a random-init row for each student architecture in it and
each trained row's kNN gain over that row: a trained number means nothing without it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence

import jax
import ml_collections
import numpy as np

from rekd_jax.core import fileio, run_record
from rekd_jax.core import logging as logging_lib
from rekd_jax.data import pipeline
from rekd_jax.evaluation import run as eval_run
from rekd_jax.training import pretrain
from rekd_jax.training import state as state_lib

RANDOM_INIT = "random init"
# metrics.jsonl scalars summarised per trained run (mean over the last quarter of the log lines).
DIAGNOSTICS = (
    "positive_label_precision",
    "positives_per_anchor",
    "prototype_entropy",
    "contrast_accuracy",
    "loss",
)


@dataclasses.dataclass
class Arm:
    """One row: a trained run (config) or a random-init baseline (init text)."""

    name: str  # unique relative path, e.g. 'alexnet/mocov2/s0'
    arch: str  # the student architecture (table column)
    label: str  # 'random init', 'MoCo v2', 'ReKD (offline)', ...
    config: ml_collections.ConfigDict | None = None  # pre-training config; None = random init
    init: str = ""  # init: checkpoint text of a random-init arm
    teacher: str = ""  # arm whose encoders/ holds the offline teacher
    teacher_encoder: str = "student"  # ...as this folder of that arm's encoders/
    group: str = ""  # 'teacher', 'student', 'mechanism', ...
    seed: int = 0
    source: str = ""  # ROOT-relative encoder dir to score
    reuse: str = ""  # trained arm whose student this row scores
    evaluation: ml_collections.ConfigDict | None = None  # this row's protocol (None: the plan's)

    @property
    def trained(self) -> bool:
        return self.config is not None

    def teacher_path(self, root: str) -> str:
        return os.path.join(root, self.teacher, "encoders", self.teacher_encoder)


def init_text(arch: str, overrides: dict, seed: int = 0) -> str:
    """`init:ARCH:field=value,...,seed=N` for an untrained encoder with these model overrides."""
    fields = [
        f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
        for k, v in sorted(overrides.items())
    ] + [f"seed={seed}"]
    return f"init:{arch}:{','.join(fields)}"


def random_init_arm(
    run_config: ml_collections.ConfigDict, name: str, group: str = "", seed: int | None = None
) -> Arm:
    """The random-init baseline of a pre-training config's student (same arch and overrides;
    the same initialisation seed as the run unless `seed` is given)."""
    overrides = state_lib.backbone_overrides(run_config.student.overrides)
    seed = int(run_config.rng_seed) if seed is None else seed
    return Arm(
        name=name,
        arch=run_config.student.arch,
        label=RANDOM_INIT,
        init=init_text(run_config.student.arch, overrides, seed),
        group=group,
        seed=seed,
    )


def summarize_metrics(metrics_path: str, keys: Sequence[str] = DIAGNOSTICS) -> dict:
    """Mean of each train/<key> over the last quarter of its log lines (at least one line)."""
    records = logging_lib.read_jsonl(metrics_path)
    out = {}
    for key in keys:
        values = [r[f"train/{key}"] for r in records if f"train/{key}" in r]
        if values:
            tail = values[-max(1, len(values) // 4) :]
            out[key] = float(np.mean(tail))
    return out


def _train(arm: Arm, root: str, run_dir: str) -> dict:
    """Pre-trains the arm (resumes); returns {'steps', 'train_seconds', 'encoder', metrics}."""
    config = arm.config.copy_and_resolve_references()
    if arm.teacher:
        config.teacher.checkpoint = arm.teacher_path(root)
    summary = pretrain.train_and_evaluate(config, run_dir)
    # summary["train_seconds"]: the first run's training time plus each resume's (run_record)
    return {
        "steps": int(summary["step"]),
        "train_seconds": round(summary["train_seconds"], 1),
        "encoder": summary["encoders"]["student"],
        "final_loss": summary["metrics"].get("train/loss"),
    }


def knn_curve(metrics_path: str) -> list[list[float]]:
    """[[step, kNN top-1 %], ...] of the run's kNN monitor (empty when it was off)."""
    return [
        [int(r["step"]), 100.0 * float(r["knn/top1"])]
        for r in logging_lib.read_jsonl(metrics_path)
        if "knn/top1" in r
    ]


def evaluate_encoder(
    evaluation: ml_collections.ConfigDict, modes: Sequence[str], checkpoint: str, workdir: str
) -> dict:
    """{mode: {'top1', 'top5'}} of an encoder directory or `init:` text (each mode resumes)."""
    out = {}
    for mode in modes:
        cfg = evaluation.copy_and_resolve_references()
        cfg.mode = mode
        cfg.checkpoint = checkpoint
        cfg.features_dir = os.path.join(workdir, "features")  # one extraction for kNN + linear
        result = eval_run.evaluate(cfg, os.path.join(workdir, f"eval_{mode}"))
        out[mode] = {"top1": float(result["top1"]), "top5": float(result["top5"])}
    return out


def run_arm(
    arm: Arm,
    root: str,
    evaluation: ml_collections.ConfigDict,
    modes: Sequence[str],
    *,
    clear_caches: bool = True,
) -> dict:
    """Runs (or skips, when ROOT/<name>/row.json exists) one arm; returns its row.

    `clear_caches` drops JAX's compiled functions afterwards: a long plan compiles a step per
    arm and should not keep them all in memory; a short one (the quick start) keeps them, so
    that later arms reuse what earlier ones compiled (model initialisers, above all).
    """
    run_dir = os.path.join(root, arm.name)
    row_path = os.path.join(run_dir, "row.json")
    if os.path.exists(row_path):
        return run_record.read_json(row_path)
    row = {
        "name": arm.name,
        "arch": arm.arch,
        "label": arm.label,
        "group": arm.group,
        "seed": arm.seed,
        "steps": 0,
        "train_seconds": 0.0,
    }
    if arm.trained:
        row.update(_train(arm, root, run_dir))
        row["method"] = arm.config.method
        metrics_path = os.path.join(run_dir, "metrics.jsonl")
        row["diagnostics"] = summarize_metrics(metrics_path)
        row["knn_curve"] = knn_curve(metrics_path)
        if arm.teacher:
            row["teacher"] = arm.teacher
            row["teacher_encoder"] = arm.teacher_encoder
        checkpoint = row["encoder"]
    elif arm.reuse:
        trained = run_record.read_json(os.path.join(root, arm.reuse, "row.json"))
        row.update(
            {
                k: v
                for k, v in trained.items()
                if k not in ("name", "group", "eval", "eval_seconds", "label")
            }
        )
        row["reused"] = arm.reuse
        checkpoint = row["encoder"]
    else:
        row["method"] = "none"
        row["encoder"] = checkpoint = os.path.join(root, arm.source) if arm.source else arm.init
    start = time.time()
    row["eval"] = evaluate_encoder(arm.evaluation or evaluation, modes, checkpoint, run_dir)
    row["eval_seconds"] = round(time.time() - start, 1)
    fileio.write_json(row_path, row, sort_keys=True, default=float)
    if clear_caches:
        jax.clear_caches()
    return row


def format_duration(seconds: float) -> str:
    """h:mm:ss."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclasses.dataclass
class Budget:
    """Relative cost of the arms still to run, and the time the finished ones took: one ETA
    over several `run_plan` calls (a study whose later arms depend on earlier results).

    Trained arms and evaluation-only arms are priced apart: the trained arms left at the
    seconds per cost unit the trained arms done so far took, the evaluation-only arms left at
    theirs (at the trained arms' rate until one has run). No ETA until a trained arm is done:
    evaluation-only arms, the first one also building the dataset, say little about the time
    training takes."""

    total: float = 0.0  # estimated cost of every arm not finished when the budget was made
    evaluation_total: float = 0.0  # ...the part of `total` that evaluation-only arms make up
    # trained? -> cost done, seconds spent (arms finished before the budget was made: neither)
    done: dict[bool, float] = dataclasses.field(default_factory=lambda: {True: 0.0, False: 0.0})
    spent: dict[bool, float] = dataclasses.field(default_factory=lambda: {True: 0.0, False: 0.0})
    start: float = dataclasses.field(default_factory=time.time)

    @classmethod
    def of(cls, arms: Iterable[Arm], cost: Callable[[Arm], float], root: str) -> Budget:
        """The budget of the arms not finished under ROOT (each name counted once)."""
        budget = cls()
        budget.replan(arms, cost, root)
        return budget

    def replan(self, arms: Iterable[Arm], cost: Callable[[Arm], float], root: str) -> None:
        """Replaces the estimate of what is left by ARMS' unfinished arms: for a plan whose
        later arms are known only once earlier results are in (a setting chosen on
        validation renames the arms that follow)."""
        left = [a for a in {a.name: a for a in arms}.values() if not is_finished(root, a)]
        self.total = self.done[True] + self.done[False] + sum(cost(a) for a in left)
        self.evaluation_total = self.done[False] + sum(cost(a) for a in left if not a.trained)

    def add(self, arm: Arm, cost: float, seconds: float) -> None:
        """Records an arm that has just run."""
        self.done[arm.trained] += cost
        self.spent[arm.trained] += seconds

    def eta(self) -> float:
        """Seconds left (NaN until a trained arm has run)."""
        if not self.done[True]:
            return float("nan")
        trained_rate = self.spent[True] / self.done[True]
        evaluation_rate = self.spent[False] / self.done[False] if self.done[False] else trained_rate
        evaluation_left = max(0.0, self.evaluation_total - self.done[False])
        trained_left = max(0.0, self.total - self.done[True] - self.done[False] - evaluation_left)
        return trained_rate * trained_left + evaluation_rate * evaluation_left


def default_cost(arms: Sequence[Arm]) -> Callable[[Arm], float]:
    """Training steps; an arm that only evaluates, a tenth of the mean trained arm."""
    steps = [float(a.config.num_train_steps or 1) for a in arms if a.trained] or [1.0]
    return lambda a: (
        float(a.config.num_train_steps or 1) if a.trained else 0.1 * float(np.mean(steps))
    )


def is_finished(root: str, arm: Arm) -> bool:
    return os.path.exists(os.path.join(root, arm.name, "row.json"))


def read_row(root: str, arm: Arm) -> dict:
    """The row a finished arm wrote."""
    return run_record.read_json(os.path.join(root, arm.name, "row.json"))


def run_plan(
    arms: Sequence[Arm],
    root: str,
    evaluation: ml_collections.ConfigDict,
    modes: Sequence[str],
    *,
    cost: Callable[[Arm], float] | None = None,
    log: Callable[[str], None] = print,
    clear_caches: bool = True,
    budget: Budget | None = None,
) -> list[dict]:
    """Runs every arm in order (skipping finished ones); logs progress with an ETA.

    `cost(arm)` is a relative cost estimate (default: `default_cost`) used to turn the time
    spent so far into an ETA for the arms left (see `Budget`); `budget` carries it over several
    calls (it must then hold the cost of every unfinished arm of all of them: `Budget.of`).
    """
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be unique; got {names}")
    cost = cost or default_cost(arms)
    if budget is None:
        budget = Budget.of(arms, cost, root)
    rows = []
    for i, arm in enumerate(arms, 1):
        finished = is_finished(root, arm)
        t0 = time.time()
        rows.append(run_arm(arm, root, evaluation, modes, clear_caches=clear_caches))
        if not finished:
            budget.add(arm, cost(arm), time.time() - t0)
        eta = budget.eta()
        knn = rows[-1]["eval"].get("knn", {}).get("top1")
        log(
            f"[{i}/{len(arms)}] {arm.name}: {'skipped (done)' if finished else 'done'}"
            f"{'' if knn is None else f', kNN {knn:.1f}'}; elapsed "
            f"{format_duration(time.time() - budget.start)}, ETA "
            f"{'?' if math.isnan(eta) else format_duration(eta)}"
        )
    return rows


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
    header = (
        f"{'run':<26} {'arch':<18} {'method':<22} {'steps':>6} {'train s':>8} "
        f"{'kNN':>6} {'dkNN':>6} {'linear':>7} {'dlin':>6} {'label prec.':>11}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        knn = r["eval"].get("knn", {}).get("top1")
        lin = r["eval"].get("linear", {}).get("top1")
        base = baselines[r["arch"]]["eval"]
        trained = r["label"] != RANDOM_INIT
        d_knn = knn - base["knn"]["top1"] if trained and knn is not None and "knn" in base else None
        d_lin = (
            lin - base["linear"]["top1"]
            if trained and lin is not None and "linear" in base
            else None
        )
        precision = r.get("diagnostics", {}).get("positive_label_precision")
        if precision is not None and r.get("method") != "rekd":
            precision = None
        prec_text = _fmt(precision, ".3f")
        if precision is not None and chance:
            prec_text += f" ({precision / chance:.1f}x)"
        lines.append(
            f"{r['name']:<26.26} {r['arch']:<18.18} {r['label']:<22.22} "
            f"{r['steps']:>6} {r['train_seconds']:>8.0f} {_fmt(knn):>6} "
            f"{_fmt(d_knn, '+.1f'):>6} {_fmt(lin):>7} {_fmt(d_lin, '+.1f'):>6} "
            f"{prec_text:>11}"
        )
    if chance:
        lines.append(
            f"(top-1 in %; dkNN / dlin: gain over the same architecture's random init; "
            f"label prec.: fraction of ReKD's mined positives with the anchor's class, "
            f"chance {chance:.3f})"
        )
    return "\n".join(lines)


def split_size(data_cfg, split: str) -> int:
    """Number of examples of `split` (building an embedded dataset on first use)."""
    return int(len(pipeline.split_metadata(data_cfg, split)["labels"]))


def label_chance(data_cfg, split: str) -> float:
    """Probability that two random examples of `split` share a label (0.1 for balanced
    10-class data): the chance level of the mined positives' label precision."""
    labels = pipeline.split_metadata(data_cfg, split)["labels"]
    counts = np.bincount(labels)
    p = counts / counts.sum()
    return float(np.sum(p * p))
