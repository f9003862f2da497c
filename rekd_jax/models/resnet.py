"""ResNet-18/34/50/101/152 in Flax, parameter-for-parameter equal to torchvision (v1.5).

torchvision v1.5: the stride of a bottleneck sits in its 3x3 conv. Flax names are torchvision's
with '.' written as '_' before an index (``layer1_0/downsample_1`` is ``layer1.0.downsample.1``),
so ``torch_module_name`` is the shared default rule. Inputs are NHWC.

``width_multiplier`` scales every channel count (stem, all stages, hence the pooled feature
width), as in SimCLR's ResNet-50 (x2) / (x4) used by SEED as teachers; the registry also accepts
names like ``resnet50x2``. It is not torchvision's ``wide_resnet50_2`` (which widens only the
bottleneck's inner convs). Fractional multipliers (e.g. 0.25) give tiny models for tests.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rekd_jax.models.layers import (
    batch_norm,
    check_nhwc_rgb,
    conv,
    default_torch_module_name,
    dense,
    global_avg_pool,
    max_pool,
)


def torch_module_name(module_path: Sequence[str]) -> str:
    """Flax module path -> torchvision state_dict prefix, e.g. ('layer1_0', 'conv1') ->
    'layer1.0.conv1'."""
    return default_torch_module_name(module_path)


class BasicBlock(nn.Module):
    """torchvision ``BasicBlock``: 3x3-3x3 with identity or 1x1-conv+BN shortcut."""

    planes: int
    stride: int = 1
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    zero_init_residual: bool = False

    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        bn = functools.partial(batch_norm, train, axis_name=self.bn_axis_name, dtype=self.dtype)
        identity = x
        y = conv(self.planes, 3, stride=self.stride, padding=1, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(bn(name="bn1")(y))
        y = conv(self.planes, 3, padding=1, dtype=self.dtype, name="conv2")(y)
        y = bn(zero_init=self.zero_init_residual, name="bn2")(y)
        if self.stride != 1 or x.shape[-1] != self.planes * self.expansion:
            identity = conv(
                self.planes * self.expansion,
                1,
                stride=self.stride,
                dtype=self.dtype,
                name="downsample_0",
            )(x)
            identity = bn(name="downsample_1")(identity)
        return nn.relu(y + identity)


class Bottleneck(nn.Module):
    """torchvision ``Bottleneck`` (v1.5): 1x1, 3x3 (strided), 1x1 with expansion 4."""

    planes: int
    stride: int = 1
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    zero_init_residual: bool = False

    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        bn = functools.partial(batch_norm, train, axis_name=self.bn_axis_name, dtype=self.dtype)
        identity = x
        y = conv(self.planes, 1, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(bn(name="bn1")(y))
        y = conv(self.planes, 3, stride=self.stride, padding=1, dtype=self.dtype, name="conv2")(y)
        y = nn.relu(bn(name="bn2")(y))
        y = conv(self.planes * self.expansion, 1, dtype=self.dtype, name="conv3")(y)
        y = bn(zero_init=self.zero_init_residual, name="bn3")(y)
        if self.stride != 1 or x.shape[-1] != self.planes * self.expansion:
            identity = conv(
                self.planes * self.expansion,
                1,
                stride=self.stride,
                dtype=self.dtype,
                name="downsample_0",
            )(x)
            identity = bn(name="downsample_1")(identity)
        return nn.relu(y + identity)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


def scaled_width(channels: int, width_multiplier: float) -> int:
    """Channel count after the width multiplier (at least 1)."""
    return max(1, int(round(channels * width_multiplier)))


class ResNet(nn.Module):
    """torchvision ResNet on NHWC images.

    Output: logits (``num_classes`` > 0, torchvision's ``fc``) or the global-average-pooled
    layer4 features (``num_classes=0``; 512 x width for 18/34, 2048 x width for 50/101/152), in
    the compute ``dtype``. Parameters are float32.

    ``cifar_stem=True`` (32x32 inputs): conv1 is 3x3 stride 1 (padding 1) and the stem max-pool is
    dropped, the usual CIFAR ResNet. ``zero_init_residual`` starts the last BN gamma of every
    block at 0 (torchvision's option). ``bn_axis_name`` makes every BatchNorm cross-replica.
    Sown intermediates ('intermediates' collection): 'stem' (after the stem max-pool, the
    input of layer1) and 'layer1'..'layer4'.
    """

    stage_sizes: Sequence[int]
    block: str = "basic"
    width_multiplier: float = 1.0
    num_classes: int = 1000
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    cifar_stem: bool = False
    zero_init_residual: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_nhwc_rgb(x, "ResNet")
        if self.block not in BLOCKS:
            raise ValueError(f"Unknown ResNet block {self.block!r}; use one of {sorted(BLOCKS)}.")
        if self.width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be positive; got {self.width_multiplier}.")
        block_cls = BLOCKS[self.block]
        x = x.astype(self.dtype)
        stem_width = scaled_width(64, self.width_multiplier)
        if self.cifar_stem:
            x = conv(stem_width, 3, stride=1, padding=1, dtype=self.dtype, name="conv1")(x)
        else:
            x = conv(stem_width, 7, stride=2, padding=3, dtype=self.dtype, name="conv1")(x)
        x = nn.relu(batch_norm(train, axis_name=self.bn_axis_name, dtype=self.dtype, name="bn1")(x))
        if not self.cifar_stem:
            x = max_pool(x, 3, 2, padding=1)
        self.sow("intermediates", "stem", x)
        for stage, num_blocks in enumerate(self.stage_sizes):
            planes = scaled_width(64 * 2**stage, self.width_multiplier)
            for index in range(num_blocks):
                x = block_cls(
                    planes,
                    stride=2 if stage > 0 and index == 0 else 1,
                    dtype=self.dtype,
                    bn_axis_name=self.bn_axis_name,
                    zero_init_residual=self.zero_init_residual,
                    name=f"layer{stage + 1}_{index}",
                )(x, train)
            self.sow("intermediates", f"layer{stage + 1}", x)
        x = global_avg_pool(x)
        if self.num_classes == 0:
            return x
        return dense(self.num_classes, x.shape[-1], dtype=self.dtype, name="fc")(x)


def _factory(stage_sizes: Sequence[int], block: str) -> Callable[..., ResNet]:
    return functools.partial(ResNet, stage_sizes=tuple(stage_sizes), block=block)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": _factory((2, 2, 2, 2), "basic"),
    "resnet34": _factory((3, 4, 6, 3), "basic"),
    "resnet50": _factory((3, 4, 6, 3), "bottleneck"),
    "resnet101": _factory((3, 4, 23, 3), "bottleneck"),
    "resnet152": _factory((3, 8, 36, 3), "bottleneck"),
}
