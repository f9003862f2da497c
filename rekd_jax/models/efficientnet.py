"""EfficientNet (B0) in Flax, parameter-for-parameter equal to torchvision.

Names follow torchvision with '.' written as '_' (``features_2_1`` / ``block_3`` ->
``features.2.1.block.3``; ``ConvNormAct`` children ``conv``/``bn`` are ``0``/``1``), so the
naming rule is the one MobileNetV3 uses. Inputs are NHWC.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rekd_jax.models import layers
from rekd_jax.models.mobilenetv3 import (
    ConvNormAct,
    SqueezeExcitation,
    make_divisible,
    torch_module_name,
)

__all__ = ["EfficientNet", "MBConv", "MODELS", "torch_module_name"]


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """One stage of EfficientNet-B0 (torchvision ``MBConvConfig``) after width/depth scaling."""

    expand_ratio: float
    kernel: int
    stride: int
    input_channels: int
    out_channels: int
    num_layers: int


# (expand_ratio, kernel, stride, input, out, layers): torchvision's efficientnet_b* setting.
_B_SETTING = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)


def efficientnet_config(
    width_multiplier: float, depth_multiplier: float
) -> tuple[StageConfig, ...]:
    """Stage configs of EfficientNet-B* scaled as torchvision scales them."""
    if width_multiplier <= 0 or depth_multiplier <= 0:
        raise ValueError(
            f"width_multiplier and depth_multiplier must be positive, got {width_multiplier}, "
            f"{depth_multiplier}."
        )
    return tuple(
        StageConfig(
            expand,
            kernel,
            stride,
            make_divisible(inp * width_multiplier, 8),
            make_divisible(out * width_multiplier, 8),
            int(math.ceil(layers * depth_multiplier)),
        )
        for expand, kernel, stride, inp, out, layers in _B_SETTING
    )


class MBConv(nn.Module):
    """torchvision ``efficientnet.MBConv``: [1x1 expand] -> depthwise -> SE(SiLU, sigmoid) ->
    1x1 project, plus a residual with stochastic depth ("row" mode) when shapes allow.

    Stochastic depth drops the whole residual branch per example with probability
    ``stochastic_depth_prob`` and rescales survivors by 1/(1-p); it runs only under
    ``train=True`` and then needs the 'dropout' rng (none is needed when p == 0).
    """

    input_channels: int
    out_channels: int
    expand_ratio: float
    kernel: int
    stride: int
    stochastic_depth_prob: float
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        conv = functools.partial(ConvNormAct, bn_axis_name=self.bn_axis_name, dtype=self.dtype)
        expanded = make_divisible(self.input_channels * self.expand_ratio, 8)
        index = 0
        y = x
        if expanded != self.input_channels:
            y = conv(expanded, 1, activation=nn.silu, name=f"block_{index}")(y, train)
            index += 1
        y = conv(
            expanded,
            self.kernel,
            strides=self.stride,
            groups=expanded,
            activation=nn.silu,
            name=f"block_{index}",
        )(y, train)
        y = SqueezeExcitation(
            max(1, self.input_channels // 4),
            activation=nn.silu,
            dtype=self.dtype,
            name=f"block_{index + 1}",
        )(y)
        y = conv(self.out_channels, 1, activation=None, name=f"block_{index + 2}")(y, train)
        if self.stride == 1 and self.input_channels == self.out_channels:
            # Dropout broadcast over H, W, C = per-example (row-mode) stochastic depth.
            y = nn.Dropout(
                self.stochastic_depth_prob, broadcast_dims=(1, 2, 3), deterministic=not train
            )(y)
            y = y + x
        return y


class EfficientNet(nn.Module):
    """EfficientNet-B* as torchvision builds it (B0: BatchNorm eps 1e-5, torch momentum 0.1).

    Output: logits from torchvision's head Dropout-Linear (``classifier_1``), or with
    ``num_classes=0`` the globally averaged output of the last 1x1 conv (1280 wide for B0).
    Stochastic depth rises linearly from 0 to ``stochastic_depth_prob`` over the blocks, as in
    torchvision; under ``train=True`` pass ``rngs={'dropout': key}`` (or set
    ``stochastic_depth_prob=0`` and ``dropout=0``/``num_classes=0`` to need no rng).

    ``cifar_stem=True`` (32x32 inputs) changes only the stem conv's stride from 2 to 1; the
    parameters are unchanged, total stride 16 instead of 32.

    Sown intermediates (collection 'intermediates'): ``stem`` (``features_0``), ``stage1`` ..
    ``stage7`` (output of torchvision's ``features[1..7]``), ``head`` (last 1x1 conv, before
    pooling).
    """

    width_multiplier: float = 1.0
    depth_multiplier: float = 1.0
    num_classes: int = 1000
    dropout: float = 0.2
    stochastic_depth_prob: float = 0.2
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    cifar_stem: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        layers.check_nhwc_rgb(x, "EfficientNet")
        stages = efficientnet_config(self.width_multiplier, self.depth_multiplier)
        common = dict(bn_axis_name=self.bn_axis_name, dtype=self.dtype)
        x = x.astype(self.dtype)
        x = ConvNormAct(
            stages[0].input_channels,
            3,
            strides=1 if self.cifar_stem else 2,
            activation=nn.silu,
            name="features_0",
            **common,
        )(x, train)
        self.sow("intermediates", "stem", x)
        total_blocks = sum(stage.num_layers for stage in stages)
        block_id = 0
        for s, stage in enumerate(stages, start=1):
            for i in range(stage.num_layers):
                x = MBConv(
                    input_channels=stage.input_channels if i == 0 else stage.out_channels,
                    out_channels=stage.out_channels,
                    expand_ratio=stage.expand_ratio,
                    kernel=stage.kernel,
                    stride=stage.stride if i == 0 else 1,
                    stochastic_depth_prob=self.stochastic_depth_prob * block_id / total_blocks,
                    name=f"features_{s}_{i}",
                    **common,
                )(x, train)
                block_id += 1
            self.sow("intermediates", f"stage{s}", x)
        x = ConvNormAct(
            4 * stages[-1].out_channels,
            1,
            activation=nn.silu,
            name=f"features_{len(stages) + 1}",
            **common,
        )(x, train)
        self.sow("intermediates", "head", x)
        x = layers.global_avg_pool(x)
        if self.num_classes == 0:
            return x
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(
            self.num_classes,
            # torchvision: U(-1/sqrt(out_features), 1/sqrt(out_features)), zero bias.
            kernel_init=nn.initializers.variance_scaling(1.0 / 3.0, "fan_out", "uniform"),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="classifier_1",
        )(x)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "efficientnet_b0": functools.partial(
        EfficientNet, width_multiplier=1.0, depth_multiplier=1.0, dropout=0.2
    ),
}
