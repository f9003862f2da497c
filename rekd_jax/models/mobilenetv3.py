"""MobileNetV3 (large, small) in Flax, parameter-for-parameter equal to torchvision.

Layout, names and numerics follow ``torchvision.models.mobilenetv3`` so that a torchvision
state_dict converts leaf by leaf (see ``torch_module_name``). Inputs are NHWC.

This module also holds the two building blocks that torchvision shares between MobileNetV3 and
EfficientNet (``ConvNormAct`` = ``Conv2dNormActivation``, ``SqueezeExcitation``) and the
module-path naming rule both families use.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rekd_jax.models import layers

Activation = Callable[[jax.Array], jax.Array] | None


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's ``_make_divisible``: round channels to a multiple of ``divisor``, never
    dropping more than 10% below ``value``."""
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def torch_module_name(module_path: Sequence[str]) -> str:
    """Flax module path -> torchvision state_dict module prefix.

    Each Flax name is the torchvision name with '.' written as '_' before an index
    (``features_1`` -> ``features.1``, ``block_0`` -> ``block.0``), except inside
    ``ConvNormAct`` whose children ``conv``/``bn`` are torchvision's Sequential indices
    ``0``/``1``. Example: ``('features_4', 'block_2', 'fc1')`` -> ``'features.4.block.2.fc1'``.
    """
    return layers.default_torch_module_name(
        tuple({"conv": "0", "bn": "1"}.get(p, p) for p in module_path)
    )


class ConvNormAct(nn.Module):
    """torchvision ``Conv2dNormActivation``: bias-free conv, BatchNorm, optional activation.

    Padding is torch's symmetric ``(kernel_size - 1) // 2`` on every side ('SAME' would pad
    asymmetrically at stride 2 and shift the sampling grid relative to torch).
    """

    features: int
    kernel_size: int
    strides: int = 1
    groups: int = 1
    activation: Activation = None
    bn_torch_momentum: float = layers.TORCH_BN_MOMENTUM
    bn_epsilon: float = layers.TORCH_BN_EPSILON
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = layers.conv(
            self.features,
            self.kernel_size,
            stride=self.strides,
            padding=(self.kernel_size - 1) // 2,
            groups=self.groups,
            dtype=self.dtype,
            name="conv",
        )(x)
        x = layers.batch_norm(
            train,
            axis_name=self.bn_axis_name,
            torch_momentum=self.bn_torch_momentum,
            epsilon=self.bn_epsilon,
            dtype=self.dtype,
            name="bn",
        )(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


class SqueezeExcitation(nn.Module):
    """torchvision ``ops.SqueezeExcitation``: pool -> 1x1 conv ``fc1`` -> activation -> 1x1 conv
    ``fc2`` -> scale activation -> multiply the input."""

    squeeze_channels: int
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    scale_activation: Callable[[jax.Array], jax.Array] = nn.sigmoid
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(layers.conv, kernel_size=1, use_bias=True, dtype=self.dtype)
        scale = layers.global_avg_pool(x)[:, None, None, :]
        scale = self.activation(conv(self.squeeze_channels, name="fc1")(scale))
        scale = self.scale_activation(conv(x.shape[-1], name="fc2")(scale))
        return scale * x


@dataclasses.dataclass(frozen=True)
class BlockConfig:
    """One row of the MobileNetV3 paper's Tables 1/2 (torchvision ``InvertedResidualConfig``)."""

    input_channels: int
    kernel: int
    expanded_channels: int
    out_channels: int
    use_se: bool
    use_hardswish: bool
    stride: int


# (input, kernel, expanded, out, use_se, activation 'HS'|'RE', stride) as in torchvision.
_LARGE_SETTING = (
    (16, 3, 16, 16, False, "RE", 1),
    (16, 3, 64, 24, False, "RE", 2),
    (24, 3, 72, 24, False, "RE", 1),
    (24, 5, 72, 40, True, "RE", 2),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 3, 240, 80, False, "HS", 2),
    (80, 3, 200, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 480, 112, True, "HS", 1),
    (112, 3, 672, 112, True, "HS", 1),
    (112, 5, 672, 160, True, "HS", 2),
    (160, 5, 960, 160, True, "HS", 1),
    (160, 5, 960, 160, True, "HS", 1),
)
_SMALL_SETTING = (
    (16, 3, 16, 16, True, "RE", 2),
    (16, 3, 72, 24, False, "RE", 2),
    (24, 3, 88, 24, False, "RE", 1),
    (24, 5, 96, 40, True, "HS", 2),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1),
    (48, 5, 144, 48, True, "HS", 1),
    (48, 5, 288, 96, True, "HS", 2),
    (96, 5, 576, 96, True, "HS", 1),
    (96, 5, 576, 96, True, "HS", 1),
)
_VARIANTS = {"large": (_LARGE_SETTING, 1280), "small": (_SMALL_SETTING, 1024)}


def mobilenet_v3_config(
    variant: str, width_multiplier: float
) -> tuple[tuple[BlockConfig, ...], int]:
    """Block configs and classifier hidden width (torchvision ``last_channel``) of a variant."""
    if variant not in _VARIANTS:
        raise ValueError(
            f"Unknown MobileNetV3 variant {variant!r}; use one of {sorted(_VARIANTS)}."
        )
    if width_multiplier <= 0:
        raise ValueError(f"width_multiplier must be positive, got {width_multiplier}.")
    setting, last_channel = _VARIANTS[variant]
    adjust = lambda channels: make_divisible(channels * width_multiplier, 8)
    blocks = tuple(
        BlockConfig(adjust(inp), k, adjust(exp), adjust(out), se, act == "HS", s)
        for inp, k, exp, out, se, act, s in setting
    )
    return blocks, adjust(last_channel)


class InvertedResidual(nn.Module):
    """MobileNetV3 bottleneck: [1x1 expand] -> depthwise -> [SE] -> 1x1 project (+ residual).

    Children are ``block_0``.. in torchvision's order (the expand conv is absent when the
    expanded width equals the input width, shifting the indices exactly as in torchvision).
    """

    config: BlockConfig
    bn_torch_momentum: float
    bn_epsilon: float
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        cfg = self.config
        conv = functools.partial(
            ConvNormAct,
            bn_torch_momentum=self.bn_torch_momentum,
            bn_epsilon=self.bn_epsilon,
            bn_axis_name=self.bn_axis_name,
            dtype=self.dtype,
        )
        activation = nn.hard_swish if cfg.use_hardswish else nn.relu
        index = 0
        y = x
        if cfg.expanded_channels != cfg.input_channels:
            y = conv(cfg.expanded_channels, 1, activation=activation, name=f"block_{index}")(
                y, train
            )
            index += 1
        y = conv(
            cfg.expanded_channels,
            cfg.kernel,
            strides=cfg.stride,
            groups=cfg.expanded_channels,
            activation=activation,
            name=f"block_{index}",
        )(y, train)
        index += 1
        if cfg.use_se:
            y = SqueezeExcitation(
                make_divisible(cfg.expanded_channels // 4, 8),
                scale_activation=nn.hard_sigmoid,
                dtype=self.dtype,
                name=f"block_{index}",
            )(y)
            index += 1
        y = conv(cfg.out_channels, 1, activation=None, name=f"block_{index}")(y, train)
        if cfg.stride == 1 and cfg.input_channels == cfg.out_channels:
            y = y + x
        return y


class MobileNetV3(nn.Module):
    """MobileNetV3 as torchvision builds it (BatchNorm eps 1e-3, torch momentum 0.01 = Flax 0.99).

    Output: logits from torchvision's head Linear-Hardswish-Dropout-Linear (``classifier_0``,
    ``classifier_3``), or with ``num_classes=0`` the pooled backbone features, i.e. the
    global-average-pooled output of the last 1x1 conv (960 wide for large, 576 for small at
    width 1.0) -- exactly what feeds torchvision's classifier.

    ``cifar_stem=True`` (32x32 inputs) changes only the stem conv's stride from 2 to 1; the
    parameters are unchanged, so total stride is 16 instead of 32.

    Sown intermediates (collection 'intermediates'): ``stem`` (after ``features_0``),
    ``stage1``.. (output of the last block at each resolution; a new stage starts at every
    stride-2 block), ``head`` (after the final 1x1 conv, before pooling).
    """

    variant: str = "large"
    width_multiplier: float = 1.0
    num_classes: int = 1000
    dropout: float = 0.2
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    cifar_stem: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        layers.check_nhwc_rgb(x, f"MobileNetV3-{self.variant}")
        blocks, last_channel = mobilenet_v3_config(self.variant, self.width_multiplier)
        bn = dict(
            bn_torch_momentum=0.01,
            bn_epsilon=1e-3,
            bn_axis_name=self.bn_axis_name,
            dtype=self.dtype,
        )
        x = x.astype(self.dtype)
        x = ConvNormAct(
            blocks[0].input_channels,
            3,
            strides=1 if self.cifar_stem else 2,
            activation=nn.hard_swish,
            name="features_0",
            **bn,
        )(x, train)
        self.sow("intermediates", "stem", x)
        stage = 1
        for i, cfg in enumerate(blocks, start=1):
            x = InvertedResidual(cfg, name=f"features_{i}", **bn)(x, train)
            next_starts_stage = i == len(blocks) or blocks[i].stride > 1
            if next_starts_stage:
                self.sow("intermediates", f"stage{stage}", x)
                stage += 1
        x = ConvNormAct(
            6 * blocks[-1].out_channels,
            1,
            activation=nn.hard_swish,
            name=f"features_{len(blocks) + 1}",
            **bn,
        )(x, train)
        self.sow("intermediates", "head", x)
        x = layers.global_avg_pool(x)
        if self.num_classes == 0:
            return x
        dense = functools.partial(
            nn.Dense,
            kernel_init=nn.initializers.normal(0.01),
            dtype=self.dtype,
            param_dtype=jnp.float32,
        )
        x = nn.hard_swish(dense(last_channel, name="classifier_0")(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return dense(self.num_classes, name="classifier_3")(x)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mobilenetv3_large": functools.partial(MobileNetV3, variant="large"),
    "mobilenetv3_small": functools.partial(MobileNetV3, variant="small"),
}
