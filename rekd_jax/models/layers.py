"""Layers shared by the model families, with PyTorch's numerics.

Everything here exists so that a Flax model can be parameter-for-parameter and output-for-output
equal to its torchvision counterpart:

- ``conv`` pads explicitly and symmetrically like ``torch.nn.Conv2d(padding=p)``; Flax's
  'SAME' pads asymmetrically at stride 2 and would shift the sampling grid.
- ``batch_norm`` takes torch's momentum / epsilon (Flax momentum = 1 - torch momentum).
- ``dense`` and ``conv(init='torch_default')`` reproduce torch's default initialisation.
- ``adaptive_avg_pool`` / ``adaptive_max_pool`` use torch's AdaptiveAvg/MaxPool2d bins:
  output cell i covers input rows [floor(i*H/h), ceil((i+1)*H/h)).
- ``default_torch_module_name`` maps a Flax module path to a torch state_dict prefix for
  families whose Flax names are torch names with '.' written as '_'.

All tensors are NHWC.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# torch.nn.BatchNorm2d defaults.
TORCH_BN_MOMENTUM = 0.1
TORCH_BN_EPSILON = 1e-5

# torchvision ResNet: kaiming_normal_(mode='fan_out', nonlinearity='relu'), untruncated.
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch's default Conv2d/Linear weight init: kaiming_uniform_(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias_init(fan_in: int):
    """torch's default Conv2d/Linear bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def conv(
    features: int,
    kernel_size: int,
    *,
    stride: int = 1,
    padding: int = 0,
    groups: int = 1,
    use_bias: bool = False,
    in_features: int | None = None,
    init: str = "kaiming_fan_out",
    dtype: Any = jnp.float32,
    name: str | None = None,
) -> nn.Conv:
    """A ``torch.nn.Conv2d`` equivalent (square kernel, symmetric zero padding).

    ``init``: 'kaiming_fan_out' (torchvision ResNet/MobileNet) or 'torch_default' (plain
    ``nn.Conv2d``, e.g. AlexNet); the latter needs ``in_features`` for the bias bound.
    Parameters are float32; ``dtype`` is the compute dtype.
    """
    if init == "kaiming_fan_out":
        kernel_init, bias_init = kaiming_normal_fan_out, nn.initializers.zeros
    elif init == "torch_default":
        if in_features is None:
            raise ValueError("conv(init='torch_default') needs in_features for the bias bound.")
        kernel_init = torch_default_kernel_init
        bias_init = torch_default_bias_init(in_features // groups * kernel_size * kernel_size)
    else:
        raise ValueError(f"Unknown conv init {init!r}; use 'kaiming_fan_out' or 'torch_default'.")
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        feature_group_count=groups,
        use_bias=use_bias,
        kernel_init=kernel_init,
        bias_init=bias_init,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def dense(
    features: int, in_features: int, *, dtype: Any = jnp.float32, name: str | None = None
) -> nn.Dense:
    """A ``torch.nn.Linear`` equivalent with torch's default initialisation (with bias)."""
    return nn.Dense(
        features,
        kernel_init=torch_default_kernel_init,
        bias_init=torch_default_bias_init(in_features),
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def batch_norm(
    train: bool,
    *,
    axis_name: str | None = None,
    torch_momentum: float = TORCH_BN_MOMENTUM,
    epsilon: float = TORCH_BN_EPSILON,
    zero_init: bool = False,
    dtype: Any = jnp.float32,
    name: str | None = None,
) -> nn.BatchNorm:
    """A ``torch.nn.BatchNorm{1,2}d`` equivalent over the last axis.

    Batch statistics are used (and running averages updated) when ``train``; ``axis_name``
    averages the statistics across devices (cross-replica BN under pmap). ``zero_init`` starts
    gamma at 0 (torchvision's ``zero_init_residual``). One known difference: torch updates the
    running variance with the unbiased batch variance, Flax with the biased one.
    """
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=1.0 - torch_momentum,
        epsilon=epsilon,
        axis_name=axis_name,
        scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def max_pool(x: jax.Array, kernel_size: int, stride: int, padding: int = 0) -> jax.Array:
    """``torch.nn.MaxPool2d(kernel_size, stride, padding)`` (floor mode; padding never wins)."""
    return nn.max_pool(
        x,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
    )


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over the spatial axes of an NHWC map, accumulated in float32, returned in x's dtype
    (torch ``AdaptiveAvgPool2d(1)`` + flatten)."""
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(x.dtype)


def _adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """torch's adaptive pooling bins: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def _adaptive_pool_axis(x: jax.Array, axis: int, out: int, reduce) -> jax.Array:
    size = x.shape[axis]
    if size == out:
        return x
    if size % out == 0:  # equal, disjoint bins: one reshape
        shape = x.shape[:axis] + (out, size // out) + x.shape[axis + 1 :]
        return reduce(x.reshape(shape), axis + 1)
    cells = [
        reduce(jax.lax.slice_in_dim(x, start, stop, axis=axis), axis)
        for start, stop in _adaptive_bins(size, out)
    ]
    return jnp.stack(cells, axis=axis)


def _check_out_hw(x: jax.Array, out_hw: int | Sequence[int], name: str) -> tuple[int, int]:
    if x.ndim != 4:
        raise ValueError(f"{name} expects an NHWC tensor; got shape {tuple(x.shape)}.")
    out_h, out_w = (out_hw, out_hw) if isinstance(out_hw, int) else tuple(out_hw)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"{name}: output size must be positive; got {out_hw}.")
    return out_h, out_w


def adaptive_avg_pool(x: jax.Array, out_hw: int | Sequence[int]) -> jax.Array:
    """``torch.nn.AdaptiveAvgPool2d(out_hw)`` on NHWC (works for inputs smaller than out_hw).

    Averages are accumulated in float32 and returned in x's dtype. The pooling is separable
    (rectangular bins), so rows are pooled first, then columns.
    """
    out_h, out_w = _check_out_hw(x, out_hw, "adaptive_avg_pool")
    mean = lambda t, axis: jnp.mean(t, axis=axis)
    y = x.astype(jnp.float32)
    y = _adaptive_pool_axis(y, 1, out_h, mean)
    y = _adaptive_pool_axis(y, 2, out_w, mean)
    return y.astype(x.dtype)


def adaptive_max_pool(x: jax.Array, out_hw: int | Sequence[int]) -> jax.Array:
    """``torch.nn.AdaptiveMaxPool2d(out_hw)`` on NHWC (rows first, then columns)."""
    out_h, out_w = _check_out_hw(x, out_hw, "adaptive_max_pool")
    amax = lambda t, axis: jnp.max(t, axis=axis)
    return _adaptive_pool_axis(_adaptive_pool_axis(x, 1, out_h, amax), 2, out_w, amax)


def default_torch_module_name(module_path: Sequence[str]) -> str:
    """Flax module path -> torch state_dict prefix when Flax names are torch names with '.'
    written as '_' before an index: ('layer1_0', 'downsample_1') -> 'layer1.0.downsample.1'."""
    return ".".join(re.sub(r"_(\d+)", r".\1", part) for part in module_path)


def check_nhwc_rgb(x: jax.Array, model_name: str) -> None:
    """Raise a clear error unless ``x`` is a batch of NHWC RGB images."""
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(
            f"{model_name} expects NHWC RGB images of shape (batch, height, width, 3); got shape "
            f"{tuple(x.shape)}. Transpose NCHW inputs with x.transpose(0, 2, 3, 1)."
        )
