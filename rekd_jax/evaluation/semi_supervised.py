"""Semi-supervised evaluation: fine-tune backbone + linear head on 1% / 10% of the labels.

The labelled subset is either a seeded class-balanced draw of `fraction` of the training split
or the images named in `subset_file` (one file name per line, e.g. the standard ImageNet 1% /
10% lists of SimCLR), matched against the split's file names. The backbone trains with
BatchNorm in train mode (statistics synchronised across devices with `sync_bn`, otherwise
averaged after each step so that replicas stay identical) and its own learning rate; the head
has another. Scored on the whole evaluation split with BatchNorm in eval mode.

A protocol module: NAME, TRAINED, default_block(), validate(config), runlocal(block) and
evaluate(config, workdir, backbone, writer) (rekd_jax.evaluation.protocols).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from rekd_jax.core import fileio, parallel
from rekd_jax.core.parallel import AXIS_NAME as AXIS
from rekd_jax.data import pipeline as data_pipeline
from rekd_jax.evaluation import common, epoch_loop, linear, scoring
from rekd_jax.models import get_model
from rekd_jax.readout import features as features_lib

NAME = "semi_supervised"
TRAINED = True  # resumable fine-tuning checkpoints under WORKDIR/ckpt_semi_supervised


def default_block() -> ml_collections.ConfigDict:
    """config.semi_supervised: 20 epochs, backbone lr 0.01 and head lr 0.1 (x0.2 at 12 / 16),
    1% of the labels, cross-device BatchNorm."""
    return common.optim_block(
        epochs=20,
        learning_rate=0.01,
        head_learning_rate=0.1,
        milestones=(12, 16),
        decay_factor=0.2,
        fraction=0.01,
        subset_file="",
        sync_bn=True,
    )


def validate(config: ml_collections.ConfigDict) -> None:
    """ValueError naming the bad field of config.semi_supervised."""
    common.validate_optim(config, NAME)
    block = config.semi_supervised
    if not float(block.head_learning_rate) > 0:
        common.fail("semi_supervised.head_learning_rate", block.head_learning_rate, "must be > 0")
    if block.subset_file:
        if not fileio.exists(block.subset_file):
            common.fail(
                "semi_supervised.subset_file",
                block.subset_file,
                "file not found; give a list of training file names (one per line) or "
                "set it to '' to draw a class-balanced subset of `fraction`",
            )
    elif not 0.0 < float(block.fraction) <= 1.0:
        common.fail(
            "semi_supervised.fraction",
            block.fraction,
            "must be in (0, 1], e.g. 0.01 or 0.1 (or set subset_file)",
        )


def runlocal(block: ml_collections.ConfigDict) -> None:
    """Two epochs; batch 8, which 1% / 10% of the toy split (10 / 20 labelled images) fit."""
    common.shrink_training(block)
    block.batch_size = 8


def evaluate(config, workdir: str, backbone: features_lib.Backbone, writer) -> dict:
    """Fine-tunes on the labelled subset and scores the evaluation split."""
    block = config.semi_supervised
    checkpointer = common.checkpointer_of(config, workdir, NAME)
    try:
        return run(
            config,
            backbone,
            checkpointer=checkpointer,
            writer=writer,
            signature=common.signature(config, block),
            train_view=common.train_view(config, block),
            host_crop=common.training_host_crop(config, block),
            score_fn=lambda logits_fn, args: common.score_images(config, logits_fn, args),
        )
    finally:
        checkpointer.close()


@flax.struct.dataclass
class FinetuneState:
    """Backbone + head params, BatchNorm statistics, optimizer state, step."""

    params: Any  # {'backbone': ..., 'head': {'kernel', 'bias'}}
    batch_stats: Any
    opt_state: Any
    step: jax.Array


def select_subset(data_config, block, seed: int) -> np.ndarray:
    """Sorted indices of the labelled training examples (file list or class-balanced draw)."""
    meta = data_pipeline.split_metadata(data_config, data_config.train_split)
    if block.subset_file:
        if meta["file_names"] is None:
            raise ValueError(
                f"semi_supervised.subset_file={block.subset_file!r}: dataset "
                f"{data_config.dataset!r} stores no file names to match; use "
                "semi_supervised.fraction (class-balanced subset) instead"
            )
        indices = data_pipeline.subset_from_file(block.subset_file, meta["file_names"])
    else:
        indices = data_pipeline.class_balanced_subset(meta["labels"], float(block.fraction), seed)
    return np.sort(np.asarray(indices, np.int64))


def optimizer(block, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD for both parts, with block.learning_rate for the backbone and block.head_learning_rate
    for the head (same schedule shape, momentum and weight decay)."""
    return optax.multi_transform(
        {
            "backbone": linear.sgd(block, steps_per_epoch, float(block.learning_rate)),
            "head": linear.sgd(block, steps_per_epoch, float(block.head_learning_rate)),
        },
        lambda params: {
            "backbone": jax.tree_util.tree_map(lambda _: "backbone", params["backbone"]),
            "head": jax.tree_util.tree_map(lambda _: "head", params["head"]),
        },
    )


def _init_state(
    module, variables: dict, tx, image_size: int, num_classes: int, block, seed: int
) -> FinetuneState:
    """The pre-trained backbone, a new linear head (N(0, init_std^2), seeded) and the
    optimizer state of both."""
    dim = features_lib.feature_dims(features_lib.pooled_features(module), variables, image_size)[
        "features"
    ]
    head = linear.init_heads(
        jax.random.PRNGKey(seed), {"features": dim}, num_classes, float(block.init_std)
    )["features"]
    params = {"backbone": variables["params"], "head": head}
    return FinetuneState(
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        step=jnp.zeros((), jnp.int32),
    )


def _device_step(module, train_view: Callable, tx, base_key: jax.Array, sync_bn: bool):
    """(state, x, labels, mask, resident) -> (state, loss): one fine-tuning step on one device,
    BatchNorm in train mode (pmapped over AXIS)."""

    def device_step(state, x, labels, mask, resident):
        key = jax.random.fold_in(jax.random.fold_in(base_key, state.step), jax.lax.axis_index(AXIS))
        images = train_view(key, features_lib.images_on_device(x, resident))
        count = jnp.maximum(jax.lax.psum(jnp.sum(mask.astype(jnp.float32)), AXIS), 1.0)

        def loss_fn(params):
            model_vars = {"params": params["backbone"]}
            if state.batch_stats:
                model_vars["batch_stats"] = state.batch_stats
            feats, updated = module.apply(model_vars, images, train=True, mutable=["batch_stats"])
            logits = linear.head_logits({"features": params["head"]}, {"features": feats})[
                "features"
            ]
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
            return jnp.sum(ce * mask) / count, updated.get("batch_stats", {})

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grads = jax.lax.psum(grads, AXIS)
        if not sync_bn:  # keep replicas identical: average the per-device statistics
            batch_stats = jax.lax.pmean(batch_stats, AXIS)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = FinetuneState(
            params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
            step=state.step + 1,
        )
        return new_state, jax.lax.psum(loss, AXIS)

    return device_step


def finetune(
    module,
    variables: dict,
    pipeline,
    *,
    train_view: Callable,
    image_size: int,
    num_classes: int,
    block,
    seed: int,
    sync_bn: bool,
    checkpointer=None,
    writer=None,
    checkpoint_every_epochs: int = 1,
    signature: dict | None = None,
) -> FinetuneState:
    """Fine-tune `module` (backbone, num_classes=0) and a new linear head; returns host state.

    `module` must be built with bn_axis_name=AXIS when `sync_bn`. The pipeline yields the
    labelled subset (pipeline.create(..., indices=subset)).
    """
    steps = int(pipeline.steps_per_epoch)
    if steps < 1:
        raise ValueError(
            "semi_supervised: the labelled subset gives no full batch; lower "
            "semi_supervised.batch_size"
        )
    tx = optimizer(block, steps)
    state = parallel.replicate(
        _init_state(module, variables, tx, image_size, num_classes, block, seed), AXIS
    )
    resident = data_pipeline.replicate_resident(pipeline)

    step_fn = jax.pmap(
        _device_step(module, train_view, tx, jax.random.PRNGKey(seed + 1), sync_bn),
        axis_name=AXIS,
        donate_argnums=(0,),
    )
    iterator = None

    def run_epoch(state, epoch):
        nonlocal iterator
        if iterator is None:  # after a resume has restored the pipeline state
            iterator = iter(pipeline)
        losses = []
        for _ in range(steps):
            batch = next(iterator)
            mask = batch.get("mask", np.ones(np.shape(batch["label"]), bool))
            state, loss = step_fn(
                state, features_lib.batch_images(batch), batch["label"], mask, resident
            )
            losses.append(loss)
        return state, {"train_loss": float(np.mean(jax.device_get(losses), axis=0)[0])}

    loop = epoch_loop.EpochLoop(
        checkpointer,
        writer,
        num_epochs=int(block.epochs),
        every_epochs=checkpoint_every_epochs,
        name="semi_supervised",
        signature=signature,
    )
    state = loop.run(
        state, run_epoch, data_state=pipeline.get_state, set_data_state=pipeline.set_state
    )
    return jax.device_get(flax.jax_utils.unreplicate(state))


def run(
    config,
    backbone: features_lib.Backbone,
    *,
    checkpointer,
    writer,
    train_view,
    score_fn: Callable[[Callable, tuple], dict],
    signature: dict | None = None,
    host_crop=None,
) -> dict:
    """The whole protocol: subset, fine-tuning, scoring. `score_fn(logits_fn, args)` scores
    `logits_fn(*args, images)` on the evaluation split (run.py's streaming scorer);
    `host_crop` is the training crop when data.train_crop='host'."""
    block = config.semi_supervised
    scoring.per_device_batch_size(int(block.batch_size), "semi_supervised.batch_size")
    subset = select_subset(config.data, block, int(config.rng_seed))
    pipe = data_pipeline.create(
        config.data,
        split=config.data.train_split,
        training=True,
        global_batch_size=int(block.batch_size),
        seed=config.rng_seed,
        indices=subset,
        host_crop=host_crop,
    )
    overrides = {**backbone.spec["overrides"], "dtype": config.dtype, "num_classes": 0}
    if block.sync_bn:
        overrides["bn_axis_name"] = AXIS
    module = get_model(backbone.spec["arch"], **overrides)
    state = finetune(
        module,
        backbone.variables,
        pipe,
        train_view=train_view,
        image_size=int(config.data.image_size),
        num_classes=int(pipe.num_classes),
        block=block,
        seed=int(config.rng_seed),
        sync_bn=bool(block.sync_bn),
        checkpointer=checkpointer,
        writer=writer,
        checkpoint_every_epochs=int(config.checkpoint_every_epochs),
        signature={**(signature or {}), "labelled_examples": int(len(subset))},
    )
    eval_module = backbone.module  # same architecture, no cross-device BatchNorm
    eval_vars = {"params": state.params["backbone"]}
    if state.batch_stats:
        eval_vars["batch_stats"] = state.batch_stats

    def logits_fn(variables, head, images):
        feats = eval_module.apply(variables, images, train=False)
        return linear.head_logits({"features": head}, {"features": feats})

    heads = score_fn(logits_fn, (eval_vars, state.params["head"]))
    r = heads["features"]
    return {
        "top1": r["top1"],
        "top5": r["top5"],
        "count": r["count"],
        "labelled_examples": int(len(subset)),
        "fraction": None if block.subset_file else float(block.fraction),
        "subset_file": block.subset_file or None,
        "epochs": int(block.epochs),
        "learning_rate": float(block.learning_rate),
        "head_learning_rate": float(block.head_learning_rate),
    }
