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
same helpers (rekd_jax.tools.figure_parts). This module draws the training curves and runs the
command line; rekd_jax.tools.result_figures draws the similarity histograms and result bars from
what rekd_jax.tools.run_files reads.
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
from collections.abc import Mapping, Sequence

import numpy as np

from rekd_jax.core import errors
from rekd_jax.core import logging as logging_lib
from rekd_jax.tools.figure_parts import draw_chance, pyplot, save, style_axes
from rekd_jax.tools.plot_style import ARCH_LINESTYLES, RANDOM_INIT, method_colour
from rekd_jax.tools.result_figures import plot_results, plot_similarity
from rekd_jax.tools.run_files import (
    knn_features,
    label_chance,
    queue_chance,
    read_json,
    row_method,
    run_config,
    run_label_chance,
    run_method,
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
    plt = pyplot()
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
