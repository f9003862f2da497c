"""What the evaluation protocols share: the evaluation and training views, frozen features of
a split (cached), probe training on frozen features or augmented images, streamed scoring of
the evaluation split, probe checkpoints and the signature that ties them to their settings,
and the config block of a protocol that trains (`optim_block`, `validate_optim`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rekd_jax.core.checkpoint import Checkpointer
from rekd_jax.data import augment, host_crop, sources
from rekd_jax.data import pipeline as data_pipeline
from rekd_jax.evaluation import epoch_loop, feature_probe, linear, scoring
from rekd_jax.readout import features

SCHEDULES = ("step", "cosine", "constant")


def fail(field: str, value, fix: str):
    """ValueError naming config.FIELD, its value and the fix."""
    raise ValueError(f"config.{field}={value!r}: {fix}")


def optim_block(**fields) -> ml_collections.ConfigDict:
    """The fields of a protocol that trains (module docstring of evaluation.config), with
    `fields` changed."""
    base = dict(
        epochs=100,
        batch_size=256,
        learning_rate=0.1,
        momentum=0.9,
        nesterov=False,
        weight_decay=0.0,
        schedule="step",
        milestones=(),
        decay_factor=0.1,
        warmup_epochs=0,
        train_transform="random_resized_crop",
        crop_scale=(0.08, 1.0),
        init_std=0.01,
    )
    base.update(fields)
    return ml_collections.ConfigDict(base)


def validate_optim(config, name: str) -> None:
    """ValueError naming the bad field of the training block config.NAME."""
    block = config[name]
    if int(block.epochs) < 1:
        fail(f"{name}.epochs", block.epochs, "must be >= 1")
    if int(block.batch_size) < 1:
        fail(
            f"{name}.batch_size",
            block.batch_size,
            "must be a positive multiple of the device count",
        )
    if not float(block.learning_rate) > 0:
        fail(f"{name}.learning_rate", block.learning_rate, "must be > 0")
    if not 0.0 <= float(block.momentum) < 1.0:
        fail(f"{name}.momentum", block.momentum, "must be in [0, 1)")
    if float(block.weight_decay) < 0:
        fail(f"{name}.weight_decay", block.weight_decay, "must be >= 0")
    if block.schedule not in SCHEDULES:
        fail(f"{name}.schedule", block.schedule, f"use one of {SCHEDULES}")
    milestones = [int(m) for m in block.milestones]
    if block.schedule == "step":
        if milestones != sorted(set(milestones)) or any(
            not 0 < m < int(block.epochs) for m in milestones
        ):
            fail(
                f"{name}.milestones",
                tuple(block.milestones),
                f"must be increasing epochs strictly between 0 and epochs={block.epochs}",
            )
        if not 0.0 < float(block.decay_factor) <= 1.0:
            fail(f"{name}.decay_factor", block.decay_factor, "must be in (0, 1]")
    if not 0 <= float(block.warmup_epochs) < int(block.epochs):
        fail(f"{name}.warmup_epochs", block.warmup_epochs, "must be in [0, epochs)")
    lo, hi = (float(v) for v in block.crop_scale)
    if not 0.0 < lo <= hi <= 1.0:
        fail(f"{name}.crop_scale", tuple(block.crop_scale), "must satisfy 0 < min <= max <= 1")
    if not float(block.init_std) > 0:
        fail(f"{name}.init_std", block.init_std, "must be > 0")
    if block.train_transform not in augment.CROPS:
        fail(f"{name}.train_transform", block.train_transform, f"use one of {augment.CROPS}")
    if "init" in block and block.init not in linear.HEAD_INITS:
        fail(f"{name}.init", block.init, f"use one of {linear.HEAD_INITS}")


def eval_pipeline(config, split: str):
    return data_pipeline.create(
        config.data,
        split=split,
        training=False,
        global_batch_size=int(config.eval_batch_size),
        seed=config.rng_seed,
    )


def eval_view(config) -> Callable[[jax.Array], jax.Array]:
    """uint8 -> float: resize the shorter side to data.eval_resize, centre-crop data.image_size."""
    return functools.partial(
        augment.eval_view,
        cfg=config.data.augment.to_dict(),
        out_size=int(config.data.image_size),
        resize=int(config.data.eval_resize),
        dtype=jnp.dtype(config.dtype),
    )


def train_view(config, block) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """(rng, uint8) -> float: block.train_transform (RandomResizedCrop(crop_scale), or
    Resize(data.eval_resize) + RandomCrop(data.image_size)) + horizontal flip, no colour ops.
    On host crops (data.train_crop='host') only the flip and normalisation remain."""
    cfg = config.data.augment.to_dict()
    cfg.update(
        jitter_prob=0.0,
        gray_prob=0.0,
        blur_prob=0.0,
        crop_scale=tuple(float(v) for v in block.crop_scale),
        crop=block.train_transform,
        crop_resize=int(config.data.eval_resize),
    )
    return functools.partial(
        augment.mocov2_view,
        cfg=cfg,
        out_size=int(config.data.image_size),
        dtype=jnp.dtype(config.dtype),
    )


def training_host_crop(config, block) -> host_crop.HostCrop:
    """The crop a probe's training pipeline cuts on the host when data.train_crop='host'."""
    return host_crop.HostCrop(
        views=1,
        size=int(config.data.image_size),
        crop=block.train_transform,
        scale=tuple(float(v) for v in block.crop_scale),
        ratio=tuple(float(v) for v in config.data.augment.crop_ratio),
        resize=int(config.data.eval_resize),
    )


# The pooled backbone features of the eval transform: what kNN and the fast linear probe use.
POOLED = {"name": "pooled", "features": "pooled"}


def split_features(
    config,
    workdir: str,
    backbone: features.Backbone,
    feature_fn,
    split: str,
    kind: Mapping[str, Any],
) -> tuple[dict, np.ndarray]:
    """Frozen eval-transform features of this process's share of `split` (cached if asked)."""
    scoring.per_device_batch_size(int(config.eval_batch_size), "eval_batch_size")

    def compute():
        pipe = eval_pipeline(config, split)
        return features.extract_features(
            feature_fn,
            backbone.variables,
            pipe,
            preprocess=eval_view(config),
            resident=data_pipeline.replicate_resident(pipe),
        )

    if not config.cache_features:
        return compute()
    key = features.fingerprint(
        **features.checkpoint_identity(config.checkpoint),
        dataset=config.data.dataset,
        split=split,
        image_size=config.data.image_size,
        eval_resize=config.data.eval_resize,
        dtype=config.dtype,
        kind=dict(kind),
        process=(jax.process_index(), jax.process_count()),
    )
    suffix = f"_p{jax.process_index()}" if jax.process_count() > 1 else ""
    path = os.path.join(
        config.features_dir or os.path.join(workdir, "features"),
        f"{kind['name']}_{split}{suffix}.npz",
    )
    return features.cached_features(path, key, compute)


def checkpointer_of(config, workdir: str, name: str) -> Checkpointer:
    """The checkpoints of protocol NAME: WORKDIR/ckpt_NAME (asynchronous saves)."""
    return Checkpointer(
        os.path.join(workdir, f"ckpt_{name}"),
        max_to_keep=int(config.keep_checkpoints),
        async_save=True,
    )


def check_saved_settings(config, workdir: str) -> int:
    """The epoch a probe resumes from (0: none), after checking that its newest checkpoint
    was written under this run's settings (SettingsChangedError otherwise)."""
    checkpointer = checkpointer_of(config, workdir, config.mode)
    try:
        extra = checkpointer.newest_extra()
        if extra is not None:
            now = signature(config, config[config.mode])
            saved = extra.get("signature") or {}  # a protocol may add fields later on
            epoch_loop.check_signature(
                config.mode, checkpointer.directory, {k: saved[k] for k in now if k in saved}, now
            )
    finally:
        checkpointer.close()
    return int((extra or {}).get("epoch") or 0)


def signature(config, block) -> dict:
    """What a probe / fine-tuning checkpoint belongs to (resume only under the same)."""
    return {
        "mode": config.mode,
        **features.checkpoint_identity(config.checkpoint),
        "dataset": config.data.dataset,
        "train_split": config.data.train_split,
        "image_size": config.data.image_size,
        "seed": config.rng_seed,  # the key older checkpoints were saved with
        "dtype": config.dtype,
        **{f"{config.mode}.{k}": v for k, v in block.to_dict().items()},
    }


def replicate(tree):
    """`tree` placed on every local device."""
    return flax.jax_utils.replicate(tree)


# --------------------------------------------------------------------------- probes


def probe(config, workdir, backbone, writer, *, name, block, feature_fn, kind) -> dict:
    """Train heads on frozen features (fast or augmented images) and score the eval split."""
    checkpointer = checkpointer_of(config, workdir, name)
    try:
        if block.fast:
            train_x, train_y = split_features(
                config, workdir, backbone, feature_fn, config.data.train_split, kind
            )
            val_x, val_y = split_features(
                config, workdir, backbone, feature_fn, config.data.eval_split, kind
            )
            num_classes = dataset_classes(config)
            params = feature_probe.train_on_features(
                train_x,
                train_y,
                num_classes=num_classes,
                block=block,
                batch_size=int(block.batch_size),
                seed=config.rng_seed,
                checkpointer=checkpointer,
                writer=writer,
                checkpoint_every_epochs=int(config.checkpoint_every_epochs),
                name=name,
                signature=signature(config, block),
            )
            per_device = scoring.per_device_batch_size(
                int(config.eval_batch_size), "eval_batch_size"
            )
            heads = scoring.score(
                linear.head_logits,
                (replicate(params),),
                feature_batches(val_x, val_y, per_device),
                input_key="x",
            )
        else:
            scoring.per_device_batch_size(int(block.batch_size), f"{name}.batch_size")
            train_pipe = data_pipeline.create(
                config.data,
                split=config.data.train_split,
                training=True,
                global_batch_size=int(block.batch_size),
                seed=config.rng_seed,
                host_crop=training_host_crop(config, block),
            )
            params = linear.train_on_images(
                feature_fn,
                backbone.variables,
                train_pipe,
                train_view=train_view(config, block),
                image_size=int(config.data.image_size),
                num_classes=int(train_pipe.num_classes),
                block=block,
                seed=config.rng_seed,
                checkpointer=checkpointer,
                writer=writer,
                checkpoint_every_epochs=int(config.checkpoint_every_epochs),
                name=name,
                signature=signature(config, block),
            )
            heads = score_images(
                config,
                lambda v, p, images: linear.head_logits(p, feature_fn(v, images)),
                (backbone.variables, params),
            )
    finally:
        checkpointer.close()
    return {
        "heads": heads,
        "epochs": int(block.epochs),
        "fast": bool(block.fast),
        "batch_size": int(block.batch_size),
    }


def feature_batches(feats: Mapping[str, np.ndarray], labels: np.ndarray, per_device: int):
    """Padded batches whose 'x' entry is the dict of named features."""
    names = sorted(feats)
    for batch in scoring.padded_batches(
        {**{f"x/{n}": feats[n] for n in names}, "label": labels},
        per_device,
        jax.local_device_count(),
    ):
        yield {
            "x": {n: batch[f"x/{n}"] for n in names},
            "label": batch["label"],
            "mask": batch["mask"],
        }


def score_images(config, logits_fn, args: tuple) -> dict:
    """Top-k of `logits_fn(*args, float images)` over the whole eval split, streamed."""
    scoring.per_device_batch_size(int(config.eval_batch_size), "eval_batch_size")
    pipe = eval_pipeline(config, config.data.eval_split)
    resident = data_pipeline.replicate_resident(pipe)
    view = eval_view(config)

    def device_logits(*inputs):
        *leading, resident, x = inputs
        return logits_fn(*leading, view(features.images_on_device(x, resident)))

    return scoring.score(
        device_logits,
        tuple(replicate(a) for a in args) + (resident,),
        pipe,
        input_key="index" if resident is not None else "image",
    )


def dataset_classes(config) -> int:
    """Classes of the dataset (its label feature), read from the metadata only."""
    return int(
        sources.open_split(
            config.data.dataset, config.data.train_split, config.data.data_dir
        ).num_classes
    )


def single_head(heads: Mapping[str, Mapping[str, float]], name: str) -> dict:
    r = heads[name]
    return {"top1": r["top1"], "top5": r["top5"], "count": r["count"]}


def shrink_training(block: ml_collections.ConfigDict) -> None:
    """The runlocal variant of a training block: 2 epochs, batch 32, one lr step, no warmup."""
    block.epochs = 2
    block.batch_size = 32
    block.milestones = (1,)
    block.warmup_epochs = 0
