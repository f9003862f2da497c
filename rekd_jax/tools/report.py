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
several seeds (error bars on bars, a band around curves), and histogram ranges fitted to the
data. New figures use the same helpers.
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

CURVES = ("loss", "contrast_accuracy", "positive_similarity", "learning_rate")
RELATIONS = ("positive_label_precision", "positives_per_anchor", "prototype_entropy")
RANDOM_INIT = "random init"

# One colour per method, the same in every figure (the keys are what `method_name` returns).
METHOD_COLOURS = {
    RANDOM_INIT: "#8c8c8c",
    "MoCo v2": "#1f77b4",
    "SEED": "#2ca02c",
    "ReKD (offline)": "#d62728",
    "ReKD (online)": "#ff7f0e",
    "ReKD (oracle relations)": "#9467bd",
    "SupCon (oracle)": "#8c564b",
    "supervised": "#e377c2",
    "ReKD (supervised teacher)": "#bcbd22",
    "teacher": "#000000",
}
OTHER_COLOUR = "#17becf"  # a method without an entry
SAME_CLASS_COLOUR, DIFFERENT_CLASS_COLOUR = "#1b9e77", "#969696"
CHANCE_STYLE = {"color": "black", "linestyle": "--", "linewidth": 1.0, "alpha": 0.7}
ARCH_LINESTYLES = ("-", "--", ":", "-.")

# Metric -> (title, y-axis label, chance: None, 'labels' (label agreement of two random
# examples) or 'queue' (one candidate among K + 1)).
METRICS = {
    "loss": ("Training loss", "loss (nats)", None),
    "contrast_accuracy": (
        "Contrastive accuracy: own key ranked first",
        "accuracy (fraction)",
        "queue",
    ),
    "positive_similarity": ("Similarity of the positive pair", "cosine similarity", None),
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


def method_colour(name: str) -> str:
    """The colour of a method (a `method_name`) in every figure."""
    return METHOD_COLOURS.get(name, OTHER_COLOUR)


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
    fig.savefig(out, dpi=110)
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


def plot_curves(
    runs: Mapping[str, str | Sequence[str]],
    out: str,
    names: Sequence[str] = CURVES,
    title: str = "Training curves",
    knn: bool = True,
) -> str | None:
    """One panel per metric (plus the kNN monitor's 'knn/top1' with `knn`), one line per run,
    coloured by method (line style by student architecture). A value of `runs` may list
    several run directories (seeds): their mean is drawn with a band from min to max. None when
    no run logged any of the metrics."""
    groups = {
        label: [dirs] if isinstance(dirs, str) else list(dirs) for label, dirs in runs.items()
    }
    curves = {label: [read_curves(d) for d in dirs] for label, dirs in groups.items()}
    wanted = (*names, "knn/top1") if knn else tuple(names)
    present = [n for n in wanted if any(n in c for cs in curves.values() for c in cs)]
    if not present:
        return None
    archs = list(
        dict.fromkeys(
            (run_config(d[0]) or {}).get("student", {}).get("arch", "") for d in groups.values()
        )
    )
    plt = _pyplot()
    cols = min(3, len(present))
    rows = (len(present) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, present):
        title_text, ylabel, chance_kind = METRICS.get(name, (name, name, None))
        for label, dirs in groups.items():
            found = [c[name] for c in curves[label] if name in c]
            if not found:
                continue
            arch = (run_config(dirs[0]) or {}).get("student", {}).get("arch", "")
            style = {
                "color": method_colour(run_method(dirs[0])),
                "lw": 1.3,
                "linestyle": ARCH_LINESTYLES[archs.index(arch) % len(ARCH_LINESTYLES)],
            }
            steps, mean, low, high = _seed_band(found)
            ax.plot(
                steps,
                mean,
                label=label + (f" ({len(found)} seeds)" if len(found) > 1 else ""),
                **style,
            )
            if len(found) > 1:
                ax.fill_between(steps, low, high, color=style["color"], alpha=0.2, lw=0)
        for value in sorted({_chance(chance_kind, d[0]) for d in groups.values()} - {None}):
            draw_chance(ax, value)
        style_axes(ax, title_text, "training step", ylabel)
    for ax in list(axes.flat)[len(present) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title)
    return save(fig, out)


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


def plot_similarity(
    feature_sets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    out: str,
    max_examples: int = 2000,
    methods: Mapping[str, str] | None = None,
    title: str = "Cosine similarity of same-class and different-class pairs",
) -> dict:
    """Histograms of same-class vs different-class cosine similarity, one panel per encoder
    (the paper's Figure 4), each over the range of its own similarities; a panel's title has
    its method's colour (`methods`: label -> method_name). Returns {label: separation stats}."""
    if not feature_sets:
        return {}
    methods = methods or {}
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(feature_sets), figsize=(4.4 * len(feature_sets), 3.6), squeeze=False
    )
    stats = {}
    for ax, (label, (feats, labels)) in zip(axes.flat, feature_sets.items()):
        same, diff = pair_similarities(feats, labels, max_examples)
        stats[label] = separation(same, diff)
        bins = fitted_bins(same, diff)
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
        style_axes(
            ax,
            f"{label}: AUC {stats[label]['auc']:.3f} (chance 0.5)",
            "cosine similarity of backbone features",
            "density (per unit similarity)",
        )
        ax.title.set_color(method_colour(methods.get(label, label)))
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title)
    save(fig, out)
    return stats


def plot_results(
    rows: Sequence[Mapping],
    out: str,
    mode: str = "knn",
    root: str = "",
    chance: float | None = None,
) -> str | None:
    """Bars per student architecture: top-1 of every arm, random init included, coloured by
    method (`root`: the plan folder that holds each row's config.json). Arms with several
    seeds show the mean, an error bar from min to max and each seed's point. `chance`: the
    label chance (a fraction), drawn as a line."""
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
            ax.bar(i, values.mean(), color=colour, alpha=0.85)
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
        style_axes(ax, arch, "", "top-1 accuracy (%)")
    fig.suptitle(f"{MODES.get(mode, mode)} per student architecture")
    return save(fig, out)


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
    # Figure 4: MoCo v2 student against ReKD students (and random init) of each architecture.
    wanted = (
        RANDOM_INIT,
        "MoCo v2",
        "ReKD (offline)",
        "ReKD (online)",
        "ReKD (oracle rel.)",
        "ReKD (sup. teacher)",
    )
    similarity = {}
    for arch in dict.fromkeys(r["arch"] for r in rows):
        sets, methods = {}, {}
        for r in rows:
            if r["arch"] == arch and r["label"] in wanted and not r.get("seed"):
                feats = knn_features(os.path.join(root, r["name"]))
                if feats is not None:
                    sets[r["label"]] = feats
                    methods[r["label"]] = row_method(root, r)
        if len(sets) > 1:
            path = os.path.join(out_dir, f"similarity_{arch}.png")
            similarity[arch] = {
                "path": path,
                "stats": plot_similarity(
                    sets,
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
    # Here, not at the top: study_figures imports matplotlib (slow) and this module.
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
