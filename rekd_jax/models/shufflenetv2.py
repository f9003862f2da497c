"""ShuffleNetV2 (x0.5, x1.0, x1.5, x2.0) in Flax, parameter-for-parameter equal to torchvision.

Module names are torchvision's with '.' written as '_' (``stage2_0`` / ``branch2_3`` ->
``stage2.0.branch2.3``), so ``torch_module_name`` is a plain substitution. Inputs are NHWC.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rekd_jax.models import layers

# Flax names are torchvision's with '.' written as '_' before an index:
# ('stage2_0', 'branch2_3') -> 'stage2.0.branch2.3'.
torch_module_name = layers.default_torch_module_name


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
    """torchvision ``channel_shuffle`` on NHWC: view channels as (groups, C/groups), transpose,
    flatten, so output channel ``j * groups + g`` is input channel ``g * C/groups + j``."""
    n, h, w, c = x.shape
    if c % groups:
        raise ValueError(f"channel_shuffle needs channels ({c}) divisible by groups ({groups}).")
    x = x.reshape(n, h, w, groups, c // groups)
    return jnp.swapaxes(x, 3, 4).reshape(n, h, w, c)


def _conv(
    features: int, in_features: int, kernel: int, stride: int, groups: int, dtype: Any, name: str
) -> nn.Conv:
    """Bias-free ``nn.Conv2d`` with torch's default init and symmetric padding (kernel - 1) // 2."""
    return layers.conv(
        features,
        kernel,
        stride=stride,
        padding=(kernel - 1) // 2,
        groups=groups,
        in_features=in_features,
        init="torch_default",
        dtype=dtype,
        name=name,
    )


class ShuffleUnit(nn.Module):
    """torchvision ``shufflenetv2.InvertedResidual``.

    stride 1: split channels in half, transform the second half (``branch2``), concatenate,
    shuffle. stride 2: both ``branch1`` (depthwise 3x3 + 1x1) and ``branch2`` see the whole
    input, outputs are concatenated and shuffled. Children carry torchvision's Sequential
    indices (``branch2_0`` conv, ``branch2_1`` BN, ``branch2_3`` depthwise, ...).
    """

    in_channels: int
    out_channels: int
    stride: int
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.stride not in (1, 2, 3):
            raise ValueError(f"ShuffleUnit stride must be 1, 2 or 3, got {self.stride}.")
        branch = self.out_channels // 2
        if self.stride == 1 and self.in_channels != 2 * branch:
            raise ValueError(
                f"A stride-1 ShuffleUnit needs in_channels == 2 * (out_channels // 2); got "
                f"in_channels={self.in_channels}, out_channels={self.out_channels}."
            )
        conv = functools.partial(_conv, dtype=self.dtype)
        bn = functools.partial(
            layers.batch_norm, train, axis_name=self.bn_axis_name, dtype=self.dtype
        )
        if self.stride > 1:
            c = self.in_channels
            left = conv(c, c, 3, self.stride, c, name="branch1_0")(x)
            left = bn(name="branch1_1")(left)
            left = conv(branch, c, 1, 1, 1, name="branch1_2")(left)
            left = nn.relu(bn(name="branch1_3")(left))
            right = x
        else:
            left, right = jnp.split(x, 2, axis=-1)
        right = conv(branch, right.shape[-1], 1, 1, 1, name="branch2_0")(right)
        right = nn.relu(bn(name="branch2_1")(right))
        right = conv(branch, branch, 3, self.stride, branch, name="branch2_3")(right)
        right = bn(name="branch2_4")(right)
        right = conv(branch, branch, 1, 1, 1, name="branch2_5")(right)
        right = nn.relu(bn(name="branch2_6")(right))
        return channel_shuffle(jnp.concatenate([left, right], axis=-1), 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 as torchvision builds it (BatchNorm eps 1e-5, torch momentum 0.1).

    Output: logits from ``fc``, or with ``num_classes=0`` the globally averaged output of
    ``conv5`` (``stages_out_channels[-1]`` wide: 1024, or 2048 for x2.0).

    ``cifar_stem=True`` (32x32 inputs) makes ``conv1`` stride 1 and drops the 3x3/2 max-pool;
    the parameters are unchanged, total stride 8 instead of 32.

    Sown intermediates (collection 'intermediates'): ``conv1`` (after conv1+BN+ReLU, before the
    max-pool), ``stage2``, ``stage3``, ``stage4``, ``conv5`` (before pooling).
    """

    stages_repeats: tuple[int, ...] = (4, 8, 4)
    stages_out_channels: tuple[int, ...] = (24, 116, 232, 464, 1024)
    num_classes: int = 1000
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    cifar_stem: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        layers.check_nhwc_rgb(x, "ShuffleNetV2")
        if len(self.stages_repeats) != 3 or len(self.stages_out_channels) != 5:
            raise ValueError(
                "ShuffleNetV2 needs 3 stages_repeats and 5 stages_out_channels, got "
                f"{self.stages_repeats} and {self.stages_out_channels}."
            )
        unit = functools.partial(ShuffleUnit, bn_axis_name=self.bn_axis_name, dtype=self.dtype)
        x = x.astype(self.dtype)
        channels = self.stages_out_channels[0]
        stride = 1 if self.cifar_stem else 2
        bn = functools.partial(
            layers.batch_norm, train, axis_name=self.bn_axis_name, dtype=self.dtype
        )
        x = _conv(channels, 3, 3, stride, 1, self.dtype, name="conv1_0")(x)
        x = nn.relu(bn(name="conv1_1")(x))
        self.sow("intermediates", "conv1", x)
        if not self.cifar_stem:
            x = layers.max_pool(x, 3, 2, padding=1)
        for stage, (repeats, out_channels) in enumerate(
            zip(self.stages_repeats, self.stages_out_channels[1:4]), start=2
        ):
            for i in range(repeats):
                x = unit(channels, out_channels, 2 if i == 0 else 1, name=f"stage{stage}_{i}")(
                    x, train
                )
                channels = out_channels
            self.sow("intermediates", f"stage{stage}", x)
        x = _conv(self.stages_out_channels[-1], channels, 1, 1, 1, self.dtype, name="conv5_0")(x)
        x = nn.relu(bn(name="conv5_1")(x))
        self.sow("intermediates", "conv5", x)
        x = layers.global_avg_pool(x)
        if self.num_classes == 0:
            return x
        return layers.dense(self.num_classes, x.shape[-1], dtype=self.dtype, name="fc")(x)


def _variant(repeats: tuple[int, ...], channels: tuple[int, ...]) -> Callable[..., ShuffleNetV2]:
    return functools.partial(ShuffleNetV2, stages_repeats=repeats, stages_out_channels=channels)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "shufflenetv2_x0_5": _variant((4, 8, 4), (24, 48, 96, 192, 1024)),
    "shufflenetv2_x1_0": _variant((4, 8, 4), (24, 116, 232, 464, 1024)),
    "shufflenetv2_x1_5": _variant((4, 8, 4), (24, 176, 352, 704, 1024)),
    "shufflenetv2_x2_0": _variant((4, 8, 4), (24, 244, 488, 976, 2048)),
}
