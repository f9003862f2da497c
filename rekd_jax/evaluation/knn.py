"""The kNN protocol: weighted kNN (InstDisc; k 200, tau 0.1, cosine similarity, votes
exp(sim / tau)) of every evaluation image's pooled features against the features of the whole
training split: the same function as the kNN monitor of pre-training (rekd_jax.readout.knn).

A protocol module: NAME, TRAINED, default_block(), validate(config), runlocal(block) and
evaluate(config, workdir, backbone, writer) (rekd_jax.evaluation.protocols).
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np

from rekd_jax.evaluation import common, scoring
from rekd_jax.readout import features
from rekd_jax.readout import knn as knn_lib

NAME = "knn"
TRAINED = False  # nothing to resume: features are cached, scoring is one pass


def default_block() -> ml_collections.ConfigDict:
    """config.knn: k, temperature, and the chunk sizes that bound memory."""
    return ml_collections.ConfigDict(
        dict(k=200, temperature=0.1, chunk_size=256, train_chunk_size=65536)
    )


def validate(config: ml_collections.ConfigDict) -> None:
    """ValueError naming the bad field of config.knn."""
    block = config.knn
    if int(block.k) < 1:
        common.fail("knn.k", block.k, "must be >= 1")
    if not float(block.temperature) > 0:
        common.fail("knn.temperature", block.temperature, "must be > 0")
    if int(block.chunk_size) < 1 or int(block.train_chunk_size) < 1:
        common.fail("knn.chunk_size", (block.chunk_size, block.train_chunk_size), "must be >= 1")


def runlocal(block: ml_collections.ConfigDict) -> None:
    """Smaller query chunks (the runlocal variant)."""
    block.chunk_size = 64


def evaluate(config, workdir: str, backbone: features.Backbone, writer) -> dict:
    """Weighted kNN of eval-split features against all training features (every process)."""
    del writer  # one pass, nothing logged per epoch
    kind = common.POOLED
    feature_fn = features.pooled_features(backbone.module)
    train_x, train_y = common.split_features(
        config, workdir, backbone, feature_fn, config.data.train_split, kind
    )
    val_x, val_y = common.split_features(
        config, workdir, backbone, feature_fn, config.data.eval_split, kind
    )
    train_x = scoring.gather_rows(train_x["features"])
    train_y = scoring.gather_rows(train_y)
    num_classes = common.dataset_classes(config)
    block = config.knn
    out = knn_lib.knn_classify(
        jnp.asarray(train_x),
        jnp.asarray(train_y),
        jnp.asarray(val_x["features"]),
        num_classes,
        k=int(block.k),
        temperature=float(block.temperature),
        chunk_size=int(block.chunk_size),
        train_chunk_size=int(block.train_chunk_size),
    )
    correct = scoring.topk_correct(
        out.scores, jnp.asarray(val_y), jnp.ones(val_y.shape, bool), ks=(1, 5)
    )
    totals = scoring.sum_across_processes(
        np.concatenate([np.asarray(correct, np.float64), [len(val_y)]])
    )
    count = int(totals[-1])
    return {
        "top1": 100.0 * float(totals[0]) / count,
        "top5": 100.0 * float(totals[1]) / count,
        "count": count,
        "k": int(block.k),
        "temperature": float(block.temperature),
        "train_examples": int(len(train_y)),
    }
