"""SEED (Fang et al., ICLR 2021, arXiv 2101.04731): response distillation from a frozen teacher.

Same view x for both networks: z_s = f_s(x), z_t = f_t(x); queue D of teacher embeddings:
  p_t = softmax([z_t.z_t, z_t.D] / tau_t),  p_s = softmax([z_s.z_t, z_s.D] / tau_s),
  L_seed = -sum_j p_t,j log p_s,j.
After the loss, the teacher embeddings of the global batch are enqueued.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from rekd_jax.methods import common, losses
from rekd_jax.methods import queue as queue_lib

NAME = "seed"
TAU_T_CODE = 1e-4  # jacobswan1/SEED tools/opts.py --distill-t (the default here).
TAU_T_PAPER = 0.01  # the SEED paper's stated teacher temperature (a documented variant).
KEY_ENCODER = False  # no momentum encoder: the frozen teacher gives the targets


def default_config() -> ml_collections.ConfigDict:
    """SEED defaults as the released code has them: tau_s 0.2, tau_t 1e-4, K 65536.

    Source: jacobswan1/SEED, tools/opts.py (`--temp` 0.2 = tau_s, `--distill-t` 1e-4 = tau_t,
    `--queue` 65536); its README commands do not change `--distill-t`. The paper's text gives
    tau_t = 0.01: that is the documented variant TAU_T_PAPER (configs: the `seed_tau_paper`
    variant, or --config.seed.tau_t=0.01).
    """
    return ml_collections.ConfigDict(
        {
            "tau_s": 0.2,  # student temperature.
            "tau_t": TAU_T_CODE,  # teacher temperature (far sharper than the student's).
            "queue_size": 65536,  # K, a multiple of the global batch.
        }
    )


def validate_config(cfg: ml_collections.ConfigDict, global_batch_size: int) -> None:
    """Raises ValueError naming the field and the fix."""
    common.check_fields(cfg, default_config(), NAME)
    common.check_positive(cfg, "tau_s", NAME)
    common.check_positive(cfg, "tau_t", NAME)
    common.check_queue_size(cfg, global_batch_size, NAME)


def teacher_mode(cfg: ml_collections.ConfigDict) -> str:
    """SEED distils a frozen (offline) teacher."""
    del cfg
    return "offline"


def teacher_view(cfg: ml_collections.ConfigDict) -> str:
    """'v1': the teacher embeds the student's own view x."""
    del cfg
    return "v1"


def loss_inputs(forward: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """loss_fn's embeddings from the step's forward outputs: student and teacher on v1."""
    return {"z_s": forward["query"], "z_t": forward["teacher"]}


def init_state(
    rng: jax.Array, cfg: ml_collections.ConfigDict, student_dim: int, teacher_dim: int
) -> dict:
    """{'queue': {'teacher': [K, teacher_dim] random unit rows, 'ptr', 'valid'}}.

    SEED compares z_s with teacher embeddings directly, so both widths must be equal.
    """
    if student_dim != teacher_dim:
        raise ValueError(
            f"seed: the student embedding width ({student_dim}) must equal the "
            f"teacher's ({teacher_dim}); set the student projector's output dim to "
            f"{teacher_dim}."
        )
    return {
        "queue": queue_lib.init_queue(
            rng, cfg.queue_size, {"teacher": ((teacher_dim,), jnp.float32, queue_lib.UNIT)}
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
    """SEED loss on embeddings {'z_s': [b, d] student on x, 'z_t': [b, d] teacher on x}.

    Returns (loss, (metrics, new_state)): `loss` is the mean over this device's rows; metrics
    are global-batch scalars; new_state has the global batch's teacher embeddings enqueued.
    Gradients flow to z_s only.
    """
    del rng  # SEED draws no randomness.
    z_s = embeddings["z_s"]
    z_t = jax.lax.stop_gradient(embeddings["z_t"])
    queue = state["queue"]
    loss = losses.seed_loss(z_s, z_t, queue["teacher"], cfg.tau_s, cfg.tau_t)
    new_queue = queue_lib.enqueue(queue, {"teacher": queue_lib.global_batch(z_t, axis_name)})
    student_logits = losses.contrast_logits(jax.lax.stop_gradient(z_s), z_t, queue["teacher"], 1.0)
    teacher_logits = losses.contrast_logits(z_t, z_t, queue["teacher"], 1.0)
    agreement = jnp.mean(
        (jnp.argmax(student_logits, 1) == jnp.argmax(teacher_logits, 1)).astype(jnp.float32)
    )
    mean_loss = common.global_mean(loss, axis_name)
    metrics = {
        "loss": mean_loss,
        "loss_seed": mean_loss,
        "top1_agreement": common.global_mean(agreement, axis_name),
        "positive_similarity": common.global_mean(jnp.mean(student_logits[:, 0]), axis_name),
    }
    return loss, (metrics, {"queue": new_queue})
