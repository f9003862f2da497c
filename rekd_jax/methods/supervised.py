"""Supervised cross-entropy: the labelled teacher of the oracle ablations (never a
self-supervised result).

The encoder's unit embedding z = f(v1) is classified by a cosine classifier,
  logits_c = z . w_c / (|w_c| tau),  L_ce = -(1/B) sum_i log softmax(logits_i)_{y_i},
so the embedding that SEED and ReKD read from a teacher is the one the labels organise (a
linear layer on the backbone features would leave the projector untrained). The class weights
are this method's own trainable parameters (`init_params`); it has no momentum encoder and no
queue.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from rekd_jax.methods import common, losses

NAME = "supervised"
KEY_ENCODER = False  # the labels are the targets


def default_config() -> ml_collections.ConfigDict:
    """Cross-entropy defaults: 10 classes (CIFAR-10), tau 0.1 (logit scale 10)."""
    return ml_collections.ConfigDict(
        {
            "num_classes": 10,  # must equal the dataset's number of classes.
            "temperature": 0.1,  # tau of the cosine classifier.
        }
    )


def validate_config(cfg: ml_collections.ConfigDict, global_batch_size: int) -> None:
    """Raises ValueError naming the field and the fix."""
    del global_batch_size  # no queue
    common.check_fields(cfg, default_config(), NAME)
    common.check_int_range(cfg, "num_classes", 2, NAME)
    common.check_positive(cfg, "temperature", NAME)


def validate_dataset(cfg: ml_collections.ConfigDict, num_classes: int) -> None:
    """The classifier must have one row per class of the training data."""
    if cfg.num_classes != num_classes:
        raise ValueError(
            f"{NAME} config: num_classes={cfg.num_classes} but the dataset has "
            f"{num_classes} classes; set num_classes={num_classes}."
        )


def teacher_mode(cfg: ml_collections.ConfigDict) -> str | None:
    """None: cross-entropy with labels needs no teacher."""
    del cfg
    return None


def loss_inputs(forward: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """loss_fn's embeddings from the step's forward outputs: the student on v1 and the labels."""
    return {"z": forward["query"], "labels": forward["labels"]}


def init_params(rng: jax.Array, cfg: ml_collections.ConfigDict, student_dim: int) -> dict:
    """{'classifier': [student_dim, num_classes]} ~ N(0, 1/student_dim)."""
    weights = jax.random.normal(rng, (student_dim, cfg.num_classes), jnp.float32)
    return {"classifier": weights / jnp.sqrt(student_dim)}


def init_state(
    rng: jax.Array, cfg: ml_collections.ConfigDict, student_dim: int, teacher_dim: int | None = None
) -> dict:
    """No state: {} (the signature is the methods' common one)."""
    del rng, cfg, student_dim, teacher_dim
    return {}


def class_logits(z: jax.Array, classifier: jax.Array, temperature: float) -> jax.Array:
    """Cosine-classifier logits [B, C] of unit embeddings z [B, d]."""
    w = classifier / jnp.maximum(jnp.linalg.norm(classifier, axis=0, keepdims=True), 1e-12)
    return z.astype(jnp.float32) @ w / temperature


def loss_fn(
    embeddings: dict[str, jax.Array],
    state: dict,
    cfg: ml_collections.ConfigDict,
    *,
    rng: jax.Array | None = None,
    axis_name: str | None = None,
    params: dict | None = None,
):
    """Cross-entropy on embeddings {'z': [b, d], 'labels': [b]} with the method's `params`.

    Returns (loss, (metrics, state)): the mean over this device's rows; metrics (loss, top-1
    of the batch) are global-batch values.
    """
    del rng
    if params is None:
        raise ValueError("supervised.loss_fn needs params (its classifier, from init_params).")
    labels = embeddings["labels"].astype(jnp.int32)
    logits = class_logits(embeddings["z"], params["classifier"], cfg.temperature)
    loss = losses.soft_cross_entropy(logits, jax.nn.one_hot(labels, cfg.num_classes))
    accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
    metrics = {
        "loss": common.global_mean(loss, axis_name),
        "loss_ce": common.global_mean(loss, axis_name),
        "train_top1": common.global_mean(accuracy, axis_name),
    }
    return loss, (metrics, state)
