"""Figures of the CIFAR-10 study, drawn from its results dict alone (results.json), so a
committed results.json redraws them: `python -m rekd_jax.tools.report RESULTS.json`.

  mechanism.png  test top-1 of each arm over seeds (bar: mean, whiskers: min-max, dots: seeds),
                 the random-init encoder as a dashed line
  quality.png    gain over the MoCo v2 student against the teacher's mined-positive label
                 precision (chance marked) and against the teacher's own kNN, SEED and ReKD,
                 whiskers over seeds; true-label relations as the last point
  selection.png  validation kNN against the peak learning rate for every arm (chosen: ringed)
  mocov2_curve.png  the MoCo v2 student's validation kNN during training beside the
                 random-init encoder's
  students.png   the five students: random init, MoCo v2, SEED and ReKD
  budget.png     test top-1 of the budget axis's arms against the student's epochs (whiskers:
                 min-max over seeds), each teacher's and the random-init student's as lines
  lead.png       each distilled arm's gain over the MoCo v2 student at the same budget against
                 its teacher's lead there (teacher kNN minus the MoCo v2 student's): the budget
                 axis and the teacher-quality stage pooled
One colour per method in every figure (rekd_jax.tools.plot_style.METHOD_COLOURS).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from rekd_jax.tools import plot_style

# Colours from plot_style.METHOD_COLOURS (one colour per method in every figure), by label.
COLOURS = {
    label: plot_style.METHOD_COLOURS[key]
    for label, key in (
        ("random init", plot_style.RANDOM_INIT),
        ("MoCo v2", "MoCo v2"),
        ("SEED", "SEED"),
        ("ReKD", "ReKD (offline)"),
        ("ReKD, supervised teacher (oracle)", "ReKD (supervised teacher)"),
        ("ReKD, true-label relations (oracle)", "ReKD (oracle relations)"),
        ("SEED, supervised teacher (oracle)", "SEED (supervised teacher)"),
        ("ReKD, k true-label positives (oracle)", "ReKD (k oracle relations)"),
        ("ReKD in the teacher's space (extension)", "ReKD (teacher's space)"),
        ("teacher", "teacher"),
    )
}
ARM_LABELS = {
    "mocov2": "MoCo v2",
    "seed": "SEED",
    "rekd": "ReKD",
    "rekd_supervised": "ReKD, supervised teacher (oracle)",
    "rekd_oracle": "ReKD, true-label relations (oracle)",
    "seed_supervised": "SEED, supervised teacher (oracle)",
    "rekd_oracle_k": "ReKD, k true-label positives (oracle)",
    "rekd_space": "ReKD in the teacher's space (extension)",
}
SHORT_LABELS = {
    "mocov2": "MoCo v2",
    "seed": "SEED",
    "rekd": "ReKD",
    "rekd_supervised": "ReKD\nsupervised\nteacher (oracle)",
    "rekd_oracle": "ReKD\ntrue-label\nrelations (oracle)",
    "seed_supervised": "SEED\nsupervised\nteacher (oracle)",
    "rekd_oracle_k": "ReKD\nk true-label\npositives (oracle)",
    "rekd_space": "ReKD\nteacher's space\n(extension)",
}
MODE_TITLES = {"knn": "weighted kNN top-1 (%)", "linear": "linear probe top-1 (%)"}


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _random_init(result: Mapping, name: str, mode: str):
    for r in result["rows"]:
        if r["name"] == name:
            return r["eval"].get(mode, {}).get("top1")
    return None


def mechanism(result: Mapping, path: str) -> str | None:
    arms = result.get("mechanism", {}).get("arms", {})
    if not arms:
        return None
    arch = result["scale_settings"]["mechanism_student"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, mode in zip(axes, ("knn", "linear")):
        for i, (arm, entry) in enumerate(arms.items()):
            stats, label = entry[mode], ARM_LABELS[arm]
            colour = COLOURS[label]
            ax.bar(i, stats["mean"], color=colour, alpha=0.75)
            ax.errorbar(
                i,
                stats["mean"],
                yerr=[[stats["mean"] - stats["min"]], [stats["max"] - stats["mean"]]],
                color="black",
                capsize=5,
            )
            ax.scatter([i] * len(stats["values"]), stats["values"], color="black", s=12, zorder=3)
        base = _random_init(result, f"random_init/{arch}", mode)
        if base is not None:
            ax.axhline(
                base,
                color=COLOURS["random init"],
                linestyle="--",
                label=f"random init ({base:.1f})",
            )
            ax.legend(loc="lower right", fontsize=8)
        low = min(min(e[mode]["min"] for e in arms.values()), base or 100.0)
        ax.set_ylim(max(0.0, low - 5), None)
        ax.set_xticks(range(len(arms)))
        ax.set_xticklabels([SHORT_LABELS[a] for a in arms], fontsize=7)
        ax.set_ylabel(f"test {MODE_TITLES[mode]}")
        ax.set_title(
            f"{arch} student, {len(next(iter(arms.values()))[mode]['values'])} seeds"
            f" ({'kNN' if mode == 'knn' else 'linear probe'})"
        )
    return _save(fig, path)


def quality(result: Mapping, path: str) -> str | None:
    points = result.get("quality", [])
    if not points:
        return None
    chance = result.get("chance")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, x_key in zip(axes, ("precision", "teacher_knn")):
        for arm, offset in (("seed", -0.004), ("rekd", 0.004)):
            xs, ys, lo, hi = [], [], [], []
            for p in points:
                stats = p.get(arm, {}).get("knn")
                if not stats:
                    continue
                if x_key == "precision":
                    x = p["label_precision"]
                else:
                    x = (p["teacher_eval"] or {}).get("knn", {}).get("top1")
                if x is None:
                    continue
                xs.append(x + (offset if x_key == "precision" else 0.0))
                ys.append(stats["mean"])
                lo.append(stats["mean"] - stats["min"])
                hi.append(stats["max"] - stats["mean"])
            if xs:  # points in teacher order (training progress), joined only by a faint line
                ax.errorbar(
                    xs,
                    ys,
                    yerr=[lo, hi],
                    color=COLOURS[ARM_LABELS[arm]],
                    marker="o",
                    capsize=4,
                    linestyle=":",
                    linewidth=0.8,
                    label=ARM_LABELS[arm],
                )
        ax.axhline(0.0, color=COLOURS["MoCo v2"], linestyle="--", label="MoCo v2 student")
        if x_key == "precision":
            if chance:
                ax.axvline(chance, color="grey", linestyle=":", label=f"chance ({chance:.2f})")
            for p in points:
                if p["label_precision"] is not None:
                    ax.annotate(
                        p["teacher"],
                        (p["label_precision"], 0),
                        fontsize=7,
                        xytext=(2, -12),
                        textcoords="offset points",
                        rotation=45,
                    )
            ax.set_xlabel("teacher's mined-positive label precision (fraction)")
            ax.set_xlim(0, 1.05)
        else:
            ax.set_xlabel("teacher's own test kNN top-1 (%)")
        ax.set_ylabel("student test kNN top-1 minus MoCo v2's (points)")
        ax.legend(fontsize=8)
    axes[0].set_title("Gain over MoCo v2 against relation quality")
    axes[1].set_title("Gain over MoCo v2 against teacher kNN")
    return _save(fig, path)


def selection(result: Mapping, path: str) -> str | None:
    grid = result.get("grid", {})
    if not any(entry["points"] for entry in grid.values()):
        return None
    chosen = result.get("choices", {}).get("lr", {})
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for arm, entry in grid.items():
        points = sorted((p[0], p[1]) for p in entry["points"])
        if not points:
            continue
        colour = COLOURS[ARM_LABELS[arm]]
        ax.plot(*zip(*points), marker="o", color=colour, label=ARM_LABELS[arm])
        best = [p for p in points if p[0] == chosen.get(arm)]
        if best:
            ax.scatter(*zip(*best), s=150, facecolors="none", edgecolors=colour)
    base = _random_init(result, "select/random_init", "knn")
    if base is not None:
        ax.axhline(base, color=COLOURS["random init"], linestyle="--", label="random init")
    ax.set_xscale("log", base=2)
    lrs = sorted({p[0] for entry in grid.values() for p in entry["points"]})
    ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
    ax.minorticks_off()
    ax.set_xlabel(f"peak learning rate (batch {result['scale_settings']['batch']})")
    ax.set_ylabel("validation kNN top-1 (%)")
    ax.set_title("Learning-rate grid on validation (ringed: chosen)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def mocov2_curve(result: Mapping, path: str) -> str | None:
    curves = [
        (r["name"], r["knn_curve"])
        for r in result["rows"]
        if r.get("method") == "mocov2"
        and r.get("knn_curve")
        and r["group"] != "teacher"
        and r["group"] in ("grid", "search", "final")
        and not r.get("reused")
    ]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    shades = np.linspace(0.35, 1.0, len(curves))
    for (name, curve), shade in zip(curves, shades):
        steps, values = zip(*curve)
        ax.plot(
            steps,
            values,
            marker="o",
            color=COLOURS["MoCo v2"],
            alpha=float(shade),
            label=name.replace("select/mocov2/default/", "").replace("final/mocov2/", ""),
        )
    base = _random_init(result, "select/random_init", "knn")
    if base is not None:
        ax.axhline(
            base, color=COLOURS["random init"], linestyle="--", label=f"random init ({base:.1f})"
        )
    ax.set_xlabel("training step")
    ax.set_ylabel("validation kNN top-1 (%)")
    ax.set_title("MoCo v2 student during training")
    ax.legend(fontsize=7)
    return _save(fig, path)


def students(result: Mapping, path: str) -> str | None:
    data = result.get("students", {})
    if not data:
        return None
    arms = (
        ("random_init", "random init"),
        ("mocov2", "MoCo v2"),
        ("seed", "SEED"),
        ("rekd", "ReKD"),
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(arms)
    for ax, mode in zip(axes, ("knn", "linear")):
        for j, (arm, label) in enumerate(arms):
            xs = [i + (j - 1.5) * width for i in range(len(data))]
            ys = [data[a].get(arm, {}).get(mode, np.nan) for a in data]
            ax.bar(xs, ys, width, color=COLOURS[label], label=label)
        ax.set_xticks(range(len(data)))
        ax.set_xticklabels(list(data), fontsize=8, rotation=15)
        ax.set_ylabel(f"test {MODE_TITLES[mode]}")
        ax.set_title(f"Five students, one seed ({'kNN' if mode == 'knn' else 'linear probe'})")
        ax.legend(fontsize=7)
    return _save(fig, path)


TEACHER_LINES = {
    "teacher/mocov2": ("MoCo v2 teacher", "--"),
    "teacher/supervised": (
        "supervised teacher (oracle)",
        ":",
    ),
}


def budget(result: Mapping, path: str) -> str | None:
    data = result.get("budget", {})
    if not data.get("arms"):
        return None
    arch = result["scale_settings"]["mechanism_student"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, mode in zip(axes, ("knn", "linear")):
        for arm, entry in data["arms"].items():
            points = [p for p in entry["points"] if p.get(mode)]
            xs = [p["epochs"] if p["epochs"] is not None else p["steps"] for p in points]
            means = np.array([p[mode]["mean"] for p in points])
            low = means - np.array([p[mode]["min"] for p in points])
            high = np.array([p[mode]["max"] for p in points]) - means
            ax.errorbar(
                xs,
                means,
                yerr=[low, high],
                marker="o",
                capsize=4,
                color=COLOURS[ARM_LABELS[arm]],
                label=ARM_LABELS[arm],
            )
        for teacher, scores in data.get("teachers", {}).items():
            label, style = TEACHER_LINES.get(teacher, (teacher, "-."))
            if scores.get(mode) is not None:
                ax.axhline(
                    scores[mode],
                    color=COLOURS["teacher"],
                    linestyle=style,
                    label=f"{label} ({scores[mode]:.1f})",
                )
        init = (data.get("random_init") or {}).get(mode)
        if init is not None:
            ax.axhline(
                init,
                color=COLOURS["random init"],
                linestyle="--",
                label=f"random init ({init:.1f})",
            )
        ax.set_xscale("log")
        ax.set_xlabel("student epochs (each run's cosine over its own length)")
        ax.set_ylabel(f"test {MODE_TITLES[mode]}")
        ax.set_title(f"Budget axis, {arch} student ({'kNN' if mode == 'knn' else 'linear probe'})")
        ax.legend(fontsize=6, loc="lower right")
    return _save(fig, path)


def lead(result: Mapping, path: str) -> str | None:
    points = result.get("lead", [])
    if not points:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    markers = {"budget": "o", "quality": "^"}
    for ax, mode in zip(axes, ("knn", "linear")):
        seen = set()
        for p in points:
            label = ARM_LABELS[p["arm"]]
            key = (label, p["source"])
            ax.scatter(
                p["lead"],
                p[mode],
                color=COLOURS[label],
                marker=markers[p["source"]],
                s=40,
                label=None
                if key in seen
                else f"{label}{' (teacher snapshots)' if p['source'] == 'quality' else ''}",
            )
            seen.add(key)
        ax.axhline(0.0, color=COLOURS["MoCo v2"], linestyle="--", linewidth=1)
        ax.axvline(0.0, **plot_style.CHANCE_STYLE)
        ax.set_xlabel("teacher's lead: teacher kNN - MoCo v2 student's kNN, same budget")
        ax.set_ylabel(f"gain over the MoCo v2 student, {MODE_TITLES[mode]}")
        ax.set_title(f"Gain against the teacher's lead ({'kNN' if mode == 'knn' else 'linear'})")
        ax.legend(fontsize=6)
    return _save(fig, path)


def draw(result: Mapping, out_dir: str) -> dict:
    """Every figure the results allow, into OUT_DIR; returns {name: path}."""
    drawn = {}
    for name, function in (
        ("mechanism", mechanism),
        ("quality", quality),
        ("selection", selection),
        ("mocov2_curve", mocov2_curve),
        ("students", students),
        ("budget", budget),
        ("lead", lead),
    ):
        path = function(result, os.path.join(out_dir, f"{name}.png"))
        if path:
            drawn[name] = path
    return drawn
