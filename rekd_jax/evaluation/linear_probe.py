"""The linear protocol (MoCo main_lincls.py): one linear head on the global-pooled features of
the frozen backbone, trained on augmented images or, with linear.fast, on cached features.

A protocol module: NAME, TRAINED, default_block(), validate(config), runlocal(block) and
evaluate(config, workdir, backbone, writer) (rekd_jax.evaluation.protocols).
"""

from __future__ import annotations

import ml_collections

from rekd_jax.evaluation import common
from rekd_jax.readout import features

NAME = "linear"
TRAINED = True  # resumable probe checkpoints under WORKDIR/ckpt_linear


def default_block() -> ml_collections.ConfigDict:
    """config.linear: lr 30, x0.1 at epochs 60 / 80, no weight decay, N(0, 0.01^2) head init,
    no head BatchNorm (MoCo main_lincls.py)."""
    return common.optim_block(
        epochs=100,
        learning_rate=30.0,
        milestones=(60, 80),
        decay_factor=0.1,
        fast=False,
        init="normal",
        head_bn=False,
    )


def validate(config: ml_collections.ConfigDict) -> None:
    """ValueError naming the bad field of config.linear."""
    common.validate_optim(config, NAME)


def runlocal(block: ml_collections.ConfigDict) -> None:
    """Two epochs at batch 32 (the runlocal variant)."""
    common.shrink_training(block)


def evaluate(config, workdir: str, backbone: features.Backbone, writer) -> dict:
    """Trains the head and scores it: top-1 / top-5 / count and the probe's settings."""
    result = common.probe(
        config,
        workdir,
        backbone,
        writer,
        name=NAME,
        block=config.linear,
        feature_fn=features.pooled_features(backbone.module),
        kind=common.POOLED,
    )
    return {
        **common.single_head(result.pop("heads"), "features"),
        **result,
        "learning_rate": float(config.linear.learning_rate),
        "schedule": config.linear.schedule,
    }
