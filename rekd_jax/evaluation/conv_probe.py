"""AlexNet conv-layer probes: conv1..conv5 maps, adaptive max-pooled, one linear head each.

The protocol behind the paper's AlexNet numbers (44.7 / 50.1 / 50.5): every frozen conv map
(after its ReLU; conv5 before the last max-pool) is adaptive-max-pooled to s x s so that each
layer gives about 9k features -- for a 224 input 64*12*12 = 9216, 192*7*7 = 9408,
384*5*5 = 9600, 256*6*6 = 9216, 256*6*6 = 9216 -- and a linear classifier per layer is trained
on them, all five in one run (the engine in rekd_jax.evaluation.linear). The pooled maps stay
(b, s, s, C) so that the head's non-affine BatchNorm (conv_probe.head_bn) normalises per
channel over batch and positions, as BatchNorm2d does; the head flattens them in NHWC order
(the heads are trained from scratch, so the order does not matter).

Source of the protocol: gidariss/FeatureLearningRotNet, architectures/LinearClassifier.py
(AdaptiveMaxPool2d(s), BatchNorm2d(C, affine=False), Flatten, Linear; weight ~ N(0, 2/out))
with the pool sizes of config/ImageNet_LinearClassifiers_ImageNet_RotNet_AlexNet_Features.py.

A protocol module: NAME, TRAINED, default_block(), validate(config), runlocal(block) and
evaluate(config, workdir, backbone, writer) (rekd_jax.evaluation.protocols).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import ml_collections

from rekd_jax.evaluation import common
from rekd_jax.models.layers import adaptive_max_pool
from rekd_jax.readout import features
from rekd_jax.readout.features import FeatureFn

NAME = "conv_probe"
TRAINED = True  # resumable probe checkpoints under WORKDIR/ckpt_conv_probe
ALEXNET_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
# The encoder architecture whose sown maps the probe reads.
ARCH = "alexnet"


def default_block() -> ml_collections.ConfigDict:
    """config.conv_probe: RotNet's ImageNet linear classifiers on AlexNet conv maps
    (gidariss/FeatureLearningRotNet config/ImageNet_LinearClassifiers_ImageNet_RotNet_AlexNet_
    Features.py + architectures/LinearClassifier.py + dataloader.py, ImageNet train)."""
    return common.optim_block(
        epochs=35,
        batch_size=192,
        learning_rate=0.01,
        nesterov=True,
        weight_decay=5e-4,
        milestones=(5, 15, 25),
        decay_factor=0.2,
        fast=False,
        train_transform="resize_random_crop",
        init="fan_out",
        head_bn=True,
        layers=ALEXNET_LAYERS,
        pool_sizes=(12, 7, 5, 6, 6),
    )


def validate(config: ml_collections.ConfigDict) -> None:
    """ValueError naming the bad field of config.conv_probe, or an encoder that is not AlexNet."""
    common.validate_optim(config, NAME)
    block = config.conv_probe
    if len(block.layers) == 0 or len(block.layers) != len(block.pool_sizes):
        common.fail(
            "conv_probe.pool_sizes",
            tuple(block.pool_sizes),
            f"give one pool size per layer of conv_probe.layers={tuple(block.layers)}",
        )
    if any(int(s) < 1 for s in block.pool_sizes):
        common.fail("conv_probe.pool_sizes", tuple(block.pool_sizes), "sizes must be >= 1")
    arch = features.checkpoint_spec(config.checkpoint)["arch"]
    if arch != ARCH:
        common.fail(
            "checkpoint",
            config.checkpoint,
            f"holds a {arch!r} encoder; the conv probe reads the "
            "sown AlexNet maps conv1..conv5: use an alexnet checkpoint or mode='linear'",
        )
    unknown = [layer for layer in block.layers if layer not in ALEXNET_LAYERS]
    if unknown:
        common.fail("conv_probe.layers", tuple(block.layers), f"choose from {ALEXNET_LAYERS}")


def runlocal(block: ml_collections.ConfigDict) -> None:
    """Two epochs at batch 32 (the runlocal variant)."""
    common.shrink_training(block)


def evaluate(config, workdir: str, backbone: features.Backbone, writer) -> dict:
    """Trains one head per layer and scores each; the headline is conv5's (else the last)."""
    block = config.conv_probe
    feature_fn = conv_features(backbone.module, block.layers, block.pool_sizes)
    result = common.probe(
        config,
        workdir,
        backbone,
        writer,
        name=NAME,
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
    return {
        **common.single_head(heads, headline),
        "headline_layer": headline,
        "layers": layers,
        **result,
    }


def conv_features(module, layers: Sequence[str], pool_sizes: Sequence[int]) -> FeatureFn:
    """(variables, images) -> {layer: adaptive-max-pooled sown map (b, s, s, C)}.

    BatchNorm runs in eval mode; `module` must sow the named maps into 'intermediates'
    (AlexNet sows 'conv1'..'conv5').
    """
    layers, pool_sizes = tuple(layers), tuple(int(s) for s in pool_sizes)
    if len(layers) != len(pool_sizes):
        raise ValueError(
            f"conv_probe.layers {layers} and conv_probe.pool_sizes {pool_sizes} "
            "must have the same length (one pool size per layer)"
        )

    def fn(variables, images):
        _, state = module.apply(variables, images, train=False, mutable=["intermediates"])
        sown = state.get("intermediates", {})
        out = {}
        for layer, size in zip(layers, pool_sizes):
            if layer not in sown:
                raise ValueError(
                    f"conv_probe.layers: {type(module).__name__} does not sow "
                    f"{layer!r} (it sows {sorted(sown)}); use an AlexNet encoder"
                )
            fmap = sown[layer]
            fmap = fmap[0] if isinstance(fmap, tuple) else fmap  # Flax stores sown values as tuples
            pooled = adaptive_max_pool(fmap, (size, size))
            out[layer] = pooled.astype(jnp.float32)
        return out

    return fn
