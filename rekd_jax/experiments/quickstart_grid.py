"""The quick start's learning rates, chosen on a validation split.

    python -m rekd_jax.experiments.quickstart_grid --workdir=/tmp/qs_grid \
        [--lrs=0.01,0.02,0.04,0.08] [--seed=0]

Trains the quick start's teacher (configs/quickstart.py), then each of its students (ReKD,
SEED, MoCo v2) at every peak lr of the grid, all other fields as the config has them, and
scores each with kNN and the fast linear probe on a validation split carved from the training
split (the last VAL_FRACTION of it, scored against the rest); the test split is never read.
The best validation kNN per method (ties: linear) is the lr configs/quickstart.py uses.
Writes WORKDIR/results.json and prints the table; rerunning skips finished runs.
"""
from __future__ import annotations

import argparse
import os

import ml_collections

from configs import quickstart
from rekd_jax import fileio
from rekd_jax.experiments import plan
from rekd_jax.training import logging as logging_lib
from rekd_jax.training import quickstart as quickstart_lib

VAL_FRACTION = 0.1
STUDENTS = ("student", "seed", "baseline")
DEFAULT_LRS = (0.01, 0.02, 0.04, 0.08)


def validation_eval(config: ml_collections.ConfigDict,
                    num_train: int) -> ml_collections.ConfigDict:
    """The quick start's evaluation on train[:n - n/10] (bank, probe training) and
    train[n - n/10:] (scored)."""
    evaluation = config.evaluation.copy_and_resolve_references()
    cut = int(round(num_train * (1 - VAL_FRACTION)))
    evaluation.data.update(train_split=f"train[:{cut}]", eval_split=f"train[{cut}:]")
    return evaluation


def arms(config: ml_collections.ConfigDict, lrs, evaluation) -> list[plan.Arm]:
    """The teacher, then every student run at every lr (teacher arm 'teacher')."""
    labels = {name: label for name, _, label in quickstart_lib.STAGES}
    teacher = config.runs.teacher
    out = [plan.Arm(name="teacher", arch=teacher.student.arch, label=labels["teacher"],
                    config=teacher, group="teacher", evaluation=evaluation)]
    for name in STUDENTS:
        for lr in lrs:
            run = config.runs[name].copy_and_resolve_references()
            run.optimizer.base_learning_rate = lr
            out.append(plan.Arm(name=f"{name}/lr{lr:g}", arch=run.student.arch,
                                label=labels[name], config=run, group=name,
                                teacher="teacher" if run.method != "mocov2" else "",
                                evaluation=evaluation))
    return out


def choices(rows: list[dict], lrs) -> dict[str, float]:
    by_name = {r["name"]: r for r in rows}
    out = {}
    for name in STUDENTS:
        candidates = {f"{name}/lr{lr:g}": lr for lr in lrs}
        best = max((by_name[n] for n in candidates),
                   key=lambda r: (r["eval"]["knn"]["top1"], r["eval"]["linear"]["top1"]))
        out[name] = candidates[best["name"]]
    return out


def table(rows: list[dict], lrs, chosen: dict) -> str:
    by_name = {r["name"]: r for r in rows}
    lines = [f"{'method':<18}" + "".join(f"{f'lr {lr:g}':>16}" for lr in lrs)]
    for name in STUDENTS:
        cells = []
        for lr in lrs:
            r = by_name[f"{name}/lr{lr:g}"]["eval"]
            mark = "*" if chosen[name] == lr else " "
            cells.append(f"{r['knn']['top1']:>6.1f} / {r['linear']['top1']:>5.1f}{mark}")
        lines.append(f"{by_name[f'{name}/lr{lrs[0]:g}']['label']:<18}"
                     + "".join(f"{c:>16}" for c in cells))
    lines.append("(validation kNN / linear top-1 %; * chosen)")
    return "\n".join(lines)


def run(workdir: str, lrs=DEFAULT_LRS, seed: int = 0, variant: str | None = None,
        log=print) -> dict:
    config = quickstart.get_config(variant)
    config.seed = seed
    num_train = plan.split_size(config.evaluation.data, "train")
    evaluation = validation_eval(config, num_train)
    rows = plan.run_plan(arms(config, lrs, evaluation), workdir, evaluation,
                         config.eval_modes, log=log, clear_caches=False)
    chosen = choices(rows, lrs)
    result = {"lrs": list(lrs), "seed": seed, "rows": rows, "chosen": chosen,
              "validation": {"bank": evaluation.data.train_split,
                             "scored": evaluation.data.eval_split}}
    fileio.write_json(os.path.join(workdir, "results.json"), result)
    log(table(rows, lrs, chosen))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rekd_jax.experiments.quickstart_grid",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--lrs", default=",".join(f"{lr:g}" for lr in DEFAULT_LRS),
                        help="comma-separated peak learning rates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", default=None, help="configs/quickstart.py variant")
    args = parser.parse_args(argv)
    try:
        lrs = tuple(float(v) for v in args.lrs.split(",") if v)
    except ValueError:
        raise SystemExit(f"FATAL: --lrs={args.lrs!r} must be comma-separated numbers, e.g. "
                         "0.01,0.02,0.04") from None
    if not lrs or min(lrs) <= 0:
        raise SystemExit("FATAL: --lrs needs at least one learning rate > 0")
    logging_lib.quiet_library_logs()
    os.makedirs(args.workdir, exist_ok=True)
    run(args.workdir, lrs, args.seed, args.variant)


if __name__ == "__main__":
    main()
