"""Figures from run directories, without TensorFlow: training curves, relation diagnostics,
same-class / different-class similarity histograms, and result bar charts.

    python -m rekd_jax.tools.report WORKDIR [WORKDIR ...] [--out DIR]
    python -m rekd_jax.tools.report STUDY/results.json [--out DIR]


WORKDIR is a pre-training workdir (metrics.jsonl), a row of a quick start or study (its
features/pooled_test.npz cache; random-init rows have only that), or a quick-start / study
workdir (row.json folders beneath it); several compare on one figure. Run directories give
curves.png, relations.png (ReKD runs) and similarity.png in --out (default: the first WORKDIR's
plots/); a quick-start / study workdir gives curves.png, relations.png, results_knn.png,
results_linear.png and similarity_<arch>.png in its own plots/ (--out when it is the only
WORKDIR, else --out/<its name>). The CIFAR-10 study, the quick start and the Colab notebook use
the same functions.

Every figure follows the same rules, so figures read alike and compare: a title in words,
labelled axes with units, a dashed chance line wherever an accuracy or a precision is drawn,
one colour per method in every figure (METHOD_COLOURS, via `method_colour`), the spread of
several seeds (error bars on bars, a band around curves), histogram ranges fitted to the data
and shared by a figure's panels, and no axis shared by quantities of different meaning (each
objective's loss has its own). What each panel shows: docs/usage.md#plots. New figures use the
same helpers.
"""

from __future__ import annotations

# First: run as a command, Ctrl-C ends it with one line from here on, the imports included.
from rekd_jax.core import interrupts  # noqa: F401

# isort: split
import argparse
import glob
import json
import os
import sys
import zipfile
from collections.abc import Mapping, Sequence

import ml_collections
import numpy as np

from rekd_jax.core import errors
from rekd_jax.core import logging as logging_lib
from rekd_jax.data import pipeline
from rekd_jax.tools.plot_style import (
    ARCH_LINESTYLES,
    CHANCE_STYLE,
    DIFFERENT_CLASS_COLOUR,
    RANDOM_INIT,
    SAME_CLASS_COLOUR,
    method_colour,
)

CURVES = ("loss", "contrast_accuracy", "positive_similarity", "learning_rate")
RELATIONS = ("positive_label_precision", "positives_per_anchor", "prototype_entropy")

# Metric -> (title, y-axis label, chance: None, 'labels' (label agreement of two random
# examples) or 'queue' (one candidate among K + 1)).
METRICS = {
    "loss": ("Training loss", "loss (nats)", None),
    "contrast_accuracy": (
        # the fraction of queries whose own key outscores all K queue keys: harder negatives
        # in the queue lower it while the representation improves (docs/usage.md#plots)
        "Instance top-1: own key above all K queue keys\n(how hard the negatives are,"
        " not a quality measure)",
        "fraction of queries",
        "queue",
    ),
    "positive_similarity": (
        "Cosine similarity of the positive pair\n(query and own key; SEED: student and teacher)",
        "cosine similarity",
        None,
    ),
    "learning_rate": ("Learning rate", "learning rate", None),
    "knn/top1": (
        "kNN monitor (weighted kNN of the student's backbone)",
        "top-1 accuracy (fraction)",
        "labels",
    ),
    "top1_agreement": (
        "SEED: student and teacher pick the same candidate",
        "agreement (fraction)",
        "queue",
    ),
    "train_top1": ("Training-batch accuracy", "accuracy (fraction)", "labels"),
    "positive_label_precision": (
        "Label precision of the mined positives",
        "precision (fraction)",
        "labels",
    ),
    "positives_per_anchor": ("Mined positives per anchor", "positives (count)", None),
    "prototype_entropy": ("Prototype usage entropy", "entropy / log M (0 to 1)", None),
}
# The objective behind each method's 'loss' (a `method_name` key): objectives differ in scale
# and meaning, so each gets its own loss panel.
LOSS_OBJECTIVES = {
    "MoCo v2": "InfoNCE over own key + queue",
    "SEED": "soft cross-entropy to the teacher's similarities",
    "ReKD (offline)": "relation loss + λ·InfoNCE",
    "ReKD (online)": "relation loss + λ·InfoNCE + the teacher's InfoNCE",
    "ReKD (oracle relations)": "true-label relation loss + λ·InfoNCE",
    "SupCon (oracle)": "true-label relation loss + λ·InfoNCE",
    "supervised": "cross-entropy on the labels",
}
MODES = {"knn": "kNN top-1 accuracy", "linear": "Linear-probe top-1 accuracy"}


def _pyplot():
    # Here, not at the top: matplotlib is slow to import, and the Agg backend is chosen only
    # when a figure is drawn (a notebook keeps its own).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def method_name(config: Mapping | None) -> str:
    """The METHOD_COLOURS key of a pre-training config (a run's config.json); None is an
    untrained encoder."""
    if not config:
        return RANDOM_INIT
    method = config.get("method", "")
    if method == "rekd":
        rekd = config.get("rekd", {})
        if rekd.get("teacher") == "none":
            return "SupCon (oracle)"
        if rekd.get("relation") == "oracle":
            return "ReKD (oracle relations)"
        return f"ReKD ({rekd.get('teacher', 'online')})"
    return {"mocov2": "MoCo v2", "seed": "SEED", "supervised": "supervised"}.get(method, method)


def read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def run_config(run_dir: str) -> dict | None:
    """The config a pre-training run wrote (RUN_DIR/config.json); None for a random-init row."""
    config = read_json(os.path.join(run_dir, "config.json"))
    return config if config and config.get("mode") == "pretrain" else None


def run_method(run_dir: str) -> str:
    """The method of a pre-training workdir or a row folder."""
    return method_name(run_config(run_dir))


def row_method(root: str, row: Mapping) -> str:
    """The method of a row of a quick start or study (its folder's config.json)."""
    if row.get("label") == RANDOM_INIT or not row.get("steps"):
        return RANDOM_INIT
    return run_method(os.path.join(root, row["name"]))


def label_chance(labels) -> float:
    """Probability that two random examples share a label (1 / classes when balanced): the
    chance level of a top-1 accuracy and of the mined positives' label precision."""
    counts = np.bincount(np.asarray(labels, np.int64))
    p = counts / max(1, counts.sum())
    return float(np.sum(p * p))


def run_label_chance(run_dir: str) -> float | None:
    """label_chance of a run's evaluation labels: its cached features, else the evaluation
    split of its dataset (None when neither can be read)."""
    feats = knn_features(run_dir)
    if feats is not None:
        return label_chance(feats[1])
    config = run_config(run_dir)
    if config is None:
        return None
    data = ml_collections.ConfigDict(config["data"])
    split = config.get("knn_monitor", {}).get("query_split") or data.eval_split
    try:
        return label_chance(pipeline.split_metadata(data, split)["labels"])
    except (OSError, ValueError):  # the dataset cannot be read from here
        return None


def queue_chance(run_dir: str) -> float | None:
    """1 / (K + 1): one candidate among the own key and a queue of K (its method's block)."""
    config = run_config(run_dir)
    if config is None:
        return None
    size = config.get(config.get("method", ""), {}).get("queue_size")
    return 1.0 / (size + 1) if size else None


def draw_chance(ax, value: float | None, text: str = "chance") -> None:
    """The dashed horizontal chance line, named at its right end."""
    if value is None:
        return
    ax.axhline(value, **CHANCE_STYLE)
    ax.text(
        1.0,
        value,
        f"{text} ",
        transform=ax.get_yaxis_transform(),
        ha="right",
        va="bottom",
        fontsize=7,
        alpha=0.8,
    )


def style_axes(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def save(fig, out: str) -> str:
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")  # a legend outside the panels included
    _pyplot().close(fig)
    return out


def read_curves(run_dir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (steps, values)} of every scalar in RUN_DIR/metrics.jsonl (train/ prefix dropped);
    the kNN monitor appears as 'knn/top1'."""
    series: dict[str, list] = {}
    for record in logging_lib.read_jsonl(os.path.join(run_dir, "metrics.jsonl")):
        if "step" not in record:
            continue
        for key, value in record.items():
            if key in ("step", "time") or not isinstance(value, (int, float)):
                continue
            series.setdefault(key.removeprefix("train/"), []).append((record["step"], value))
    return {
        k: (np.array([s for s, _ in v]), np.array([x for _, x in v], np.float64))
        for k, v in series.items()
    }


def _seed_band(curves: Sequence[tuple[np.ndarray, np.ndarray]]):
    """(steps, mean, low, high) over the seeds' curves, on the steps they all logged."""
    steps = curves[0][0]
    for s, _ in curves[1:]:
        steps = np.intersect1d(steps, s)
    values = np.stack([v[np.searchsorted(s, steps)] for s, v in curves])
    return steps, values.mean(0), values.min(0), values.max(0)


def loss_title(method: str) -> str:
    """The title of a method's loss panel: the method and its objective."""
    objective = LOSS_OBJECTIVES.get(method)
    return f"Training loss, {method}" + (f":\n{objective}" if objective else "")


def _curve_panels(
    groups: Mapping[str, list[str]], curves: Mapping[str, list[dict]], wanted: Sequence[str]
) -> list[tuple[str, str, str | None, list[str]]]:
    """(metric, title, method or None, labels of the runs drawn) of each panel: a metric once,
    'loss' once per method (its objective's own axis)."""
    panels = []
    for name in wanted:
        logged = [label for label in groups if any(name in c for c in curves[label])]
        if not logged:
            continue
        if name != "loss":
            panels.append((name, METRICS.get(name, (name,))[0], None, logged))
            continue
        by_method: dict[str, list[str]] = {}
        for label in logged:
            by_method.setdefault(run_method(groups[label][0]), []).append(label)
        panels += [(name, loss_title(m), m, labels) for m, labels in by_method.items()]
    return panels


def curves_figure(
    runs: Mapping[str, str | Sequence[str]],
    names: Sequence[str] = CURVES,
    title: str = "Training curves",
    knn: bool = True,
):
    """The matplotlib Figure of `plot_curves` (None when no run logged any of the metrics)."""
    groups = {
        label: [dirs] if isinstance(dirs, str) else list(dirs) for label, dirs in runs.items()
    }
    curves = {label: [read_curves(d) for d in dirs] for label, dirs in groups.items()}
    panels = _curve_panels(groups, curves, ("knn/top1", *names) if knn else tuple(names))
    if not panels:
        return None
    archs = list(
        dict.fromkeys(
            (run_config(d[0]) or {}).get("student", {}).get("arch", "") for d in groups.values()
        )
    )
    plt = _pyplot()
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    handles = {}
    for ax, (name, title_text, method, labels) in zip(axes.flat, panels):
        _, ylabel, chance_kind = METRICS.get(name, (name, name, None))
        for label in labels:
            dirs = groups[label]
            found = [c[name] for c in curves[label] if name in c]
            arch = (run_config(dirs[0]) or {}).get("student", {}).get("arch", "")
            style = {
                "color": method_colour(run_method(dirs[0])),
                "lw": 1.3,
                "linestyle": ARCH_LINESTYLES[archs.index(arch) % len(ARCH_LINESTYLES)],
            }
            steps, mean, low, high = _seed_band(found)
            (line,) = ax.plot(
                steps,
                mean,
                label=label + (f" ({len(found)} seeds)" if len(found) > 1 else ""),
                **style,
            )
            handles.setdefault(line.get_label(), line)
            if len(found) > 1:
                ax.fill_between(steps, low, high, color=style["color"], alpha=0.2, lw=0)
        for value in sorted({_chance(chance_kind, groups[label][0]) for label in labels} - {None}):
            draw_chance(ax, value)
        style_axes(ax, title_text, "training step", ylabel)
        if method is not None:
            ax.title.set_color(method_colour(method))
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    # one legend of every run: in the first empty cell, else to the right of the panels
    if len(panels) < axes.size:
        axes.flat[len(panels)].legend(list(handles.values()), list(handles), loc="center")
    else:
        fig.legend(
            list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5)
        )
    fig.suptitle(title)
    return fig


def plot_curves(
    runs: Mapping[str, str | Sequence[str]],
    out: str,
    names: Sequence[str] = CURVES,
    title: str = "Training curves",
    knn: bool = True,
) -> str | None:
    """One panel per metric (the kNN monitor's 'knn/top1' first with `knn`; 'loss' once per
    method, since objectives differ in scale), one line per run, coloured by method (line style
    by student architecture), and a legend of every run. A value of `runs` may list several
    run directories (seeds): their mean is drawn with a band from min to max. None when no run
    logged any of the metrics."""
    fig = curves_figure(runs, names, title, knn)
    return None if fig is None else save(fig, out)


def _chance(kind: str | None, run_dir: str) -> float | None:
    if kind is None:
        return None
    if kind == "queue":
        return queue_chance(run_dir)
    return run_label_chance(run_dir)


def pair_similarities(
    features: np.ndarray, labels: np.ndarray, max_examples: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of all same-class and all different-class pairs (i < j) among at
    most `max_examples` examples (a seeded subset when there are more)."""
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    if len(labels) > max_examples:
        keep = np.sort(np.random.default_rng(seed).choice(len(labels), max_examples, False))
        features, labels = features[keep], labels[keep]
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit.T
    upper = np.triu(np.ones_like(sims, bool), k=1)
    same = labels[:, None] == labels[None, :]
    return sims[upper & same], sims[upper & ~same]


def separation(same: np.ndarray, different: np.ndarray) -> dict:
    """Means, and the probability that a random same-class pair is more similar than a random
    different-class pair (ROC AUC; 0.5 = no class structure)."""
    ranks = np.argsort(np.argsort(np.concatenate([same, different]), kind="stable"))
    auc = (ranks[: len(same)].sum() - len(same) * (len(same) - 1) / 2) / (
        len(same) * len(different)
    )
    return {
        "same_mean": float(same.mean()),
        "different_mean": float(different.mean()),
        "auc": float(auc),
    }


def knn_features(run_dir: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(test features, labels) cached by the evaluations of a row, if any."""
    # pooled_<eval split>.npz; a sliced split keeps its slice (pooled_test[:2000].npz)
    found = sorted(
        p
        for p in glob.glob(os.path.join(glob.escape(run_dir), "features", "pooled_*.npz"))
        if not os.path.basename(p).startswith("pooled_train")
    )
    if not found:
        return None
    try:
        with np.load(found[0]) as data:
            return data["features"], data["label"]
    except (zipfile.BadZipFile, ValueError, KeyError, EOFError) as error:
        raise ValueError(
            f"{found[0]} is not a readable feature cache ({type(error).__name__}: "
            f"{error}); delete it (rerunning its evaluation writes it again)"
        ) from None


def fitted_bins(*samples: np.ndarray, count: int = 60) -> np.ndarray:
    """Histogram bin edges spanning the samples' range (plus a small margin), not -1..1."""
    low = min(float(s.min()) for s in samples if s.size)
    high = max(float(s.max()) for s in samples if s.size)
    margin = max(1e-3, 0.02 * (high - low))
    return np.linspace(low - margin, high + margin, count + 1)


def similarity_figure(
    feature_sets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    max_examples: int = 2000,
    methods: Mapping[str, str] | None = None,
    title: str = "Cosine similarity of same-class and different-class pairs",
):
    """(Figure, {label: separation stats}) of `plot_similarity`; (None, {}) without features."""
    if not feature_sets:
        return None, {}
    methods = methods or {}
    pairs = {
        label: pair_similarities(feats, labels, max_examples)
        for label, (feats, labels) in feature_sets.items()
    }
    bins = fitted_bins(*(s for pair in pairs.values() for s in pair), count=80)
    plt = _pyplot()
    cols = min(4, len(pairs))
    rows = (len(pairs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.6 * rows), squeeze=False)
    stats = {}
    for ax, (label, (same, diff)) in zip(axes.flat, pairs.items()):
        stats[label] = separation(same, diff)
        ax.hist(
            diff,
            bins=bins,
            density=True,
            alpha=0.6,
            color=DIFFERENT_CLASS_COLOUR,
            label="different class",
        )
        ax.hist(
            same, bins=bins, density=True, alpha=0.6, color=SAME_CLASS_COLOUR, label="same class"
        )
        ax.set_xlim(bins[0], bins[-1])
        style_axes(
            ax,
            f"{label}: AUC {stats[label]['auc']:.3f} (chance 0.5)",
            "cosine similarity of backbone features",
            "density (per unit similarity)",
        )
        ax.title.set_color(method_colour(methods.get(label, label)))
    for ax in list(axes.flat)[len(pairs) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title)
    return fig, stats


def plot_similarity(
    feature_sets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    out: str,
    max_examples: int = 2000,
    methods: Mapping[str, str] | None = None,
    title: str = "Cosine similarity of same-class and different-class pairs",
) -> dict:
    """Histograms of same-class vs different-class cosine similarity, one panel per encoder
    (the paper's Figure 4), every panel over the same range (the span of all their
    similarities), so the panels compare; a panel's title has its method's colour (`methods`:
    label -> method_name). Returns {label: separation stats}."""
    fig, stats = similarity_figure(feature_sets, max_examples, methods, title)
    if fig is not None:
        save(fig, out)
    return stats


def is_teacher(row: Mapping) -> bool:
    """A row of a teacher (or of its random-init architecture): a study's 'teacher' group."""
    return row.get("group") == "teacher"


def results_figure(
    rows: Sequence[Mapping], mode: str = "knn", root: str = "", chance: float | None = None
):
    """The matplotlib Figure of `plot_results` (None when no row has `mode`)."""
    rows = [r for r in rows if mode in r.get("eval", {})]
    if not rows:
        return None
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(archs), figsize=(3.4 * len(archs) + 1, 4.0), squeeze=False)
    for ax, arch in zip(axes.flat, archs):
        arms: dict[str, list] = {}  # random init first, then the arms in row order
        for r in sorted(
            (r for r in rows if r["arch"] == arch), key=lambda r: r["label"] != RANDOM_INIT
        ):
            arms.setdefault(r["label"], []).append(r)
        for i, (label, chosen) in enumerate(arms.items()):
            values = np.array([r["eval"][mode]["top1"] for r in chosen])
            colour = method_colour(
                row_method(root, chosen[0])
                if root
                else (RANDOM_INIT if label == RANDOM_INIT else label)
            )
            teacher = all(is_teacher(r) for r in chosen) and label != RANDOM_INIT
            ax.bar(
                i,
                values.mean(),
                color=colour,
                alpha=0.85,
                hatch="//" if teacher else None,
                edgecolor="black" if teacher else None,
            )
            if len(values) > 1:
                ax.errorbar(
                    i,
                    values.mean(),
                    yerr=[[values.mean() - values.min()], [values.max() - values.mean()]],
                    color="black",
                    capsize=4,
                    lw=1,
                )
                ax.scatter(np.full(len(values), i), values, color="black", s=8, zorder=3)
            ax.text(i, values.max(), f"{values.mean():.1f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(
            range(len(arms)),
            [f"{label} ({len(c)} seeds)" if len(c) > 1 else label for label, c in arms.items()],
            rotation=55,
            ha="right",
            fontsize=7,
        )
        draw_chance(ax, None if chance is None else 100.0 * chance)
        panel = [r for r in rows if r["arch"] == arch]
        teachers = sum(is_teacher(r) for r in panel)
        role = (
            "teacher"
            if teachers == len(panel)
            else "students"
            if not teachers
            else "teacher (hatched) and students"
        )
        style_axes(ax, f"{arch}: {role}", "", "top-1 accuracy (%)")
    fig.suptitle(f"{MODES.get(mode, mode)} of every encoder, one panel per architecture")
    return fig


def plot_results(
    rows: Sequence[Mapping],
    out: str,
    mode: str = "knn",
    root: str = "",
    chance: float | None = None,
) -> str | None:
    """Bars per architecture, teachers and students (each panel's title says which; a teacher's
    bar is hatched): top-1 of every arm, random init included, coloured by method (`root`: the
    plan folder that holds each row's config.json). Arms with several seeds show the mean, an
    error bar from min to max and each seed's point. `chance`: the label chance (a fraction),
    drawn as a line."""
    fig = results_figure(rows, mode, root, chance)
    return None if fig is None else save(fig, out)


def study_plots(root: str, rows: Sequence[Mapping], out_dir: str = "") -> dict:
    """All figures of a quick start or study workdir into OUT_DIR (default ROOT/plots); returns
    their paths and the similarity statistics."""
    out_dir = out_dir or os.path.join(root, "plots")
    trained = [r for r in rows if r.get("steps")]
    groups: dict[str, list[str]] = {}  # one curve per arm: its seeds together
    for r in trained:
        groups.setdefault(f"{r['arch']}: {r['label']}", []).append(os.path.join(root, r["name"]))
    relation_groups = {
        label: dirs for label, dirs in groups.items() if run_method(dirs[0]).startswith("ReKD")
    }
    chance = next(
        (
            label_chance(f[1])
            for r in rows
            if (f := knn_features(os.path.join(root, r["name"]))) is not None
        ),
        None,
    )
    result = {
        "curves": plot_curves(groups, os.path.join(out_dir, "curves.png")),
        "relations": plot_curves(
            relation_groups,
            os.path.join(out_dir, "relations.png"),
            RELATIONS,
            "ReKD relation diagnostics",
            knn=False,
        ),
        "results_knn": plot_results(
            rows, os.path.join(out_dir, "results_knn.png"), "knn", root, chance
        ),
        "results_linear": plot_results(
            rows, os.path.join(out_dir, "results_linear.png"), "linear", root, chance
        ),
    }
    # Figure 4: every encoder of each architecture whose evaluation features are cached (one
    # panel per arm: its first seed's row with features), teachers and random inits included.
    similarity = {}
    for arch in dict.fromkeys(r["arch"] for r in rows):
        sets, methods = {}, {}
        for r in rows:
            if r["arch"] != arch or r.get("seed") or r["label"] in sets:
                continue
            feats = knn_features(os.path.join(root, r["name"]))
            if feats is not None:
                sets[r["label"]] = feats
                methods[r["label"]] = row_method(root, r)
        if sets:
            path = os.path.join(out_dir, f"similarity_{arch}.png")
            similarity[arch] = {
                "path": path,
                "stats": plot_similarity(
                    dict(sorted(sets.items(), key=lambda item: item[0] != RANDOM_INIT)),
                    path,
                    methods=methods,
                    title=f"Cosine similarity of same-class and different-class pairs: {arch}",
                ),
            }
    result["similarity"] = similarity
    return result


def _rows_under(workdir: str) -> list[dict]:
    """The row.json files below WORKDIR (not its own: a row's name is relative to its parent)."""
    rows = []
    for path in sorted(
        glob.glob(os.path.join(glob.escape(workdir), "*", "**", "row.json"), recursive=True)
    ):
        with open(path, encoding="utf-8") as f:
            rows.append(json.load(f))
    return rows


def _study_result(path: str) -> dict:
    """The results dict of a CIFAR-10 study's results.json; SystemExit with one FATAL line for
    a missing, unreadable or other file."""
    try:
        result = read_json(path)
    except (OSError, ValueError) as error:
        raise SystemExit(
            f"FATAL: {path} is not readable JSON ({error}); give the results.json that "
            "python -m rekd_jax.experiments.cifar10 wrote in its workdir"
        ) from None
    if result is None:
        raise SystemExit(
            f"FATAL: no such file {path}; give the results.json that "
            "python -m rekd_jax.experiments.cifar10 wrote in its workdir"
        )
    if not isinstance(result, dict) or "scale" not in result or "rows" not in result:
        raise SystemExit(
            f"FATAL: {path} is not a CIFAR-10 study's results.json; for a quick start or a "
            "run, give its workdir instead of the file"
        )
    return result


def _redraw_study(paths: Sequence[str], out: str) -> int:
    """Draws the study figures of each results.json (rekd_jax.tools.study_figures) into --out
    (one file), --out/<its folder's name> (several), or plots/ beside the file."""
    # Here, not at the top: study_figures imports matplotlib, which is slow to import.
    from rekd_jax.tools import study_figures

    for path in paths:
        result = _study_result(path)
        folder = os.path.dirname(os.path.abspath(path))
        if not out:
            target = os.path.join(folder, "plots")
        else:
            target = out if len(paths) == 1 else os.path.join(out, os.path.basename(folder))
        drawn = study_figures.draw(result, target)
        if not drawn:
            raise SystemExit(
                f"FATAL: nothing to plot in {path}: its finished stages have no figure (the "
                "figures start with the validation search); run the study further (its "
                "command resumes)"
            )
        print("wrote " + ", ".join(drawn.values()))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rekd_jax.tools.report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--out", default="", help="output folder (default WORKDIR/plots)")
    args = parser.parse_args(argv)
    results = [w for w in args.workdirs if w.endswith(".json")]
    if results:
        return _redraw_study(results, args.out)
    missing = [w for w in args.workdirs if not os.path.isdir(w)]
    if missing:
        raise SystemExit(
            f"FATAL: no such run directory {missing}; give pre-training, quick "
            "start or study workdirs"
        )
    out = args.out or os.path.join(args.workdirs[0], "plots")
    name = lambda w: os.path.basename(os.path.normpath(w)) or w
    written = []
    single = [w for w in args.workdirs if os.path.exists(os.path.join(w, "metrics.jsonl"))]
    if single:
        runs = {name(w): w for w in single}
        for path in (
            plot_curves(runs, os.path.join(out, "curves.png")),
            plot_curves(
                runs,
                os.path.join(out, "relations.png"),
                RELATIONS,
                "ReKD relation diagnostics",
                knn=False,
            ),
        ):
            written.append(path)
    # every run dir with cached evaluation features (a random-init row dir has no metrics.jsonl)
    sets = {name(w): f for w in args.workdirs if (f := knn_features(w)) is not None}
    if sets:
        methods = {name(w): run_method(w) for w in args.workdirs}
        plot_similarity(sets, os.path.join(out, "similarity.png"), methods=methods)
        written.append(os.path.join(out, "similarity.png"))
    studies = [(w, rows) for w in args.workdirs if (rows := _rows_under(w))]
    for w, rows in studies:  # each study into its own plots/, or --out[/<study name>]
        target = ""
        if args.out:
            target = (
                args.out if len(args.workdirs) == 1 else os.path.join(args.out, name(w) or "study")
            )
        plots = study_plots(w, rows, target)
        written += [p for k, p in plots.items() if isinstance(p, str)]
        written += [v["path"] for v in plots["similarity"].values()]
    written = [p for p in written if p]
    if not written:
        raise SystemExit(
            f"FATAL: nothing to plot in {args.workdirs}: no metrics.jsonl, no "
            "features/pooled_*.npz and no row.json below them"
        )
    print("wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(errors.run_cli(main, debug=False))
