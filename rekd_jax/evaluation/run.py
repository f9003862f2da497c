"""Evaluation entry point: `evaluate(config, workdir)` runs the protocol config.mode names.

    python main.py --config=configs/linear_eval.py --config.checkpoint=W/encoders/student \
        --workdir=W/eval_linear

Writes WORKDIR/results_<mode>.json, prints a table, logs to WORKDIR/metrics.jsonl (and
TensorBoard with TensorFlow), caches frozen features under WORKDIR/features and checkpoints
probe / fine-tuning state under WORKDIR/ckpt_<mode>: rerunning the same command resumes from
the latest checkpoint (and, once training is done, only re-scores); metrics.jsonl then loses
the records logged after that checkpoint and any torn last line, so each epoch appears once.

Before anything is loaded, extracted or trained, a workdir that holds another kind of run
(run_record.check_mode) or a probe checkpoint written under other settings (another image
size, encoder, dataset or protocol field: linear.check_signature) stops the run with one line
that names the differences and the flags to use; config.json is written only after these checks.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from rekd_jax.core import distributed, fileio, run_record
from rekd_jax.core import logging as metric_logging
from rekd_jax.core.checkpoint import Checkpointer
from rekd_jax.data import augment, host_crop, sources
from rekd_jax.data import pipeline as data_pipeline
from rekd_jax.evaluation import config as eval_config
from rekd_jax.evaluation import conv_probe, linear, scoring, semi_supervised
from rekd_jax.readout import features, knn

TRAINED_MODES = ("linear", "conv_probe", "semi_supervised")  # with a resumable state


def evaluate(config, workdir: str) -> dict:
    """Run the evaluation protocol of `config.mode` on `config.checkpoint`; returns the results.

    The results dict (also written as WORKDIR/results_<mode>.json) holds 'top1' / 'top5' (in %)
    and 'count' (examples scored: the whole evaluation split) plus protocol details; the conv
    probe adds a per-layer table under 'layers'.
    """
    eval_config.validate(config)
    distributed.initialize(config.distributed)
    with fileio.WorkdirLock(workdir, "evaluation", primary=jax.process_index() == 0):
        return _evaluate(config, workdir)


def _evaluate(config, workdir: str) -> dict:
    fileio.makedirs(workdir)
    primary = jax.process_index() == 0
    run_record.check_mode(workdir, config)
    resumed_epoch = _check_saved_settings(config, workdir)
    if primary:
        run_record.write_config(workdir, config)
        metric_logging.trim_metrics(os.path.join(workdir, "metrics.jsonl"), resumed_epoch)
    writer = metric_logging.create_writer(
        workdir, is_primary=primary, tensorboard=config.tensorboard
    )
    start = time.time()
    backbone = features.load_backbone(config.checkpoint, dtype=config.dtype)
    protocol = {
        "linear": _linear,
        "conv_probe": _conv_probe,
        "knn": _knn,
        "semi_supervised": _semi_supervised,
    }[config.mode]
    result = protocol(config, workdir, backbone, writer)
    result = {
        "mode": config.mode,
        "checkpoint": features.checkpoint_identity(config.checkpoint)["checkpoint"],
        "arch": backbone.spec["arch"],
        "dataset": config.data.dataset,
        "eval_split": config.data.eval_split,
        **result,
        "seconds": round(time.time() - start, 1),
    }
    writer.write_scalars(0, {f"{config.mode}/{k}": result[k] for k in ("top1", "top5")})
    writer.flush()
    writer.close()
    if primary:
        fileio.write_json(
            os.path.join(workdir, f"results_{config.mode}.json"), result, sort_keys=True
        )
        print(format_table(result))
    return result


def format_table(result: Mapping[str, Any]) -> str:
    """A small text table of the results (one row per head for the conv probe)."""
    rows = result.get("layers") or {result["mode"]: result}
    lines = [
        f"{result['mode']} evaluation of {result['arch']} ({result['checkpoint']}) on "
        f"{result['dataset']}/{result['eval_split']}",
        f"{'head':<16} {'top-1 %':>8} {'top-5 %':>8} {'examples':>9}",
    ]
    for name, r in rows.items():
        lines.append(f"{name:<16} {r['top1']:>8.2f} {r['top5']:>8.2f} {r['count']:>9d}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- shared pieces


def _eval_pipeline(config, split: str):
    return data_pipeline.create(
        config.data,
        split=split,
        training=False,
        global_batch_size=int(config.eval_batch_size),
        seed=config.seed,
    )


def _eval_view(config) -> Callable[[jax.Array], jax.Array]:
    """uint8 -> float: resize the shorter side to data.eval_resize, centre-crop data.image_size."""
    return functools.partial(
        augment.eval_view,
        cfg=config.data.augment.to_dict(),
        out_size=int(config.data.image_size),
        resize=int(config.data.eval_resize),
        dtype=jnp.dtype(config.dtype),
    )


def _train_view(config, block) -> Callable[[jax.Array, jax.Array], jax.Array]:
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


def _host_crop(config, block) -> host_crop.HostCrop:
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


def _split_features(
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
        pipe = _eval_pipeline(config, split)
        return features.extract_features(
            feature_fn,
            backbone.variables,
            pipe,
            preprocess=_eval_view(config),
            resident=features.replicate_resident(pipe),
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


def _checkpointer(config, workdir: str, name: str) -> Checkpointer:
    return Checkpointer(
        os.path.join(workdir, f"ckpt_{name}"),
        max_to_keep=int(config.keep_checkpoints),
        async_save=True,
    )


def _check_saved_settings(config, workdir: str) -> int:
    """The epoch a probe resumes from (0: none), after checking that its newest checkpoint
    was written under this run's settings (SettingsChangedError otherwise)."""
    if config.mode not in TRAINED_MODES:
        return 0
    checkpointer = _checkpointer(config, workdir, config.mode)
    try:
        extra = checkpointer.newest_extra()
        if extra is not None:
            now = _signature(config, config[config.mode])
            saved = extra.get("signature") or {}  # a protocol may add fields later on
            linear.check_signature(
                config.mode, checkpointer.directory, {k: saved[k] for k in now if k in saved}, now
            )
    finally:
        checkpointer.close()
    return int((extra or {}).get("epoch") or 0)


def _signature(config, block) -> dict:
    """What a probe / fine-tuning checkpoint belongs to (resume only under the same)."""
    return {
        "mode": config.mode,
        **features.checkpoint_identity(config.checkpoint),
        "dataset": config.data.dataset,
        "train_split": config.data.train_split,
        "image_size": config.data.image_size,
        "seed": config.seed,
        "dtype": config.dtype,
        **{f"{config.mode}.{k}": v for k, v in block.to_dict().items()},
    }


def _replicate(tree):
    return flax.jax_utils.replicate(tree)


# --------------------------------------------------------------------------- probes


def _probe(config, workdir, backbone, writer, *, name, block, feature_fn, kind) -> dict:
    """Train heads on frozen features (fast or augmented images) and score the eval split."""
    checkpointer = _checkpointer(config, workdir, name)
    try:
        if block.fast:
            train_x, train_y = _split_features(
                config, workdir, backbone, feature_fn, config.data.train_split, kind
            )
            val_x, val_y = _split_features(
                config, workdir, backbone, feature_fn, config.data.eval_split, kind
            )
            num_classes = _num_classes(config)
            params = linear.train_on_features(
                train_x,
                train_y,
                num_classes=num_classes,
                block=block,
                batch_size=int(block.batch_size),
                seed=config.seed,
                checkpointer=checkpointer,
                writer=writer,
                checkpoint_every_epochs=int(config.checkpoint_every_epochs),
                name=name,
                signature=_signature(config, block),
            )
            per_device = scoring.per_device_batch_size(
                int(config.eval_batch_size), "eval_batch_size"
            )
            heads = scoring.score(
                linear.head_logits,
                (_replicate(params),),
                _feature_batches(val_x, val_y, per_device),
                input_key="x",
            )
        else:
            scoring.per_device_batch_size(int(block.batch_size), f"{name}.batch_size")
            train_pipe = data_pipeline.create(
                config.data,
                split=config.data.train_split,
                training=True,
                global_batch_size=int(block.batch_size),
                seed=config.seed,
                host_crop=_host_crop(config, block),
            )
            params = linear.train_on_images(
                feature_fn,
                backbone.variables,
                train_pipe,
                train_view=_train_view(config, block),
                image_size=int(config.data.image_size),
                num_classes=int(train_pipe.num_classes),
                block=block,
                seed=config.seed,
                checkpointer=checkpointer,
                writer=writer,
                checkpoint_every_epochs=int(config.checkpoint_every_epochs),
                name=name,
                signature=_signature(config, block),
            )
            heads = _score_images(
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


def _feature_batches(feats: Mapping[str, np.ndarray], labels: np.ndarray, per_device: int):
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


def _score_images(config, logits_fn, args: tuple) -> dict:
    """Top-k of `logits_fn(*args, float images)` over the whole eval split, streamed."""
    scoring.per_device_batch_size(int(config.eval_batch_size), "eval_batch_size")
    pipe = _eval_pipeline(config, config.data.eval_split)
    resident = features.replicate_resident(pipe)
    view = _eval_view(config)

    def device_logits(*inputs):
        *leading, resident, x = inputs
        return logits_fn(*leading, view(features.images_on_device(x, resident)))

    return scoring.score(
        device_logits,
        tuple(_replicate(a) for a in args) + (resident,),
        pipe,
        input_key="index" if resident is not None else "image",
    )


def _num_classes(config) -> int:
    """Classes of the dataset (its label feature), read from the metadata only."""
    return int(
        sources.open_split(
            config.data.dataset, config.data.train_split, config.data.data_dir
        ).num_classes
    )


def _single_head(heads: Mapping[str, Mapping[str, float]], name: str) -> dict:
    r = heads[name]
    return {"top1": r["top1"], "top5": r["top5"], "count": r["count"]}


def _linear(config, workdir, backbone, writer) -> dict:
    result = _probe(
        config,
        workdir,
        backbone,
        writer,
        name="linear",
        block=config.linear,
        feature_fn=features.pooled_features(backbone.module),
        kind=POOLED,
    )
    return {
        **_single_head(result.pop("heads"), "features"),
        **result,
        "learning_rate": float(config.linear.learning_rate),
        "schedule": config.linear.schedule,
    }


def _conv_probe(config, workdir, backbone, writer) -> dict:
    block = config.conv_probe
    feature_fn = conv_probe.conv_features(backbone.module, block.layers, block.pool_sizes)
    result = _probe(
        config,
        workdir,
        backbone,
        writer,
        name="conv_probe",
        block=block,
        feature_fn=feature_fn,
        kind={
            "name": "conv_probe",
            "layout": "nhwc",
            "layers": list(block.layers),
            "pool_sizes": [int(s) for s in block.pool_sizes],
        },
    )
    heads = result.pop("heads")
    layers = {layer: heads[layer] for layer in block.layers}
    headline = "conv5" if "conv5" in layers else list(block.layers)[-1]
    dims = features.feature_dims(feature_fn, backbone.variables, int(config.data.image_size))
    for layer in layers:
        layers[layer] = {**layers[layer], "features": dims[layer]}
    return {**_single_head(heads, headline), "headline_layer": headline, "layers": layers, **result}


# --------------------------------------------------------------------------- kNN


def _knn(config, workdir, backbone, writer) -> dict:
    """Weighted kNN of eval-split features against all training features (every process)."""
    kind = POOLED
    feature_fn = features.pooled_features(backbone.module)
    train_x, train_y = _split_features(
        config, workdir, backbone, feature_fn, config.data.train_split, kind
    )
    val_x, val_y = _split_features(
        config, workdir, backbone, feature_fn, config.data.eval_split, kind
    )
    train_x = scoring.gather_rows(train_x["features"])
    train_y = scoring.gather_rows(train_y)
    num_classes = _num_classes(config)
    block = config.knn
    out = knn.knn_classify(
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


# --------------------------------------------------------------------------- semi-supervised


def _semi_supervised(config, workdir, backbone, writer) -> dict:
    block = config.semi_supervised
    checkpointer = _checkpointer(config, workdir, "semi_supervised")
    try:
        return semi_supervised.run(
            config,
            backbone,
            checkpointer=checkpointer,
            writer=writer,
            signature=_signature(config, block),
            train_view=_train_view(config, block),
            host_crop=_host_crop(config, block),
            score_fn=lambda logits_fn, args: _score_images(config, logits_fn, args),
        )
    finally:
        checkpointer.close()
