"""AlexNet in Flax with torchvision's layout (channels 64-192-384-256-256).

``use_bn=False`` is exactly ``torchvision.models.alexnet``: same parameters, same outputs for any
input size >= 63 px (including ``AdaptiveAvgPool2d((6, 6))`` and dropout in the classifier when
training). ``use_bn=True`` (the default, for self-supervised training) inserts a BatchNorm
between every conv and its ReLU and drops the then redundant conv biases -- the way torchvision
builds ``vgg*_bn`` from ``vgg*``. In torch terms the features Sequential becomes
Conv(0) BN(1) ReLU(2) MaxPool(3) Conv(4) BN(5) ReLU(6) MaxPool(7) Conv(8) BN(9) ReLU(10)
Conv(11) BN(12) ReLU(13) Conv(14) BN(15) ReLU(16) MaxPool(17); the classifier is unchanged.

Flax module names are these torch Sequential indices (``features_4`` is ``features.4``), so
``torch_module_name`` is the shared default rule for both variants, and the flattening before
the first classifier Linear is done in torch's NCHW order so that its weight converts with the
plain transpose.

Pooled backbone features (``num_classes=0``): the global average of the conv5 map after its
final ReLU and max-pool (the output of torch's ``features``), 256 wide. The classifier
(fc6/fc7/fc8) exists only when ``num_classes > 0``.

``width_multiplier`` scales the five conv widths (hence the pooled features: 256 x k), as
ResNet's does; 1.0 is torchvision's. Small widths are for CPU-sized runs (the quick start).

``cifar_stem=True`` (32x32 inputs): conv1 becomes 3x3 stride 1 padding 1 (instead of 11x11
stride 4 padding 2); everything else is unchanged. A 32x32 image gives conv1 32x32, conv2 15x15,
conv3..conv5 7x7 and a 3x3 map after the final max-pool, so the conv probe's adaptive max-pools
(12, 7, 5, 6, 6) stay pooling, never upsampling.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rekd_jax.models.layers import (
    adaptive_avg_pool,
    batch_norm,
    check_nhwc_rgb,
    conv,
    default_torch_module_name,
    dense,
    global_avg_pool,
    max_pool,
)
from rekd_jax.models.resnet import scaled_width

# (out channels, kernel, stride, padding, max-pool after) for conv1..conv5.
CONV_LAYOUT = (
    (64, 11, 4, 2, True),
    (192, 5, 1, 2, True),
    (384, 3, 1, 1, False),
    (256, 3, 1, 1, False),
    (256, 3, 1, 1, True),
)
CIFAR_CONV1 = (64, 3, 1, 1, True)


def torch_module_name(module_path: Sequence[str]) -> str:
    """Flax module path -> torch state_dict prefix, e.g. ('features_3',) -> 'features.3'."""
    return default_torch_module_name(module_path)


class AlexNet(nn.Module):
    """AlexNet on NHWC images; see the module docstring for the variants.

    Output: logits (``num_classes`` > 0) or the 256-wide pooled conv5 features
    (``num_classes=0``), in the compute ``dtype``. Training with a classifier needs a 'dropout'
    rng. Sown intermediates: 'conv1'..'conv5', each after its ReLU (conv5 before the final
    max-pool): the maps the conv-probe protocol pools.
    """

    num_classes: int = 1000
    use_bn: bool = True
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    cifar_stem: bool = False
    width_multiplier: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_nhwc_rgb(x, "AlexNet")
        if self.width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be positive; got {self.width_multiplier}.")
        layout = ((CIFAR_CONV1,) if self.cifar_stem else CONV_LAYOUT[:1]) + CONV_LAYOUT[1:]
        x = x.astype(self.dtype)
        index = 0  # position in torch's features Sequential
        for number, (features, kernel, stride, padding, pool) in enumerate(layout, start=1):
            x = conv(
                scaled_width(features, self.width_multiplier),
                kernel,
                stride=stride,
                padding=padding,
                use_bias=not self.use_bn,
                in_features=x.shape[-1],
                init="torch_default",
                dtype=self.dtype,
                name=f"features_{index}",
            )(x)
            index += 1
            if self.use_bn:
                x = batch_norm(
                    train, axis_name=self.bn_axis_name, dtype=self.dtype, name=f"features_{index}"
                )(x)
                index += 1
            x = nn.relu(x)
            index += 1
            self.sow("intermediates", f"conv{number}", x)
            if pool:
                if min(x.shape[1:3]) < 3:
                    raise ValueError(
                        f"AlexNet: the conv{number} map is {x.shape[1]}x{x.shape[2]}, "
                        "too small for the 3x3 max-pool; use inputs of at least 63x63 "
                        "(or cifar_stem=True for 32x32)."
                    )
                x = max_pool(x, 3, 2)
                index += 1
        if self.num_classes == 0:
            return global_avg_pool(x)
        x = adaptive_avg_pool(x, (6, 6))
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # torch.flatten of NCHW
        drop = functools.partial(nn.Dropout, self.dropout_rate, deterministic=not train)
        x = drop()(x)
        x = nn.relu(dense(4096, x.shape[-1], dtype=self.dtype, name="classifier_1")(x))
        x = drop()(x)
        x = nn.relu(dense(4096, 4096, dtype=self.dtype, name="classifier_4")(x))
        return dense(self.num_classes, 4096, dtype=self.dtype, name="classifier_6")(x)


MODELS: dict[str, Callable[..., nn.Module]] = {"alexnet": AlexNet}
