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
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

from rekd_jax.models.layers import adaptive_max_pool
from rekd_jax.readout.features import FeatureFn


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
