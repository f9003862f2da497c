"""Frozen backbone features: load an encoder checkpoint, extract features over a whole split
(padded + masked batches, pmap over local devices), cache them as npz in the workdir.

The backbone always runs with BatchNorm in eval mode (train=False): the probes never change
it. Feature functions map (variables, float images (b, H, W, 3)) -> {name: (b, ...) float32}:
`pooled_features` gives {'features': global-pooled backbone output}, `conv_features` gives the
AlexNet conv maps adaptive-max-pooled per layer (rekd_jax.evaluation.conv_probe).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from rekd_jax import models
from rekd_jax.core import fileio
from rekd_jax.core import progress as progress_lib
from rekd_jax.models import get_model
from rekd_jax.models import io as model_io

FeatureFn = Callable[[Any, jax.Array], dict]


class Backbone(NamedTuple):
    """A frozen backbone: the Flax module (num_classes=0), its variables, the checkpoint spec."""

    module: Any
    variables: dict
    spec: dict


INIT_PREFIX = "init:"
INIT_SYNTAX = (
    "init:ARCH[:field=value,...] (model fields such as cifar_stem=true, "
    "width_multiplier=0.25, plus seed=N for the initialisation; e.g. "
    "init:resnet18:cifar_stem=true,width_multiplier=0.25,seed=1)"
)


def _literal(text: str) -> Any:
    """'true'/'false'/numbers/JSON as values, anything else as a string."""
    lowered = text.strip()
    if lowered.lower() in ("true", "false"):
        return lowered.lower() == "true"
    try:
        return json.loads(lowered)
    except ValueError:
        return lowered


def parse_init_checkpoint(checkpoint: str) -> tuple[dict, int] | None:
    """`init:ARCH[:k=v,...]` -> (encoder spec of an untrained backbone, seed); None for a path.

    The spec is what `models.io` checkpoints hold (no projector), with source 'random init
    (seed N)'. ValueError naming the syntax when the text is malformed or the model unknown.
    """
    if not checkpoint.startswith(INIT_PREFIX):
        return None
    body = checkpoint[len(INIT_PREFIX) :]
    arch, _, fields = body.partition(":")
    overrides: dict[str, Any] = {}
    for item in filter(None, (f.strip() for f in fields.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(
                f"checkpoint {checkpoint!r}: {item!r} is not field=value; use " + INIT_SYNTAX
            )
        overrides[key.strip()] = _literal(value)
    seed = overrides.pop("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"checkpoint {checkpoint!r}: seed must be an integer; use " + INIT_SYNTAX)
    try:
        get_model(arch, **{**overrides, "num_classes": 0})
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"checkpoint {checkpoint!r}: {arch!r} with {overrides} is not a model "
            f"({error}); models: {models.list_models()}; use " + INIT_SYNTAX
        ) from None
    spec = {
        "arch": arch,
        "overrides": overrides,
        "projector": None,
        "source": f"random init (seed {seed})",
    }
    return spec, int(seed)


def checkpoint_spec(checkpoint: str) -> dict:
    """The encoder spec of a checkpoint directory or of an `init:` text (nothing is loaded)."""
    parsed = parse_init_checkpoint(checkpoint)
    if parsed is not None:
        return parsed[0]
    return model_io.validate_spec(
        json.loads(fileio.read_text(os.path.join(checkpoint, model_io.SPEC_FILE)))
    )


def checkpoint_identity(checkpoint: str) -> dict:
    """What identifies a checkpoint for caches and resume signatures: the absolute path and
    the spec's modification time, or the `init:` text itself (a pure function of it)."""
    if parse_init_checkpoint(checkpoint) is not None:
        return {"checkpoint": checkpoint}
    spec_file = os.path.join(checkpoint, model_io.SPEC_FILE)
    return {"checkpoint": fileio.absolute(checkpoint), "spec_mtime": fileio.mtime(spec_file)}


def init_backbone(spec: dict, seed: int, **overrides: Any) -> Backbone:
    """An untrained backbone (the random-init baseline): variables from model.init(seed)."""
    module = get_model(spec["arch"], **{**spec["overrides"], **overrides, "num_classes": 0})
    image_size = 32 if spec["overrides"].get("cifar_stem") else 224
    dummy = jnp.zeros((2, image_size, image_size, 3), jnp.float32)
    variables = models.init_variables(module, jax.random.PRNGKey(seed), dummy)
    variables = jax.tree_util.tree_map(np.asarray, dict(variables))
    return Backbone(module=module, variables=variables, spec=dict(spec))


def load_backbone(checkpoint: str, **overrides: Any) -> Backbone:
    """The backbone of an encoder checkpoint directory (ours or imported from PyTorch), or an
    untrained one for `init:ARCH[:field=value,...]` (see `parse_init_checkpoint`).

    `overrides` update the spec's model fields (e.g. dtype='bfloat16', bn_axis_name='batch').
    Raises FileNotFoundError saying how to produce a checkpoint when there is none.
    """
    if not checkpoint:
        raise FileNotFoundError(
            "config.checkpoint is empty: set it to an encoder directory. " + model_io.HOW_TO_PRODUCE
        )
    parsed = parse_init_checkpoint(checkpoint)
    if parsed is not None:
        return init_backbone(*parsed, **overrides)
    spec, variables = model_io.load_encoder(checkpoint)
    module = get_model(spec["arch"], **{**spec["overrides"], **overrides, "num_classes": 0})
    backbone_vars = {"params": variables["params"]["backbone"]}
    stats = variables.get("batch_stats", {}) or {}
    if stats.get("backbone"):
        backbone_vars["batch_stats"] = stats["backbone"]
    return Backbone(module=module, variables=backbone_vars, spec=dict(spec))


def pooled_features(module) -> FeatureFn:
    """{'features': global-pooled backbone features (float32)} with BatchNorm in eval mode."""

    def fn(variables, images):
        return {"features": module.apply(variables, images, train=False).astype(jnp.float32)}

    return fn


def feature_shapes(feature_fn: FeatureFn, variables, image_size: int) -> dict[str, tuple]:
    """Per-example shape of each named feature for `image_size` inputs (shape inference only)."""
    images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    shapes = jax.eval_shape(feature_fn, variables, images)
    return {name: tuple(s.shape[1:]) for name, s in shapes.items()}


def feature_dims(feature_fn: FeatureFn, variables, image_size: int) -> dict[str, int]:
    """Width (flattened size) of each named feature for `image_size` inputs."""
    return {
        name: int(np.prod(shape))
        for name, shape in feature_shapes(feature_fn, variables, image_size).items()
    }


def batch_images(batch: Mapping[str, Any]) -> Any:
    """The per-device image input of a pipeline batch: uint8 images, or indices (resident mode)."""
    if "image" in batch:
        return batch["image"]
    if "index" in batch:
        return batch["index"]
    raise ValueError(f"pipeline batch has neither 'image' nor 'index' (keys {sorted(batch)})")


def images_on_device(x: jax.Array, resident: jax.Array | None) -> jax.Array:
    """Inside pmap: uint8 images from either host images or indices into the resident copy."""
    return x if resident is None else resident[x]


def extract_features(
    feature_fn: FeatureFn,
    variables: Any,
    batches: Iterable[Mapping],
    *,
    preprocess: Callable[[jax.Array], jax.Array],
    resident: jax.Array | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Features of every real (masked-in) example of `batches`, on the host.

    Args:
      feature_fn: (variables, float images) -> {name: (b, ...)} per device.
      variables: unreplicated backbone variables (replicated here once).
      batches: pipeline batches {'image' | 'index', 'label', 'mask'?} shaped (D, b, ...);
        without 'mask' every row is real.
      preprocess: uint8 (b, H, W, 3) -> float images (e.g. augment.eval_view with its config).
      resident: replicated uint8 dataset when batches carry indices (resident mode).
    Returns:
      ({name: (n, ...) float32}, labels (n,) int32) in batch order, padding removed.
    """
    replicated = flax.jax_utils.replicate(variables)

    def device_fn(variables, x, resident):
        return feature_fn(variables, preprocess(images_on_device(x, resident)))

    mapped = progress_lib.heartbeat_first_call(
        jax.pmap(device_fn), "compiling the feature extractor"
    )
    chunks: dict[str, list] = {}
    labels = []
    progress = progress_lib.Progress(
        "feature extraction", int(getattr(batches, "steps_per_epoch", 0) or 0), unit="batch"
    )
    for batch in batches:
        out = mapped(replicated, batch_images(batch), resident)
        out = jax.device_get(out)
        mask = np.asarray(batch.get("mask", np.ones(np.shape(batch["label"]), bool))).reshape(-1)
        for name, value in out.items():
            value = np.asarray(value)
            chunks.setdefault(name, []).append(value.reshape((-1,) + value.shape[2:])[mask])
        labels.append(np.asarray(batch["label"]).reshape(-1)[mask])
        progress.update(1)
    progress.close()
    if not labels:
        raise ValueError("extract_features: the split produced no batches")
    return (
        {name: np.concatenate(parts) for name, parts in chunks.items()},
        np.concatenate(labels).astype(np.int32),
    )


def fingerprint(**fields: Any) -> str:
    """A short stable hash of what determines a feature set (checkpoint, split, transform...)."""
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_features(
    path: str, key: str, compute: Callable[[], tuple[dict, np.ndarray]]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Load features from the npz at `path` if it was written for `key`, else compute and save.

    The npz holds one array per feature name, 'label' and '__key__'. A stale file (another
    checkpoint, split or transform) or an unreadable one (truncated, not an npz) is recomputed
    and overwritten.
    """
    if fileio.exists(path):
        try:
            with np.load(io.BytesIO(fileio.read_bytes(path))) as data:
                if str(data["__key__"]) == key:
                    logging.info("features: loaded %s", path)
                    return (
                        {k: data[k] for k in data.files if k not in ("label", "__key__")},
                        data["label"],
                    )
            logging.info("features: %s was written for another setup; recomputing", path)
        except (zipfile.BadZipFile, ValueError, KeyError, EOFError, OSError) as error:
            logging.warning(
                "features: %s cannot be read (%s: %s); recomputing it",
                path,
                type(error).__name__,
                (str(error).splitlines() or [""])[0][:200],
            )
    feats, labels = compute()
    buffer = io.BytesIO()
    np.savez(buffer, __key__=np.array(key), label=labels, **feats)
    fileio.write_bytes(path, buffer.getvalue())
    return feats, labels
