"""The quick start: a teacher, a ReKD student and the MoCo v2 baseline, each beside the
random-init encoder of its architecture, with kNN and a linear probe. Runs on a laptop CPU.

`run(config, workdir) -> dict` (mode 'quickstart', configs/quickstart.py). Layout of WORKDIR
(rekd_jax.experiments.plan): one folder per row (teacher/, student/, baseline/, and
random_init/<arch>/), each with its eval_<mode>/ folders and row.json; results.json holds the
table. Each stage resumes like any pre-training run and finished rows are skipped, so rerunning
the command after an interruption continues where it stopped. The student's offline teacher is
teacher/encoders/student.
"""

from __future__ import annotations

import json
import os
import time

import ml_collections

from rekd_jax.core import fileio
from rekd_jax.experiments import plan
from rekd_jax.training import state as state_lib

STAGES = (
    ("teacher", "teacher", "MoCo v2 (teacher)"),
    ("student", "student", "ReKD (offline)"),
    ("seed", "student", "SEED"),
    ("baseline", "student", "MoCo v2"),
)


def teacher_of(run: ml_collections.ConfigDict) -> str:
    """'teacher' (the teacher stage's row) for a run that distils offline, else ''."""
    return "teacher" if state_lib.teacher_mode(run) == "offline" else ""


def arms(config: ml_collections.ConfigDict) -> list[plan.Arm]:
    """Random-init rows first (one per architecture), then the stages in order."""
    out, seen = [], set()
    for name, _, _ in STAGES:
        if name not in config.runs:
            continue
        run = config.runs[name]
        key = (run.student.arch, json.dumps(run.student.overrides.to_dict(), sort_keys=True))
        if key not in seen:
            seen.add(key)
            out.append(plan.random_init_arm(run, f"random_init/{run.student.arch}", group=name))
    for name, group, label in STAGES:
        if name in config.runs:
            run = config.runs[name]
            out.append(
                plan.Arm(
                    name=name,
                    arch=run.student.arch,
                    label=label,
                    config=run,
                    teacher=teacher_of(run),
                    group=group,
                )
            )
    return out


def targets(rows: list[dict], chance: float) -> list[str]:
    """The quick start's targets (README): what each reached, and whether it met the aim."""
    by_name = {r["name"]: r for r in rows}
    base = plan.random_init_rows(rows)
    if not all(m in r["eval"] for r in rows for m in ("knn", "linear")):
        return ["targets need both the kNN and the linear evaluation (eval_modes)"]
    knn = lambda r: r["eval"]["knn"]["top1"]
    lin = lambda r: r["eval"]["linear"]["top1"]
    lines = []
    if "teacher" in by_name:
        t = by_name["teacher"]
        gain = knn(t) - knn(base[t["arch"]])
        lines.append(
            f"teacher kNN gain over random init: {gain:+.1f} (target >= +15): "
            f"{'met' if gain >= 15 else 'NOT met'}"
        )
    if "baseline" in by_name:
        b = by_name["baseline"]
        d_knn, d_lin = knn(b) - knn(base[b["arch"]]), lin(b) - lin(base[b["arch"]])
        lines.append(
            f"MoCo v2 student over random init: kNN {d_knn:+.1f}, linear {d_lin:+.1f} "
            f"(target > 0 on both): {'met' if d_knn > 0 and d_lin > 0 else 'NOT met'}"
        )
    if "student" in by_name and "baseline" in by_name:
        s, b = by_name["student"], by_name["baseline"]
        gain = knn(s) - knn(b)
        precision = s.get("diagnostics", {}).get("positive_label_precision", float("nan"))
        lines.append(
            f"ReKD student over MoCo v2 student: kNN {gain:+.1f} (aim >= +3): "
            f"{'met' if gain >= 3 else 'NOT met'}; mined positives' label precision "
            f"{precision:.3f} = {precision / chance:.1f}x chance (aim >= 2x): "
            f"{'met' if precision >= 2 * chance else 'NOT met'}"
        )
    return lines


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs every row; returns {'rows', 'targets', 'chance', 'seconds'} (also results.json)."""
    start = time.time()
    # Five arms: keep what each compiles (run_arm), the students reuse the initialisers.
    rows = plan.run_plan(
        arms(config), workdir, config.evaluation, config.eval_modes, clear_caches=False
    )
    chance = plan.label_chance(config.evaluation.data, config.evaluation.data.eval_split)
    result = {
        "rows": rows,
        "chance": chance,
        "targets": targets(rows, chance),
        "seconds": round(time.time() - start, 1),
    }
    print(plan.format_table(rows, chance))
    print("\n".join(result["targets"]))
    path = os.path.join(workdir, "results.json")
    print(f"total {result['seconds']:.0f} s; results in {path}")
    fileio.write_json(path, result)
    return result
