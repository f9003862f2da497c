"""The quick start: a teacher, then ReKD, SEED and MoCo v2 students, each beside the
random-init encoder of its architecture, with kNN and a linear probe. Runs on a laptop CPU.

`run(config, workdir) -> dict` (mode 'quickstart', configs/quickstart.py). Layout of WORKDIR
(rekd_jax.experiments.plan): one folder per row (teacher/, student/, seed/, baseline/, and
random_init/<arch>/), each with its eval_<mode>/ folders and row.json; results.json holds the
table and the checks (CHECKS). Each stage resumes like any pre-training run and finished rows
are skipped, so rerunning the command after an interruption continues where it stopped. The
students' offline teacher is teacher/encoders/student. config.rng_seed (a FieldReference
shared by every stage's rng_seed) seeds the run; with config.rng_seeds (the `:seeds` variant)
the whole quick start runs once per seed in WORKDIR/seed_<N>, and WORKDIR/results.json holds
each row's mean, min and max over the seeds (run_seeds).
"""

from __future__ import annotations

import json
import os
import time

import ml_collections
import numpy as np

from rekd_jax import methods
from rekd_jax.core import fileio
from rekd_jax.experiments import plan

STAGES = (
    ("teacher", "teacher", "MoCo v2 (teacher)"),
    ("student", "student", "ReKD (offline)"),
    ("seed", "student", "SEED"),
    ("baseline", "student", "MoCo v2"),
)


def stage_names(config: ml_collections.ConfigDict) -> list[str]:
    """The names of config.runs in the order they run (a ConfigDict lists its keys
    alphabetically)."""
    return [name for name, _, _ in STAGES if name in config.runs]


def teacher_of(run: ml_collections.ConfigDict) -> str:
    """'teacher' (the teacher stage's row) for a run that distils offline, else ''."""
    return "teacher" if methods.teacher_plan(run).mode == "offline" else ""


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


# The quick start's checks, each printed with its value and whether it holds (with several
# seeds: on how many): (name, threshold, measure). Each held on every seed measured
# (docs/results.md); ReKD's margins over the MoCo v2 and SEED students are reported beside
# them, not checked.
CHECKS = (
    ("teacher kNN gain over random init", 5.0, "teacher_gain"),
    ("ReKD student over random init, kNN", 10.0, "student_knn_gain"),
    ("MoCo v2 student over random init, linear", 0.0, "baseline_linear_gain"),
    ("mined positives' label precision / chance", 1.5, "precision_ratio"),
)
MARGINS = (("rekd_over_mocov2", "MoCo v2"), ("rekd_over_seed", "SEED"))


def holds(value: float, threshold: float) -> bool:
    """A check's rule: at least a non-zero threshold, above a zero one."""
    return value >= threshold if threshold else value > 0


def measures(rows: list[dict], chance: float) -> dict[str, float]:
    """The quantities the checks and the margins read, from one run's rows."""
    by_name = {r["name"]: r for r in rows}
    base = plan.random_init_rows(rows)
    knn = lambda r: r["eval"]["knn"]["top1"]
    lin = lambda r: r["eval"]["linear"]["top1"]
    out = {}
    if "teacher" in by_name:
        t = by_name["teacher"]
        out["teacher_gain"] = knn(t) - knn(base[t["arch"]])
    if "baseline" in by_name:
        b = by_name["baseline"]
        out["baseline_knn_gain"] = knn(b) - knn(base[b["arch"]])
        out["baseline_linear_gain"] = lin(b) - lin(base[b["arch"]])
    if "student" in by_name:
        s = by_name["student"]
        out["student_knn_gain"] = knn(s) - knn(base[s["arch"]])
        precision = s.get("diagnostics", {}).get("positive_label_precision", float("nan"))
        out["precision_ratio"] = precision / chance
        for other, key in (("baseline", "rekd_over_mocov2"), ("seed", "rekd_over_seed")):
            if other in by_name:
                out[key] = knn(s) - knn(by_name[other])
                out[key + "_linear"] = lin(s) - lin(by_name[other])
    return out


def targets(rows: list[dict], chance: float) -> list[str]:
    """The checks of one run: each value, its threshold, and whether it holds."""
    if not all(m in r["eval"] for r in rows for m in ("knn", "linear")):
        return ["checks need both the kNN and the linear evaluation (eval_modes)"]
    values = measures(rows, chance)
    lines = []
    for name, threshold, key in CHECKS:
        if key in values:
            value = values[key]
            text = f"{value:.1f}x" if key == "precision_ratio" else f"{value:+.1f}"
            bound = f"{threshold:g}x" if key == "precision_ratio" else f"{threshold:+g}"
            bound = bound if threshold else "0"
            sign = ">=" if threshold else ">"
            verdict = "yes" if holds(value, threshold) else "NO"
            lines.append(f"{name}: {text} (expected {sign} {bound}): {verdict}")
    for key, other in MARGINS:
        if key in values:
            lines.append(
                f"ReKD student over {other} student: kNN {values[key]:+.1f}, linear "
                f"{values[key + '_linear']:+.1f}"
            )
    return lines


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The quick start at config.rng_seed, or at each of config.rng_seeds (run_seeds)."""
    if config.get("rng_seeds"):
        return run_seeds(config, workdir)
    return run_once(config, workdir)


def run_once(config: ml_collections.ConfigDict, workdir: str) -> dict:
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


def _spread(values: list[float]) -> dict:
    return {
        "mean": float(np.mean(values)),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
        "values": [float(v) for v in values],
    }


def spread_summary(per_seed: dict[int, dict]) -> dict:
    """Mean, min and max over seeds of every row's kNN, linear and label precision, of each
    check's value and of ReKD's margins over MoCo v2 and SEED (paired by seed)."""
    results = list(per_seed.values())
    rows = {}
    for row in results[0]["rows"]:
        same = [next(r for r in res["rows"] if r["name"] == row["name"]) for res in results]
        entry = {"label": row["label"], "arch": row["arch"], "steps": row["steps"]}
        for mode in ("knn", "linear"):
            if all(mode in r["eval"] for r in same):
                entry[mode] = _spread([r["eval"][mode]["top1"] for r in same])
        precision = [r.get("diagnostics", {}).get("positive_label_precision") for r in same]
        if row.get("method") == "rekd" and all(p is not None for p in precision):
            entry["label_precision"] = _spread(precision)
        rows[row["name"]] = entry
    values = [measures(res["rows"], res["chance"]) for res in results]
    keys = [k for k in values[0] if all(k in v for v in values)]
    return {"rows": rows, "measures": {k: _spread([v[k] for v in values]) for k in keys}}


def format_spread(summary: dict, seeds) -> str:
    """The table of means and ranges over seeds, then the checks and ReKD's margins."""
    rng = lambda s: f"{s['mean']:5.1f} [{s['min']:.1f}, {s['max']:.1f}]"
    header = (
        f"{'run':<22} {'method':<20} {'kNN mean [min, max]':>22} {'linear mean [min, max]':>24}"
    )
    lines = [header, "-" * len(header)]
    for name, row in summary["rows"].items():
        knn = rng(row["knn"]) if "knn" in row else "-"
        lin = rng(row["linear"]) if "linear" in row else "-"
        lines.append(f"{name:<22.22} {row['label']:<20.20} {knn:>22} {lin:>24}")
    lines.append(f"(top-1 in %, over seeds {', '.join(str(s) for s in seeds)})")
    m = summary["measures"]
    for name, threshold, key in CHECKS:
        if key in m:
            count = sum(holds(v, threshold) for v in m[key]["values"])
            unit, spec = ("x", ".1f") if key == "precision_ratio" else ("", "+.1f")
            lines.append(
                f"{name}: {m[key]['mean']:{spec}}{unit} [{m[key]['min']:{spec}}, "
                f"{m[key]['max']:{spec}}] (expected {'>=' if threshold else '>'} {threshold:g}"
                f"{unit}): holds on {count} of {len(m[key]['values'])} seeds"
            )
    for key, other in MARGINS:
        if key in m:
            lines.append(
                f"ReKD student over {other} student (same seed): kNN {m[key]['mean']:+.1f} "
                f"[{m[key]['min']:+.1f}, {m[key]['max']:+.1f}], linear "
                f"{m[key + '_linear']['mean']:+.1f} [{m[key + '_linear']['min']:+.1f}, "
                f"{m[key + '_linear']['max']:+.1f}]"
            )
    return "\n".join(lines)


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The quick start once per seed of config.rng_seeds, each in WORKDIR/seed_<N> (resumable
    like a single run), then the mean and range over seeds of every row (WORKDIR/results.json)."""
    start = time.time()
    seeds = [int(s) for s in config.rng_seeds]
    original = config.rng_seed
    per_seed = {}
    try:
        for seed in seeds:
            config.rng_seed = seed  # a FieldReference: reseeds every stage
            print(f"quick start, seed {seed}", flush=True)
            per_seed[seed] = run_once(config, os.path.join(workdir, f"seed_{seed}"))
    finally:
        config.rng_seed = original
    summary = spread_summary(per_seed)
    result = {
        "seeds": seeds,
        **summary,
        "seconds_per_seed": {s: r["seconds"] for s, r in per_seed.items()},
        "seconds": round(time.time() - start, 1),
    }
    print(format_spread(summary, seeds), flush=True)
    path = os.path.join(workdir, "results.json")
    print(f"total {result['seconds']:.0f} s; results in {path}")
    fileio.write_json(path, result)
    return result
