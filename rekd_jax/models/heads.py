"""Projection heads and the Encoder (backbone + projector) used by every method.

- ``Projector``: MoCo v2's MLP, Linear-ReLU-Linear (both with biases); with ``use_bn`` SwAV's
  Linear-BN-ReLU-Linear. Submodules: 'hidden', 'bn' (only with use_bn), 'out'. With
  ``layers=1`` one Linear ('out'): MoCo v1's and the MoCo CIFAR-10 demo's linear head.
- ``Encoder``: ``{'features': pooled backbone features, 'embedding': L2-normalised
  projection}``, both float32; submodules 'backbone' and 'projector'. Without a projector the
  embedding is the L2-normalised features.
- ``build_encoder(spec)``: the Encoder an encoder-checkpoint spec describes (see models.io).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rekd_jax.models import get_model
from rekd_jax.models.layers import batch_norm, dense


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps), like ``torch.nn.functional.normalize``."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x / jnp.maximum(norm, eps)


class Projector(nn.Module):
    """MLP projection head (torch default init); input width is inferred."""

    hidden: int
    out: int = 128
    use_bn: bool = False
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    layers: int = 2

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.layers == 1:
            return dense(self.out, x.shape[-1], dtype=self.dtype, name="out")(x)
        if self.layers != 2:
            raise ValueError(f"Projector layers must be 1 (linear) or 2 (MLP); got {self.layers}.")
        x = dense(self.hidden, x.shape[-1], dtype=self.dtype, name="hidden")(x)
        if self.use_bn:
            x = batch_norm(train, axis_name=self.bn_axis_name, dtype=self.dtype, name="bn")(x)
        x = nn.relu(x)
        return dense(self.out, self.hidden, dtype=self.dtype, name="out")(x)


class Encoder(nn.Module):
    """Backbone (built with num_classes=0) followed by an optional projector.

    ``proj_hidden``/``proj_dim`` both None means no projector. The projector computes in the
    backbone's dtype and shares its ``bn_axis_name``.
    """

    backbone: nn.Module
    proj_hidden: int | None = None
    proj_dim: int | None = None
    proj_bn: bool = False
    proj_layers: int = 2

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        if getattr(self.backbone, "num_classes", 0) != 0:
            raise ValueError(
                f"Encoder needs a backbone built with num_classes=0 (pooled features); got "
                f"num_classes={self.backbone.num_classes}. Use get_model(name, num_classes=0)."
            )
        if (self.proj_hidden is None) != (self.proj_dim is None):
            raise ValueError(
                f"Encoder: set both proj_hidden and proj_dim (or neither); got "
                f"proj_hidden={self.proj_hidden}, proj_dim={self.proj_dim}."
            )
        features = self.backbone(x, train)
        if self.proj_dim is None:
            projection = features
        else:
            projection = Projector(
                self.proj_hidden,
                self.proj_dim,
                use_bn=self.proj_bn,
                dtype=getattr(self.backbone, "dtype", jnp.float32),
                bn_axis_name=getattr(self.backbone, "bn_axis_name", None),
                layers=self.proj_layers,
                name="projector",
            )(features, train)
        return {
            "features": features.astype(jnp.float32),
            "embedding": l2_normalize(projection.astype(jnp.float32)),
        }


def build_encoder(spec: Mapping[str, Any], **overrides: Any) -> Encoder:
    """The Encoder for an encoder-checkpoint ``spec`` (``{'arch', 'overrides', 'projector',
    'source'}``). The backbone always gets num_classes=0: a classifier stored in the checkpoint
    (spec overrides num_classes > 0) is kept in the variables but not used by the Encoder.
    ``overrides`` update the spec's (e.g. dtype='bfloat16' or bn_axis_name at evaluation)."""
    for key in ("arch", "overrides", "projector"):
        if key not in spec:
            raise ValueError(
                f"Encoder spec lacks {key!r}; expected keys arch, overrides, projector, source."
            )
    backbone = get_model(spec["arch"], **{**spec["overrides"], **overrides, "num_classes": 0})
    projector = spec["projector"]
    if projector is None:
        return Encoder(backbone)
    return Encoder(
        backbone,
        int(projector["hidden"]),
        int(projector["dim"]),
        bool(projector["bn"]),
        int(projector.get("layers", 2)),
    )


def encoder_variable_shapes(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Shapes (``jax.ShapeDtypeStruct`` leaves) of the variables an encoder checkpoint with this
    ``spec`` holds: ``{'params': {'backbone', 'projector'?}, 'batch_stats': {'backbone'?,
    'projector'?}}``. Unlike ``build_encoder`` the backbone keeps its classifier when the spec's
    num_classes > 0 (a spec without num_classes means 0: checkpoints hold encoders). Computed by
    shape inference only (no parameters are materialised)."""
    overrides = {"num_classes": 0, **spec["overrides"]}
    backbone = get_model(spec["arch"], **overrides)
    size = 32 if overrides.get("cifar_stem") else 224
    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    shapes: dict[str, dict[str, Any]] = {"params": {}, "batch_stats": {}}

    def add(name: str, variables: Mapping[str, Any]) -> None:
        for collection in ("params", "batch_stats"):
            if variables.get(collection):
                shapes[collection][name] = variables[collection]

    add(
        "backbone",
        jax.eval_shape(lambda x: backbone.init(jax.random.key(0), x, train=False), images),
    )
    projector = spec["projector"]
    if projector is not None:
        features = get_model(spec["arch"], **{**overrides, "num_classes": 0})
        pooled = jax.eval_shape(
            lambda x: features.init_with_output(jax.random.key(0), x, train=False)[0], images
        )
        head = Projector(
            int(projector["hidden"]),
            int(projector["dim"]),
            use_bn=bool(projector["bn"]),
            layers=int(projector.get("layers", 2)),
        )
        add(
            "projector",
            jax.eval_shape(lambda f: head.init(jax.random.key(0), f, train=False), pooled),
        )
    return shapes
