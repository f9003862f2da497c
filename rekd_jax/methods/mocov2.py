"""MoCo v2 (instance-wise contrast): the baseline, and the loss that trains an online teacher
(config.teacher.method, the default).

q = f_s(v1), k = f_s'(v2) (EMA key encoder), queue Q of past keys:
  L_inst = -log( exp(q.k/tau) / (exp(q.k/tau) + sum_{n in Q} exp(q.n/tau)) ),  tau = 0.2.
After the loss, the keys of the whole global batch are enqueued (device-major order).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from rekd_jax.methods import common, losses
from rekd_jax.methods import queue as queue_lib

NAME = "mocov2"
KEY_ENCODER = True  # the step runs the momentum (key) encoder on v2


def default_config() -> ml_collections.ConfigDict:
    """MoCo v2 defaults (ImageNet recipe; the CIFAR recipe uses queue_size 4096)."""
    return ml_collections.ConfigDict(
        {
            "temperature": 0.2,  # tau of L_inst.
            "queue_size": 65536,  # K, a multiple of the global batch.
        }
    )


def validate_config(cfg: ml_collections.ConfigDict, global_batch_size: int) -> None:
    """Raises ValueError naming the field and the fix."""
    common.check_fields(cfg, default_config(), NAME)
    common.check_positive(cfg, "temperature", NAME)
    common.check_queue_size(cfg, global_batch_size, NAME)


def teacher_mode(cfg: ml_collections.ConfigDict) -> str | None:
    """None: moCo v2 learns from no teacher."""
    del cfg
    return None


def loss_inputs(forward: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """loss_fn's embeddings from the step's forward outputs: the query (student on v1) and its
    momentum encoder's key (on v2)."""
    return {"q": forward["query"], "k": forward["key"]}


def init_state(
    rng: jax.Array, cfg: ml_collections.ConfigDict, student_dim: int, teacher_dim: int | None = None
) -> dict:
    """{'queue': {'key': [K, student_dim] random unit rows, 'ptr', 'valid'}}.

    For an online teacher trained by this loss the teacher's embedding width is student_dim.
    teacher_dim is unused (MoCo has no teacher); it is accepted for a uniform signature.
    """
    del teacher_dim
    return {
        "queue": queue_lib.init_queue(
            rng, cfg.queue_size, {"key": ((student_dim,), jnp.float32, queue_lib.UNIT)}
        )
    }


def loss_fn(
    embeddings: dict[str, jax.Array],
    state: dict,
    cfg: ml_collections.ConfigDict,
    *,
    rng: jax.Array | None = None,
    axis_name: str | None = None,
):
    """MoCo v2 loss on embeddings {'q': [b, d], 'k': [b, d]} (b = this device's batch).

    Returns (loss, (metrics, new_state)): `loss` is the mean over this device's rows (the
    caller averages gradients over devices); metrics are global-batch scalars, identical on all
    devices; new_state has the global batch's keys enqueued. Gradients flow to q only.
    """
    del rng  # MoCo v2 draws no randomness.
    q = embeddings["q"]
    k = jax.lax.stop_gradient(embeddings["k"])
    queue = state["queue"]
    loss = losses.info_nce(q, k, queue["key"], cfg.temperature)
    new_queue = queue_lib.enqueue(queue, {"key": queue_lib.global_batch(k, axis_name)})
    mean_loss = common.global_mean(loss, axis_name)
    metrics = {
        "loss": mean_loss,
        "loss_inst": mean_loss,
        **common.contrast_metrics(jax.lax.stop_gradient(q), k, queue["key"], axis_name),
    }
    return loss, (metrics, {"queue": new_queue})
