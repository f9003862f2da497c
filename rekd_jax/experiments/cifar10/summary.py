"""The study's statistics, from rows alone: the validation choices, mean and spread over
seeds, margins, and the summaries of every stage (summarize)."""

from __future__ import annotations

import numpy as np

from rekd_jax.experiments.cifar10.scales import TRAIN_EXAMPLES, Scale
from rekd_jax.experiments.cifar10.settings import (
    ARMS,
    MODES,
    STUDENT_ARMS,
    TUNED,
    edge_lr,
    readings,
    search_name,
    select_name,
    setting_of,
    snapshot_arm_name,
)


def more_search_rows(scale: Scale, rows: dict, search: str, choices: dict) -> list[dict]:
    """The validation rows a later search chooses among (the chosen reading's own row
    included)."""
    names = [search_name(search, v) for v in readings(scale, search, choices)]
    if search == "rekd_long":
        names[0] = search_name("rekd", choices["rekd"])
    return [rows[n] for n in names if n in rows]


def choose(rows: list[dict]) -> dict:
    """The row with the best validation kNN top-1 (ties: the better linear probe)."""
    return max(
        rows, key=lambda r: (r["eval"]["knn"]["top1"], r["eval"].get("linear", {}).get("top1", 0.0))
    )


def _values(rows: list[dict], mode: str) -> list[float]:
    return [r["eval"][mode]["top1"] for r in rows if mode in r["eval"]]


def _stats(values: list[float]) -> dict:
    v = np.asarray(values, float)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "spread": float(v.max() - v.min()),
        "values": [float(x) for x in v],
    }


def precision(rows: list[dict]) -> float | None:
    values = [
        r.get("diagnostics", {}).get("positive_label_precision")
        for r in rows
        if r.get("method") == "rekd"
    ]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def margin(ours: list[dict], theirs: list[dict], mode: str) -> dict:
    """Mean of OURS minus mean of THEIRS, the range of the seed-paired differences, and whether
    the two arms' seed ranges are apart (every seed of one above every seed of the other)."""
    a, b = _values(ours, mode), _values(theirs, mode)
    by_seed_a = {r["seed"]: r["eval"][mode]["top1"] for r in ours if mode in r["eval"]}
    by_seed_b = {r["seed"]: r["eval"][mode]["top1"] for r in theirs if mode in r["eval"]}
    paired = [by_seed_a[s] - by_seed_b[s] for s in sorted(by_seed_a) if s in by_seed_b]
    return {
        "mean": float(np.mean(a) - np.mean(b)),
        "paired_min": float(min(paired)) if paired else None,
        "paired_max": float(max(paired)) if paired else None,
        "outside_seed_spread": bool(min(a) > max(b) or max(a) < min(b)),
    }


def mechanism_summary(rows: list[dict]) -> dict:
    """Per final arm: kNN / linear over seeds, label precision; ReKD's margins."""
    final = {arm: [r for r in rows if r["name"].startswith(f"final/{arm}/")] for arm in ARMS}
    out = {"arms": {}, "margins": {}}
    for arm, chosen in final.items():
        if chosen:
            out["arms"][arm] = {
                "label": ARMS[arm][0],
                "seeds": [r["seed"] for r in chosen],
                **{m: _stats(_values(chosen, m)) for m in MODES},
                "label_precision": precision(chosen),
            }
    for other in ("mocov2", "seed"):
        if final["rekd"] and final[other]:
            out["margins"][f"rekd_over_{other}"] = {
                m: margin(final["rekd"], final[other], m) for m in MODES
            }
    return out


def quality_summary(scale: Scale, rows: list[dict]) -> list[dict]:
    """One point per teacher: its test kNN / linear, its mined positives' label precision,
    and SEED's and ReKD's gain over the MoCo v2 student (mean and per-seed range)."""
    by_name = {r["name"]: r for r in rows}
    mocov2 = [r for r in rows if r["name"].startswith("final/mocov2/")]
    if not mocov2:
        return []
    base = {m: float(np.mean(_values(mocov2, m))) for m in MODES}
    teachers = [
        (f"{round(100 * f)}%", step, snapshot_arm_name(f), f"quality/{round(100 * f)}pct")
        for f, step in zip(scale.teacher_snapshots, scale.snapshot_steps())
    ]
    teachers.append(("100%", scale.teacher_steps, "teacher/mocov2", "final"))
    points = []
    for label, step, teacher, prefix in teachers:
        students = {
            arm: [r for r in rows if r["name"].startswith(f"{prefix}/{arm}/")]
            for arm in ("seed", "rekd")
        }
        if not any(students.values()) or teacher not in by_name:
            continue
        point = {
            "teacher": label,
            "teacher_step": step,
            "teacher_eval": by_name[teacher]["eval"],
            "label_precision": precision(students["rekd"]),
        }
        for arm, chosen in students.items():
            if chosen:  # an interrupted stage may have run one arm of a teacher only
                point[arm] = {m: _stats([v - base[m] for v in _values(chosen, m)]) for m in MODES}
        points.append(point)
    oracle = [r for r in rows if r["name"].startswith("final/rekd_oracle/")]
    if oracle:
        points.append(
            {
                "teacher": "true labels (oracle)",
                "teacher_step": None,
                "teacher_eval": None,
                "label_precision": 1.0,
                "rekd": {m: _stats([v - base[m] for v in _values(oracle, m)]) for m in MODES},
            }
        )
    return points


def train_examples(result: dict, scale: Scale) -> int | None:
    """The training split's size the study ran on (epochs = steps x batch / this)."""
    return result.get("train_examples") or TRAIN_EXAMPLES.get(scale.dataset)


def budget_rows(rows: list[dict], scale: Scale, arm: str, steps: int) -> list[dict]:
    """ARM's rows at STEPS student steps: the budget axis's, or at the student budget the final
    stage's when the axis did not run the arm there."""
    found = [r for r in rows if r["name"].startswith(f"budget/{arm}/{steps}/")]
    if not found and steps == scale.student_steps:
        found = [r for r in rows if r["name"].startswith(f"final/{arm}/")]
    return found


def budget_summary(scale: Scale, rows: list[dict], size: int | None) -> dict:
    """Per budget arm and student budget: epochs, seeds, kNN / linear over seeds and the mined
    positives' label precision; the teachers' and the random-init student's test scores (the
    horizontal lines of the figure). {} until a budget row exists."""
    if not any(r["name"].startswith("budget/") for r in rows):
        return {}
    by_name = {r["name"]: r for r in rows}
    out = {"arms": {}, "teachers": {}, "random_init": None}
    for arm in ARMS:
        if not any(r["name"].startswith(f"budget/{arm}/") for r in rows):
            continue
        points = []
        for steps in (scale.student_steps, *scale.budget_steps):
            chosen = budget_rows(rows, scale, arm, steps)
            if chosen:
                points.append(
                    {
                        "steps": steps,
                        "epochs": scale.epochs(steps, size) if size else None,
                        "seeds": [r["seed"] for r in chosen],
                        **{m: _stats(_values(chosen, m)) for m in MODES},
                        "label_precision": precision(chosen),
                    }
                )
        out["arms"][arm] = {"label": ARMS[arm][0], "teacher": ARMS[arm][3], "points": points}
    for teacher in ("teacher/mocov2", "teacher/supervised"):
        if teacher in by_name:
            out["teachers"][teacher] = {m: _top1_of(by_name[teacher], m) for m in MODES}
    init = by_name.get(f"random_init/{scale.mechanism_student}")
    if init:
        out["random_init"] = {m: _top1_of(init, m) for m in MODES}
    return out


def _top1_of(row: dict, mode: str) -> float | None:
    return row["eval"][mode]["top1"] if mode in row["eval"] else None


def lead_summary(budget: dict, quality: list[dict], mocov2_final: list[dict]) -> list[dict]:
    """Each distilled arm's gain over the MoCo v2 student at the same budget against its
    teacher's lead there (teacher kNN minus the MoCo v2 student's mean kNN): the budget axis's
    points, and the teacher-quality stage's (the MoCo v2 teacher's snapshots at the student
    budget)."""
    points = []
    mocov2 = {p["steps"]: p for p in budget.get("arms", {}).get("mocov2", {}).get("points", [])}
    for arm, entry in budget.get("arms", {}).items():
        teacher = budget["teachers"].get(entry["teacher"])
        if not teacher:
            continue
        for point in entry["points"]:
            base = mocov2.get(point["steps"])
            if base is None:
                continue
            points.append(
                {
                    "arm": arm,
                    "source": "budget",
                    "teacher": entry["teacher"],
                    "steps": point["steps"],
                    "epochs": point["epochs"],
                    "lead": teacher["knn"] - base["knn"]["mean"],
                    **{m: point[m]["mean"] - base[m]["mean"] for m in MODES},
                }
            )
    final = float(np.mean(_values(mocov2_final, "knn"))) if mocov2_final else None
    for point in quality:
        if not budget or final is None or not point.get("teacher_eval"):
            continue
        if point["teacher"] == "100%":
            continue  # the full teacher at the student budget is the budget axis's point
        for arm in ("seed", "rekd"):
            if arm in point:  # its gains are over the final stage's MoCo v2 mean already
                points.append(
                    {
                        "arm": arm,
                        "source": "quality",
                        "teacher": f"MoCo v2 teacher at {point['teacher']}",
                        "steps": None,
                        "epochs": None,
                        "lead": point["teacher_eval"]["knn"]["top1"] - final,
                        **{m: point[arm][m]["mean"] for m in MODES},
                    }
                )
    return points


def students_summary(rows: list[dict], scale: Scale) -> dict:
    """arch -> {arm: {'knn', 'linear', 'steps'}} of the five-student comparison."""
    out = {}
    for r in rows:
        parts = r["name"].split("/")
        if r["name"].startswith("students/"):
            arch, arm = parts[1], parts[2]
        elif r["name"].startswith("final/") and parts[2] == "s0" and parts[1] in STUDENT_ARMS:
            arch, arm = scale.mechanism_student, parts[1]
        elif r["name"].startswith("random_init/") and r["arch"] != f"{scale.teacher_arch}_teacher":
            arch, arm = r["arch"], "random_init"
        else:
            continue
        out.setdefault(arch, {})[arm] = {
            m: r["eval"][m]["top1"] for m in MODES if m in r["eval"]
        } | {"steps": r["steps"]}
    return out


def choose_lr(scale: Scale, rows: dict, arm: str, variant: str, lrs) -> float:
    """The peak lr among LRS whose validation run of ARM at VARIANT scores best."""
    by_name = {select_name(arm, variant, lr): lr for lr in lrs}
    return by_name[choose([rows[name] for name in by_name if name in rows])["name"]]


def summarize(scale: Scale, result: dict) -> None:
    """Adds the summaries of result['rows'] to RESULT (in place)."""
    rows = result["rows"]
    by_name = {r["name"]: r for r in rows}
    settings = result["choices"].get("settings")
    if settings:
        result["grid"] = {}
        for arm in TUNED:
            variant, _ = setting_of(arm, settings, scale)
            points = [
                [lr] + [by_name[name]["eval"][m]["top1"] for m in MODES]
                for lr in (*scale.lr_grid, edge_lr(scale))
                if (name := select_name(arm, variant, lr)) in by_name
            ]
            result["grid"][arm] = {"label": ARMS[arm][0], "setting": variant, "points": points}
    result["mechanism"] = mechanism_summary(rows)
    result["quality"] = quality_summary(scale, rows)
    result["students"] = students_summary(rows, scale)
    result["budget"] = budget_summary(scale, rows, train_examples(result, scale))
    result["lead"] = lead_summary(
        result["budget"],
        result["quality"],
        [r for r in rows if r["name"].startswith("final/mocov2/")],
    )
    result["seconds"] = {
        group: round(
            sum(
                r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0)
                for r in rows
                if r["group"] == group
            ),
            1,
        )
        for group in dict.fromkeys(r["group"] for r in rows)
    }
