"""Figures of evaluated encoders: same-class / different-class similarity histograms (the
paper's Figure 4) and bar charts of every arm's top-1 accuracy, one panel per architecture."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from rekd_jax.tools.figure_parts import draw_chance, fitted_bins, pyplot, save, style_axes
from rekd_jax.tools.plot_style import (
    DIFFERENT_CLASS_COLOUR,
    RANDOM_INIT,
    SAME_CLASS_COLOUR,
    method_colour,
)
from rekd_jax.tools.run_files import is_teacher, row_method

MODES = {"knn": "kNN top-1 accuracy", "linear": "Linear-probe top-1 accuracy"}


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
    plt = pyplot()
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


def results_figure(
    rows: Sequence[Mapping], mode: str = "knn", root: str = "", chance: float | None = None
):
    """The matplotlib Figure of `plot_results` (None when no row has `mode`)."""
    rows = [r for r in rows if mode in r.get("eval", {})]
    if not rows:
        return None
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    plt = pyplot()
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
