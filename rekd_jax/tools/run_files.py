"""What a run or a row wrote, read for the report's figures: its config and method, its cached
evaluation features and the chance levels its figures draw."""

from __future__ import annotations

import glob
import json
import os
import zipfile
from collections.abc import Mapping

import ml_collections
import numpy as np

from rekd_jax.data import pipeline
from rekd_jax.tools.plot_style import RANDOM_INIT


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


def is_teacher(row: Mapping) -> bool:
    """A row of a teacher (or of its random-init architecture): a study's 'teacher' group."""
    return row.get("group") == "teacher"
