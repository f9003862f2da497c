"""The quick start's learning rates, chosen on a validation split (mode 'quickstart_grid').

    python main.py --config=configs/quickstart.py:lr_grid --workdir=/tmp/qs_grid

Trains the quick start's teacher, then each of its students (ReKD, SEED, MoCo v2) at every
peak lr of config.lr_grid, all other fields as the quick start has them, and scores each with
kNN and the fast linear probe on a validation split carved from the training split (its last
VAL_FRACTION, scored against the rest); the test split is never read. The best validation kNN
per method (ties: linear) is the lr configs/quickstart.py uses. Writes WORKDIR/results.json and
prints the table; rerunning skips finished runs.
"""

from __future__ import annotations

import os

import ml_collections

from rekd_jax.core import fileio
from rekd_jax.experiments import plan, quickstart

VAL_FRACTION = 0.1
STUDENTS = ("student", "seed", "baseline")


def validation_eval(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The quick start's evaluation on train[:n - n/10] (bank, probe training) and
    train[n - n/10:] (scored), n the size of the training split."""
    evaluation = config.evaluation.copy_and_resolve_references()
    num_train = plan.split_size(evaluation.data, evaluation.data.train_split)
    cut = int(round(num_train * (1 - VAL_FRACTION)))
    evaluation.data.update(train_split=f"train[:{cut}]", eval_split=f"train[{cut}:]")
    return evaluation


def arm_name(run: str, lr: float) -> str:
    return f"{run}/lr{lr:g}"


def arms(config: ml_collections.ConfigDict, evaluation) -> list[plan.Arm]:
    """The teacher, then every student run at every lr of config.lr_grid."""
    labels = {name: label for name, _, label in quickstart.STAGES}
    teacher = config.runs.teacher
    out = [
        plan.Arm(
            name="teacher",
            arch=teacher.student.arch,
            label=labels["teacher"],
            config=teacher,
            group="teacher",
            evaluation=evaluation,
        )
    ]
    for name in STUDENTS:
        for lr in config.lr_grid:
            run = config.runs[name].copy_and_resolve_references()
            run.optimizer.base_learning_rate = lr
            out.append(
                plan.Arm(
                    name=arm_name(name, lr),
                    arch=run.student.arch,
                    label=labels[name],
                    config=run,
                    group=name,
                    teacher=quickstart.teacher_of(run),
                    evaluation=evaluation,
                )
            )
    return out


def choices(rows: list[dict], lrs) -> dict[str, float]:
    """The lr of the best validation kNN (ties: linear) per student run."""
    by_name = {r["name"]: r for r in rows}
    out = {}
    for name in STUDENTS:
        best = max(
            lrs,
            key=lambda lr: (
                by_name[arm_name(name, lr)]["eval"]["knn"]["top1"],
                by_name[arm_name(name, lr)]["eval"]["linear"]["top1"],
            ),
        )
        out[name] = best
    return out


def table(rows: list[dict], lrs, chosen: dict) -> str:
    by_name = {r["name"]: r for r in rows}
    lines = [f"{'method':<18}" + "".join(f"{f'lr {lr:g}':>17}" for lr in lrs)]
    for name in STUDENTS:
        cells = []
        for lr in lrs:
            e = by_name[arm_name(name, lr)]["eval"]
            mark = "*" if chosen[name] == lr else " "
            cells.append(f"{e['knn']['top1']:.1f} / {e['linear']['top1']:.1f}{mark}")
        lines.append(
            f"{by_name[arm_name(name, lrs[0])]['label']:<18}" + "".join(f"{c:>17}" for c in cells)
        )
    lines.append("(validation kNN / linear top-1 %; * chosen)")
    return "\n".join(lines)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs the grid into WORKDIR; returns {'lrs', 'chosen', 'rows', 'validation'}."""
    evaluation = validation_eval(config)
    lrs = tuple(config.lr_grid)
    rows = plan.run_plan(
        arms(config, evaluation), workdir, evaluation, config.eval_modes, clear_caches=False
    )
    chosen = choices(rows, lrs)
    result = {
        "lrs": list(lrs),
        "seed": int(config.rng_seed),
        "chosen": chosen,
        "rows": rows,
        "validation": {"bank": evaluation.data.train_split, "scored": evaluation.data.eval_split},
    }
    fileio.write_json(os.path.join(workdir, "results.json"), result)
    print(table(rows, lrs, chosen), flush=True)
    return result
