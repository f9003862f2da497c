"""ReKD (Zheng, Wang, Yuan, AAAI 2022, arXiv 2112.04174), as read by this project (docs/method.md).

q = f_s(v1) student query, k = f_s'(v2) EMA key, t = f_t(v2) teacher embedding. A FIFO queue
holds (k, t, label) of past samples; a prototype bank C in the teacher's space is the relation
miner. Each step, against the CURRENT prototypes:
  a(t) = argmax_m t.c_m  (or Sinkhorn-balanced),  P_i = {own key} U {j in queue : a(t_j) = a(t_i)}
  L_rel = -(1/B) sum_i (1/|P_i|) sum_{j in P_i} log softmax_j(q_i.[k_i, queue_k] / tau)
  L = L_rel + lambda_inst L_inst      (+ the online teacher's own MoCo v2 loss, added by training)
then the bank moves towards the teacher embeddings assigned to each prototype, and the global
batch's (k, t, label) are enqueued.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from rekd_jax.methods import common, losses, mocov2, relation
from rekd_jax.methods import queue as queue_lib

NAME = "rekd"
ASSIGNMENTS = ("argmax", "sinkhorn")
TEACHERS = ("online", "offline", "none")
KEY_ENCODER = True  # the step runs the momentum (key) encoder on v2
TEACHER_VIEW = "v2"  # an offline teacher embeds the key's view (an online one always does)


def default_config() -> ml_collections.ConfigDict:
    """ReKD defaults: every choice of our reading is a field (docs/method.md explains each)."""
    return ml_collections.ConfigDict(
        {
            "temperature": 0.2,  # tau of L_rel (and of L_inst).
            "queue_size": 65536,  # K, a multiple of the global batch.
            # M: about the number of ImageNet classes, so with K = 65536 an anchor has on the order
            # of K/M ~ 65 related queue entries; smaller datasets over-cluster (CIFAR-10: 100).
            "num_prototypes": 1000,
            "assignment": "argmax",  # 'argmax' | 'sinkhorn' (balanced over queue U batch).
            "sinkhorn_epsilon": 0.05,
            "sinkhorn_iterations": 3,
            "prototype_momentum": 0.99,  # mu of c_m <- normalize(mu c_m + (1 - mu) mean).
            # Steps unused before a prototype is re-seeded (0 = never). With balanced use a given
            # prototype is idle ~100 steps in a row with negligible probability, so only dead ones
            # go.
            "reseed_after": 100,
            # 'prototype' | 'threshold' | 'topk' | 'oracle' (true labels: the SupCon upper bound,
            # an ablation; with teacher 'none' it is a supervised contrastive teacher). 'topk'
            # won the CIFAR-10 study's validation search (docs/method.md).
            "relation": "topk",
            "relation_threshold": 0.7,  # teacher cosine similarity, for relation='threshold'.
            "relation_topk": 10,  # nearest valid queue entries, for relation='topk'.
            "lambda_inst": 0.0,  # weight of the extra MoCo instance loss L_inst.
            # Whether the own key stays in the target P_i beside the mined positives (False: only
            # anchors without a mined positive keep it).
            "instance_positive": True,
            # 'online' (trained alongside) | 'offline' (frozen) | 'none' (relation 'oracle' only).
            "teacher": "online",
        }
    )


def validate_config(cfg: ml_collections.ConfigDict, global_batch_size: int) -> None:
    """Raises ValueError naming the field and the fix."""
    common.check_fields(cfg, default_config(), NAME)
    common.check_positive(cfg, "temperature", NAME)
    common.check_queue_size(cfg, global_batch_size, NAME)
    common.check_int_range(cfg, "num_prototypes", 1, NAME)
    common.check_choice(cfg, "assignment", ASSIGNMENTS, NAME)
    common.check_positive(cfg, "sinkhorn_epsilon", NAME)
    common.check_int_range(cfg, "sinkhorn_iterations", 1, NAME)
    if not 0.0 <= cfg.prototype_momentum < 1.0:
        raise ValueError(
            f"{NAME} config: prototype_momentum must be in [0, 1); got {cfg.prototype_momentum}."
        )
    common.check_int_range(cfg, "reseed_after", 0, NAME)
    common.check_choice(cfg, "relation", relation.RELATION_VARIANTS, NAME)
    if not -1.0 <= cfg.relation_threshold <= 1.0:
        raise ValueError(
            f"{NAME} config: relation_threshold is a cosine similarity and must be "
            f"in [-1, 1]; got {cfg.relation_threshold}."
        )
    common.check_int_range(cfg, "relation_topk", 1, NAME, high=cfg.queue_size)
    if not cfg.lambda_inst >= 0.0:
        raise ValueError(f"{NAME} config: lambda_inst must be >= 0; got {cfg.lambda_inst}.")
    if not isinstance(cfg.instance_positive, bool):
        raise ValueError(
            f"{NAME} config: instance_positive must be True or False; got "
            f"{cfg.instance_positive!r}."
        )
    common.check_choice(cfg, "teacher", TEACHERS, NAME)
    if cfg.teacher == "none" and cfg.relation != "oracle":
        raise ValueError(
            f"{NAME} config: teacher='none' mines no relations; use it only with "
            f"relation='oracle' (true labels), or set teacher to 'online'/'offline'."
        )


def teacher_mode(cfg: ml_collections.ConfigDict) -> str | None:
    """'online' (trained alongside with its own MoCo v2 loss), 'offline' (frozen), or None
    (teacher 'none': true-label relations only)."""
    return None if cfg.teacher == "none" else cfg.teacher


def loss_inputs(forward: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """loss_fn's embeddings from the step's forward outputs: query, key, labels, and the
    teacher's embedding of v2 when there is a teacher."""
    embeddings = {"q": forward["query"], "k": forward["key"], "labels": forward["labels"]}
    if "teacher" in forward:
        embeddings["t"] = forward["teacher"]
    return embeddings


def init_state(
    rng: jax.Array, cfg: ml_collections.ConfigDict, student_dim: int, teacher_dim: int | None
) -> dict:
    """{'queue': {'key': [K, student_dim], 'teacher': [K, teacher_dim], 'label': [K] (-1),
    'ptr', 'valid'}, 'prototypes': uninitialised bank [num_prototypes, teacher_dim]}.

    Without a teacher (teacher_dim None: teacher 'none', relation 'oracle') the queue holds no
    teacher embeddings and there is no prototype bank ({})."""
    queue_key, bank_key = jax.random.split(rng)
    fields = {"key": ((student_dim,), jnp.float32, queue_lib.UNIT), "label": ((), jnp.int32, -1)}
    if teacher_dim is not None:
        fields["teacher"] = ((teacher_dim,), jnp.float32, queue_lib.UNIT)
    queue = queue_lib.init_queue(queue_key, cfg.queue_size, fields)
    bank = (
        {}
        if teacher_dim is None
        else relation.init_prototypes(bank_key, cfg.num_prototypes, teacher_dim)
    )
    return {"queue": queue, "prototypes": bank}


def _assignments(cfg, t_global, queue, centers):
    """Prototype of each global-batch row and of each queue row, against the current centres.

    Sinkhorn balances over the valid queue rows together with the global batch (replicated on
    every device, so no cross-device sum is needed): a batch alone is usually smaller than M
    and would be forced onto near-distinct prototypes.
    """
    if cfg.assignment == "argmax":
        return relation.assign(t_global, centers), relation.assign(queue["teacher"], centers)
    size = queue["teacher"].shape[0]
    pooled = jnp.concatenate([queue["teacher"], t_global.astype(queue["teacher"].dtype)])
    row_mask = jnp.concatenate([queue["valid"], jnp.ones(t_global.shape[0], bool)])
    pooled_assign = relation.assign_balanced(
        pooled, centers, cfg.sinkhorn_epsilon, cfg.sinkhorn_iterations, row_mask=row_mask
    )
    return pooled_assign[size:], pooled_assign[:size]


def loss_fn(
    embeddings: dict[str, jax.Array],
    state: dict,
    cfg: ml_collections.ConfigDict,
    *,
    rng: jax.Array,
    axis_name: str | None = None,
):
    """ReKD loss on embeddings {'q': [b, ds], 'k': [b, ds], 't': [b, dt], 'labels': [b]}.

    'labels' (true labels, -1 when unknown; optional) only feed diagnostics, except for the
    'oracle' relation, whose positives they are ('t' may then be absent: no teacher). `rng` drives
    prototype initialisation / re-seeding; the first device's key is used on all devices so the
    bank stays replicated. Returns (loss, (metrics, new_state)): `loss` = L_rel + lambda_inst
    L_inst, the mean over this device's rows (the caller averages gradients over devices);
    metrics are global-batch scalars; new_state has the updated bank and the global batch
    enqueued. Gradients flow to q only.
    """
    if rng is None:
        raise ValueError("rekd.loss_fn needs rng (prototype initialisation and re-seeding).")
    if "t" not in embeddings:
        return _oracle_without_teacher(embeddings, state, cfg, axis_name)
    q = embeddings["q"]
    k = jax.lax.stop_gradient(embeddings["k"])
    t = jax.lax.stop_gradient(embeddings["t"]).astype(jnp.float32)
    labels = embeddings.get("labels")
    if labels is None:
        labels = jnp.full((q.shape[0],), -1, jnp.int32)
    labels = labels.astype(jnp.int32)
    queue, bank = state["queue"], state["prototypes"]

    k_global = queue_lib.global_batch(k, axis_name)
    t_global = queue_lib.global_batch(t, axis_name)
    labels_global = queue_lib.global_batch(labels, axis_name)

    assign_global, assign_queue = _assignments(cfg, t_global, queue, bank["centers"])
    assign_local = common.local_rows(assign_global, q.shape[0], axis_name)
    positive_mask = relation.relation_positives(
        t,
        queue["teacher"],
        assign_local,
        assign_queue,
        queue["valid"],
        cfg.relation,
        cfg.relation_threshold,
        cfg.relation_topk,
        anchor_labels=labels,
        cand_labels=queue["label"],
    )

    loss_rel = losses.relation_contrast(
        q, k, queue["key"], positive_mask, cfg.temperature, cfg.instance_positive
    )
    loss_inst = losses.info_nce(q, k, queue["key"], cfg.temperature)
    loss = loss_rel + cfg.lambda_inst * loss_inst

    new_bank = relation.update_prototypes(
        bank,
        t_global,
        assign_global,
        cfg.prototype_momentum,
        cfg.reseed_after,
        common.replicated_rng(rng, axis_name),
    )
    new_queue = queue_lib.enqueue(
        queue, {"key": k_global, "teacher": t_global, "label": labels_global}
    )

    metrics = {
        "loss": common.global_mean(loss, axis_name),
        "loss_rel": common.global_mean(loss_rel, axis_name),
        "loss_inst": common.global_mean(loss_inst, axis_name),
        **mocov2.contrast_metrics(jax.lax.stop_gradient(q), k, queue["key"], axis_name),
        **relation.relation_diagnostics(
            positive_mask,
            labels,
            queue["label"],
            assign_global,
            cfg.num_prototypes,
            axis_name=axis_name,
        ),
        "prototype_mean_age": jnp.mean(new_bank["age"].astype(jnp.float32)),
    }
    return loss, (metrics, {"queue": new_queue, "prototypes": new_bank})


def _oracle_without_teacher(embeddings, state, cfg, axis_name):
    """The relation-wise loss with true-label relations and no teacher (teacher 'none'):
    supervised contrast over {own key} U queue, i.e. SupCon with a MoCo queue. Used to train
    the supervised (oracle) teacher of the mechanism study; never a self-supervised result."""
    if cfg.relation != "oracle":
        raise ValueError("rekd.loss_fn without teacher embeddings 't' needs relation='oracle'.")
    if embeddings.get("labels") is None:
        raise ValueError("rekd relation 'oracle' needs embeddings['labels'] (the true labels).")
    q = embeddings["q"]
    k = jax.lax.stop_gradient(embeddings["k"])
    labels = embeddings["labels"].astype(jnp.int32)
    queue = state["queue"]
    positive_mask = relation.relation_positives(
        None,
        None,
        None,
        None,
        queue["valid"],
        "oracle",
        0.0,
        1,
        anchor_labels=labels,
        cand_labels=queue["label"],
    )
    loss_rel = losses.relation_contrast(
        q, k, queue["key"], positive_mask, cfg.temperature, cfg.instance_positive
    )
    loss_inst = losses.info_nce(q, k, queue["key"], cfg.temperature)
    loss = loss_rel + cfg.lambda_inst * loss_inst
    new_queue = queue_lib.enqueue(
        queue,
        {
            "key": queue_lib.global_batch(k, axis_name),
            "label": queue_lib.global_batch(labels, axis_name),
        },
    )
    labels_global = queue_lib.global_batch(labels, axis_name)
    metrics = {
        "loss": common.global_mean(loss, axis_name),
        "loss_rel": common.global_mean(loss_rel, axis_name),
        "loss_inst": common.global_mean(loss_inst, axis_name),
        **mocov2.contrast_metrics(jax.lax.stop_gradient(q), k, queue["key"], axis_name),
        **relation.relation_diagnostics(
            positive_mask,
            labels,
            queue["label"],
            jnp.zeros_like(labels_global),
            1,
            axis_name=axis_name,
        ),
    }
    return loss, (metrics, {"queue": new_queue, "prototypes": state["prototypes"]})
