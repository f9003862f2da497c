"""Model zoo: one module per family, a registry, heads (projector, Encoder) and checkpoint I/O.

Public API
----------
- ``get_model(name, **overrides) -> flax.linen.Module``; ``list_models()``;
  ``feature_dim(name, **overrides) -> int`` (width of the pooled backbone features);
  ``model_family(name)`` (the family module, used by the PyTorch importer).
- ``resnet<depth>x<k>`` names (e.g. ``resnet50x2``) are ``resnet<depth>`` with
  ``width_multiplier=k``; any ResNet, and AlexNet, also takes a float ``width_multiplier``
  override.
- ``dtype`` overrides may be given as strings ('bfloat16') so that specs stay JSON-able.

Contract for family modules (resnet, alexnet, mobilenetv3, shufflenetv2, efficientnet)
--------------------------------------------------------------------------------------
Each family module exports

- ``MODELS: dict[str, Callable[..., nn.Module]]``: registry name -> factory taking the
  overrides as keyword arguments (the module's dataclass fields).
- ``torch_module_name(module_path: tuple[str, ...]) -> str``: a Flax module path (submodule
  names, without the leaf parameter name) -> the torchvision state_dict module prefix, e.g.
  ``('layer1_0', 'conv1') -> 'layer1.0.conv1'``.

Every backbone is a ``flax.linen.Module`` on NHWC images called as ``model(x, train)`` with the
fields ``num_classes: int = 1000`` (0 -> return the pooled backbone features), ``dtype``
(compute dtype; parameters are always float32 via ``param_dtype``), ``bn_axis_name: str | None``
(passed to every ``nn.BatchNorm`` for cross-replica statistics) and ``cifar_stem: bool`` (the
32x32 variant). BatchNorm momentum/epsilon equal torchvision's (Flax momentum = 1 - torch
momentum); convolutions pad explicitly and symmetrically like torch. Outputs are in the compute
dtype (``heads.Encoder`` returns float32). Intermediate maps are sown into the 'intermediates'
collection (Flax stores each as a 1-tuple).

The generic converter (``rekd_jax.tools.import_torch``) maps every leaf of the Flax variables to
``torch_module_name(path) + '.' + torch_leaf``: Conv kernel (H, W, I, O) <- weight (O, I, H, W)
(a depthwise conv, ``feature_group_count=C``, fits the same transpose: (kh, kw, 1, C) <-
(C, 1, kh, kw)); Dense kernel (I, O) <- weight (O, I); bias <- bias; BatchNorm scale <- weight,
bias <- bias; batch_stats mean <- running_mean, var <- running_var; torch's
``num_batches_tracked`` is ignored. No family needs a per-tensor special case: AlexNet flattens
its 6x6x256 map in torch's NCHW order so its first classifier Linear converts with the plain
transpose.
"""

from __future__ import annotations

import dataclasses
import re
from types import ModuleType
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rekd_jax.models import alexnet, efficientnet, mobilenetv3, resnet, shufflenetv2

FAMILIES: tuple[ModuleType, ...] = (resnet, alexnet, mobilenetv3, shufflenetv2, efficientnet)
_WIDTH_NAME = re.compile(r"^(resnet\d+)x(\d+)$")


def list_models() -> list[str]:
    """All registered model names (``resnet<depth>x<k>`` width names are accepted as well)."""
    return sorted(name for family in FAMILIES for name in family.MODELS)


def _resolve(name: str, overrides: dict[str, Any]) -> tuple[ModuleType, str, dict[str, Any]]:
    """(family module, registered name, overrides) for a possibly width-multiplied name."""
    overrides = dict(overrides)
    match = _WIDTH_NAME.match(name)
    if match and match.group(1) in resnet.MODELS:
        if "width_multiplier" in overrides:
            raise ValueError(
                f"{name!r} already sets the width multiplier to {match.group(2)}; "
                f"drop width_multiplier={overrides['width_multiplier']!r} "
                f"or use {match.group(1)!r}."
            )
        name, overrides["width_multiplier"] = match.group(1), float(match.group(2))
    for family in FAMILIES:
        if name in family.MODELS:
            return family, name, overrides
    raise ValueError(
        f"Unknown model {name!r}. Valid names: {', '.join(list_models())}, and resnet<depth>x<k> "
        "width-multiplied ResNets such as resnet50x2."
    )


def model_family(name: str) -> ModuleType:
    """The family module (with ``MODELS`` and ``torch_module_name``) that builds ``name``."""
    return _resolve(name, {})[0]


def get_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model; ``overrides`` set fields such as num_classes, dtype,
    bn_axis_name, cifar_stem or family-specific ones (AlexNet ``use_bn``, ResNet and
    AlexNet ``width_multiplier``). Unknown names or fields raise ValueError listing the valid
    ones."""
    family, name, overrides = _resolve(name, overrides)
    factory = family.MODELS[name]
    valid = sorted(
        f.name for f in dataclasses.fields(factory()) if f.init and f.name not in ("parent", "name")
    )
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(
            f"Unknown override(s) {unknown} for model {name!r}. Valid fields: {', '.join(valid)}."
        )
    if isinstance(overrides.get("dtype"), str):
        overrides["dtype"] = jnp.dtype(overrides["dtype"])
    return factory(**overrides)


def feature_dim(name: str, **overrides: Any) -> int:
    """Width of the pooled backbone features of ``get_model(name, **overrides)`` (its output
    with num_classes=0): e.g. 512 for resnet18, 2048 for resnet50, 4096 for resnet50x2, 256 for
    alexnet (the pooled conv5 map). Computed by shape inference, so it is exact for every
    family and override."""
    model = get_model(name, **{**overrides, "num_classes": 0})
    size = 32 if overrides.get("cifar_stem") else 224
    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    out, _ = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x, train=False), images
    )
    return int(out.shape[-1])


def init_variables(model: nn.Module, rng: jax.Array, images: jax.Array) -> dict:
    """``model.init({'params': rng}, images, train=False)`` under ``jax.jit``, as the Flax
    examples initialise: one compiled program (which the persistent compilation cache keeps
    across runs) instead of one eager dispatch per parameter."""
    return jax.jit(lambda key, x: model.init({"params": key}, x, train=False))(rng, images)
