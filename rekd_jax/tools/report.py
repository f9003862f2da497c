"""Plots from run directories, without TensorFlow: training curves, relation diagnostics,
same-class / different-class similarity histograms, and result bar charts.

    python -m rekd_jax.tools.report WORKDIR [WORKDIR ...] [--out DIR]

WORKDIR is a pre-training workdir (metrics.jsonl), a row of a quick start or study (its
features/pooled_test.npz cache; random-init rows have only that), or a quick-start / study
workdir (row.json folders beneath it); several compare on one figure. Run directories give
curves.png, relations.png (ReKD runs) and similarity.png in --out (default: the first WORKDIR's
plots/); a quick-start / study workdir gives curves.png, relations.png, results_knn.png,
results_linear.png and similarity_<arch>.png in its own plots/ (--out when it is the only
WORKDIR, else --out/<its name>). The CIFAR-10 study, the quick start and the Colab notebook use
the same functions.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import zipfile
from typing import Mapping, Sequence

import numpy as np

from rekd_jax import errors

CURVES = ("loss", "contrast_accuracy", "positive_similarity", "learning_rate")
RELATIONS = ("positive_label_precision", "positives_per_anchor", "prototype_entropy")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def read_curves(run_dir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (steps, values)} of every scalar in RUN_DIR/metrics.jsonl (train/ prefix dropped);
    the kNN monitor appears as 'knn/top1'."""
    from rekd_jax.training import logging as logging_lib
    series: dict[str, list] = {}
    for record in logging_lib.read_jsonl(os.path.join(run_dir, "metrics.jsonl")):
        if "step" not in record:
            continue
        for key, value in record.items():
            if key in ("step", "time") or not isinstance(value, (int, float)):
                continue
            series.setdefault(key.removeprefix("train/"), []).append((record["step"], value))
    return {k: (np.array([s for s, _ in v]), np.array([x for _, x in v], np.float64))
            for k, v in series.items()}


def plot_curves(runs: Mapping[str, str], out: str, names: Sequence[str] = CURVES,
                title: str = "training curves", knn: bool = True) -> str | None:
    """One panel per metric (plus the kNN monitor's 'knn/top1' with `knn`), one line per run;
    None when no run logged any of them."""
    curves = {label: read_curves(d) for label, d in runs.items()}
    wanted = (*names, "knn/top1") if knn else tuple(names)
    present = [n for n in wanted if any(n in c for c in curves.values())]
    if not present:
        return None
    plt = _pyplot()
    cols = min(3, len(present))
    rows = (len(present) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, present):
        for label, c in curves.items():
            if name in c:
                ax.plot(*c[name], label=label, lw=1.2)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(present):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def pair_similarities(features: np.ndarray, labels: np.ndarray, max_examples: int = 2000,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
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
    auc = (ranks[:len(same)].sum() - len(same) * (len(same) - 1) / 2) / (len(same) * len(different))
    return {"same_mean": float(same.mean()), "different_mean": float(different.mean()),
            "auc": float(auc)}


def knn_features(run_dir: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(test features, labels) cached by the evaluations of a row, if any."""
    # pooled_<eval split>.npz; a sliced split keeps its slice (pooled_test[:2000].npz)
    found = sorted(p for p in glob.glob(os.path.join(glob.escape(run_dir), "features",
                                                     "pooled_*.npz"))
                   if not os.path.basename(p).startswith("pooled_train"))
    if not found:
        return None
    try:
        with np.load(found[0]) as data:
            return data["features"], data["label"]
    except (zipfile.BadZipFile, ValueError, KeyError, EOFError) as error:
        raise ValueError(f"{found[0]} is not a readable feature cache ({type(error).__name__}: "
                         f"{error}); delete it (rerunning its evaluation writes it again)"
                         ) from None


def plot_similarity(feature_sets: Mapping[str, tuple[np.ndarray, np.ndarray]], out: str,
                    max_examples: int = 2000) -> dict:
    """Histograms of same-class vs different-class cosine similarity, one panel per encoder
    (the paper's Figure 4); returns {label: separation stats}."""
    if not feature_sets:
        return {}
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(feature_sets), figsize=(4.2 * len(feature_sets), 3.3),
                             squeeze=False)
    stats = {}
    bins = np.linspace(-1, 1, 81)
    for ax, (label, (feats, labels)) in zip(axes.flat, feature_sets.items()):
        same, diff = pair_similarities(feats, labels, max_examples)
        stats[label] = separation(same, diff)
        ax.hist(diff, bins=bins, density=True, alpha=0.55, label="different class")
        ax.hist(same, bins=bins, density=True, alpha=0.55, label="same class")
        ax.set_title(f"{label}\nAUC {stats[label]['auc']:.3f}", fontsize=9)
        ax.set_xlabel("cosine similarity (backbone features)")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return stats


def plot_results(rows: Sequence[Mapping], out: str, mode: str = "knn") -> str | None:
    """Grouped bars per student architecture: top-1 of every arm, random init included."""
    rows = [r for r in rows if mode in r.get("eval", {})]
    if not rows:
        return None
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(archs), figsize=(3.2 * len(archs) + 1, 3.6), squeeze=False)
    for ax, arch in zip(axes.flat, archs):
        chosen = [r for r in rows if r["arch"] == arch]
        labels = [f"{r['label']}" + (f" s{r['seed']}" if r.get("seed") else "") for r in chosen]
        values = [r["eval"][mode]["top1"] for r in chosen]
        ax.bar(range(len(values)), values, color=[f"C{i % 10}" for i in range(len(values))])
        ax.set_xticks(range(len(values)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(arch, fontsize=9)
        ax.set_ylabel(f"{mode} top-1 %")
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=6)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def study_plots(root: str, rows: Sequence[Mapping], out_dir: str = "") -> dict:
    """All plots of a quick start or study workdir into OUT_DIR (default ROOT/plots); returns
    their paths and the similarity statistics."""
    out_dir = out_dir or os.path.join(root, "plots")
    trained = {r["name"]: os.path.join(root, r["name"]) for r in rows if r.get("steps")}
    rekd = {n: d for n, d in trained.items()
            if any(r["name"] == n and r.get("method") == "rekd" for r in rows)}
    result = {"curves": plot_curves(trained, os.path.join(out_dir, "curves.png")),
              "relations": plot_curves(rekd, os.path.join(out_dir, "relations.png"),
                                       RELATIONS, "relation diagnostics", knn=False),
              "results_knn": plot_results(rows, os.path.join(out_dir, "results_knn.png"), "knn"),
              "results_linear": plot_results(rows, os.path.join(out_dir, "results_linear.png"),
                                             "linear")}
    # Figure 4: MoCo v2 student against ReKD students (and random init) of each architecture.
    wanted = ("random init", "MoCo v2", "ReKD (offline)", "ReKD (online)", "ReKD (oracle rel.)",
              "ReKD (sup. teacher)")
    similarity = {}
    for arch in dict.fromkeys(r["arch"] for r in rows):
        sets = {}
        for r in rows:
            if r["arch"] == arch and r["label"] in wanted and not r.get("seed"):
                feats = knn_features(os.path.join(root, r["name"]))
                if feats is not None:
                    sets[r["label"]] = feats
        if len(sets) > 1:
            path = os.path.join(out_dir, f"similarity_{arch}.png")
            similarity[arch] = {"path": path, "stats": plot_similarity(sets, path)}
    result["similarity"] = similarity
    return result


def _rows_under(workdir: str) -> list[dict]:
    """The row.json files below WORKDIR (not its own: a row's name is relative to its parent)."""
    rows = []
    for path in sorted(glob.glob(os.path.join(glob.escape(workdir), "*", "**", "row.json"),
                                 recursive=True)):
        with open(path, encoding="utf-8") as f:
            rows.append(json.load(f))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rekd_jax.tools.report",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--out", default="", help="output folder (default WORKDIR/plots)")
    args = parser.parse_args(argv)
    missing = [w for w in args.workdirs if not os.path.isdir(w)]
    if missing:
        raise SystemExit(f"FATAL: no such run directory {missing}; give pre-training, quick "
                         "start or study workdirs")
    out = args.out or os.path.join(args.workdirs[0], "plots")
    written = []
    single = [w for w in args.workdirs if os.path.exists(os.path.join(w, "metrics.jsonl"))]
    if single:
        runs = {os.path.basename(os.path.normpath(w)) or w: w for w in single}
        for path in (plot_curves(runs, os.path.join(out, "curves.png")),
                     plot_curves(runs, os.path.join(out, "relations.png"), RELATIONS,
                                 "relation diagnostics", knn=False)):
            written.append(path)
    # every run dir with cached evaluation features (a random-init row dir has no metrics.jsonl)
    sets = {os.path.basename(os.path.normpath(w)) or w: f for w in args.workdirs
            if (f := knn_features(w)) is not None}
    if sets:
        plot_similarity(sets, os.path.join(out, "similarity.png"))
        written.append(os.path.join(out, "similarity.png"))
    studies = [(w, rows) for w in args.workdirs if (rows := _rows_under(w))]
    for w, rows in studies:  # each study into its own plots/, or --out[/<study name>]
        target = ""
        if args.out:
            target = args.out if len(args.workdirs) == 1 else os.path.join(
                args.out, os.path.basename(os.path.normpath(w)) or "study")
        plots = study_plots(w, rows, target)
        written += [p for k, p in plots.items() if isinstance(p, str)]
        written += [v["path"] for v in plots["similarity"].values()]
    written = [p for p in written if p]
    if not written:
        raise SystemExit(f"FATAL: nothing to plot in {args.workdirs}: no metrics.jsonl, no "
                         "features/pooled_*.npz and no row.json below them")
    print("wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(errors.run_cli(main, debug=False))
