"""The report's figures say what they show: one loss axis per objective, the contrastive
accuracy named for what it measures, every cached encoder in the similarity figures on one
x-range, and result bars that name the teacher. The figures are inspected as matplotlib
Figure objects, drawn from a quick-start-shaped workdir of real files (row.json, config.json,
metrics.jsonl, features/pooled_test.npz)."""

import json
import os

import numpy as np
import pytest

from rekd_jax.core import logging as logging_lib
from rekd_jax.tools import figure_parts, report, result_figures, run_files

QUEUE = 128
# (folder, arch, method, label, group, steps): the rows of a quick start, random inits first
ROWS = (
    ("random_init/resnet18", "resnet18", "", "random init", "teacher", 0),
    ("random_init/alexnet", "alexnet", "", "random init", "student", 0),
    ("teacher", "resnet18", "mocov2", "MoCo v2 (teacher)", "teacher", 6),
    ("student", "alexnet", "rekd", "ReKD (offline)", "student", 6),
    ("seed", "alexnet", "seed", "SEED", "student", 6),
    ("baseline", "alexnet", "mocov2", "MoCo v2", "student", 6),
)
# each row's training loss: the objectives differ in scale
LOSS_LEVEL = {"mocov2": 4.5, "seed": 0.8, "rekd": 6.0}


def _features(index: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Test-split features with some class structure; each row shares another common
    component, so the rows' similarity ranges differ."""
    labels = np.repeat(np.arange(4), 15)
    centres = rng.normal(size=(4, 16))
    common = (index + 1) * np.ones(16)
    feats = common + centres[labels] + rng.normal(size=(len(labels), 16))
    return feats.astype(np.float32), labels.astype(np.int64)


def _write_row(root, index, name, arch, method, label, group, steps, rng) -> dict:
    folder = root / name
    (folder / "features").mkdir(parents=True)
    feats, labels = _features(index, rng)
    np.savez(folder / "features" / "pooled_test.npz", features=feats, label=labels)
    row = {
        "name": name,
        "arch": arch,
        "label": label,
        "group": group,
        "method": method or "none",
        "seed": 0,
        "steps": steps,
        "eval": {
            "knn": {"top1": 20.0 + index, "top5": 60.0},
            "linear": {"top1": 15.0 + index, "top5": 55.0},
        },
    }
    (folder / "row.json").write_text(json.dumps(row))
    if not steps:
        return row
    config = {
        "mode": "pretrain",
        "method": method,
        "student": {"arch": arch},
        method: {"queue_size": QUEUE},
    }
    if method == "rekd":
        config["rekd"]["teacher"] = "offline"
    (folder / "config.json").write_text(json.dumps(config))
    writer = logging_lib.JsonlWriter(str(folder / "metrics.jsonl"))
    for step in range(1, steps + 1):
        scalars = {
            "train/loss": LOSS_LEVEL[method] - 0.1 * step,
            "train/positive_similarity": 0.5 + 0.05 * step,
            "train/learning_rate": 0.06 * (1 - step / steps),
        }
        if method != "seed":
            scalars["train/contrast_accuracy"] = 0.1 - 0.01 * step
        writer.write_scalars(step, scalars)
    if method == "mocov2" and group == "teacher":  # the kNN monitor, as the notebook runs it
        writer.write_scalars(steps, {"knn/top1": 0.3})
    writer.close()
    return row


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory):
    """(root, rows) of a quick-start-shaped workdir."""
    root = tmp_path_factory.mktemp("qs")
    rng = np.random.default_rng(0)
    rows = [_write_row(root, i, *spec, rng) for i, spec in enumerate(ROWS)]
    return root, rows


def _curve_groups(root, rows) -> dict[str, str]:
    return {f"{r['arch']}: {r['label']}": str(root / r["name"]) for r in rows if r["steps"]}


def _panels(fig) -> list:
    return [ax for ax in fig.axes if ax.axison]


def _run_lines(ax) -> set[str]:
    """The labels of an axis's run lines (a chance line has none)."""
    return {line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_each_objective_has_its_own_loss_axis(quick_start):
    root, rows = quick_start
    fig = report.curves_figure(_curve_groups(root, rows))
    try:
        losses = {
            ax.get_title(): _run_lines(ax)
            for ax in _panels(fig)
            if ax.get_title().startswith("Training loss")
        }
    finally:
        figure_parts.pyplot().close(fig)
    assert losses == {
        "Training loss, MoCo v2:\nInfoNCE over own key + queue": {
            "resnet18: MoCo v2 (teacher)",
            "alexnet: MoCo v2",
        },
        "Training loss, SEED:\nsoft cross-entropy to the teacher's similarities": {"alexnet: SEED"},
        "Training loss, ReKD (offline):\nrelation loss + λ·InfoNCE": {"alexnet: ReKD (offline)"},
    }


def test_the_contrastive_accuracy_says_what_it_measures_and_the_knn_monitor_leads(quick_start):
    root, rows = quick_start
    fig = report.curves_figure(_curve_groups(root, rows))
    try:
        panels = _panels(fig)
        titles = [ax.get_title() for ax in panels]
        contrast = panels[titles.index(report.METRICS["contrast_accuracy"][0])]
        run_lines = [line for line in contrast.get_lines() if not line.get_label().startswith("_")]
        legend = [t.get_text() for t in fig.legends[0].get_texts()] if fig.legends else []
        legend += [
            t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts
        ]
    finally:
        figure_parts.pyplot().close(fig)
    assert titles[0].startswith("kNN monitor")  # the curve that rises when learning works
    title = contrast.get_title()
    assert "own key above all K queue keys" in title and "not a quality measure" in title
    assert contrast.get_ylabel() == "fraction of queries"
    assert _run_lines(contrast) == {  # SEED logs no contrastive accuracy
        "resnet18: MoCo v2 (teacher)",
        "alexnet: MoCo v2",
        "alexnet: ReKD (offline)",
    }
    chance = [line.get_ydata()[0] for line in contrast.get_lines() if line not in run_lines]
    assert chance == [1.0 / (QUEUE + 1)]  # one candidate among the own key and K queue keys
    assert sorted(legend) == sorted(_curve_groups(root, rows))  # one legend names every run


def test_similarity_figures_hold_every_cached_encoder_on_one_x_range(quick_start, tmp_path):
    root, rows = quick_start
    plots = report.study_plots(str(root), rows, str(tmp_path / "plots"))
    panels = {arch: list(item["stats"]) for arch, item in plots["similarity"].items()}
    assert panels == {
        "resnet18": ["random init", "MoCo v2 (teacher)"],
        "alexnet": ["random init", "ReKD (offline)", "SEED", "MoCo v2"],
    }
    for item in plots["similarity"].values():
        assert os.path.getsize(item["path"]) > 1000

    sets = {
        r["label"]: run_files.knn_features(str(root / r["name"]))
        for r in rows
        if r["arch"] == "alexnet"
    }
    fig, _ = result_figures.similarity_figure(sets)
    try:
        axes = _panels(fig)
        limits = {ax.get_xlim() for ax in axes}
    finally:
        figure_parts.pyplot().close(fig)
    assert len(axes) == 4 and len(limits) == 1  # one x-range for every panel
    (low, high) = limits.pop()
    spans = [
        (min(same.min(), diff.min()), max(same.max(), diff.max()))
        for same, diff in (result_figures.pair_similarities(*f) for f in sets.values())
    ]
    assert all(low < a and b < high for a, b in spans)  # every panel's pairs within it
    assert max(b - a for a, b in spans) > 1.5 * min(b - a for a, b in spans)  # ranges differ


def test_result_bars_name_the_teacher_panel_and_hatch_its_bar(quick_start):
    root, rows = quick_start
    fig = result_figures.results_figure(rows, "knn", str(root))
    try:
        suptitle = fig.get_suptitle()
        panels = {ax.get_title(): ax for ax in _panels(fig)}
        hatches = [bar.get_hatch() for bar in panels["resnet18: teacher"].patches]
        student_hatches = {bar.get_hatch() for bar in panels["alexnet: students"].patches}
    finally:
        figure_parts.pyplot().close(fig)
    assert suptitle == "kNN top-1 accuracy of every encoder, one panel per architecture"
    assert "student architecture" not in suptitle
    assert hatches == [None, "//"]  # random init, then the teacher
    assert student_hatches == {None}
