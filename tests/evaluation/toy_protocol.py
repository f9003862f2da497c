"""A toy evaluation protocol, the whole of it in this one module: nearest class mean of the
pooled features (cosine). tests/evaluation/test_eval_registry.py adds it to
rekd_jax.evaluation.protocols.PROTOCOLS and runs it through main.py."""

import ml_collections
import numpy as np

from rekd_jax.evaluation import common
from rekd_jax.readout import features

NAME = "centroid"
TRAINED = False


def default_block() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(normalise=True))


def validate(config) -> None:
    if not isinstance(config.centroid.normalise, bool):
        common.fail("centroid.normalise", config.centroid.normalise, "use True or False")


def runlocal(block) -> None:
    del block  # nothing to shrink


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def evaluate(config, workdir, backbone, writer) -> dict:
    del writer
    feature_fn = features.pooled_features(backbone.module)
    train_x, train_y = common.split_features(
        config, workdir, backbone, feature_fn, config.data.train_split, common.POOLED
    )
    test_x, test_y = common.split_features(
        config, workdir, backbone, feature_fn, config.data.eval_split, common.POOLED
    )
    train, test = train_x["features"], test_x["features"]
    if config.centroid.normalise:
        train, test = _unit(train), _unit(test)
    classes = common.dataset_classes(config)
    means = _unit(np.stack([train[train_y == c].mean(axis=0) for c in range(classes)]))
    ranked = np.argsort(-(test @ means.T), axis=1)
    top1 = float(np.mean(ranked[:, 0] == test_y))
    top5 = float(np.mean(np.any(ranked[:, :5] == test_y[:, None], axis=1)))
    return {"top1": 100.0 * top1, "top5": 100.0 * top5, "count": int(len(test_y))}
