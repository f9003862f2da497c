"""ReKD (Zheng, Wang, Yuan, AAAI 2022, arXiv 2112.04174), as read by this project (docs/method.md).

q = f_s(v1) student query, k = f_s'(v2) EMA key, t = f_t(v2) teacher embedding. A FIFO queue
holds (k, t, label) of past samples. Each step the relation miner relates every anchor to queue
entries in the teacher's space; by default (relation 'topk') P_i = {own key} U {the k valid
queue entries nearest to t_i}; 'prototype' relates the entries that share t_i's prototype in a
dynamic bank C (a(t) = argmax_m t.c_m, or Sinkhorn-balanced), 'threshold' those with
t_i.t_j >= a threshold, and 'oracle' / 'oracle_topk' use the true labels (ablations). Then
  L_rel = -(1/B) sum_i (1/|P_i|) sum_{j in P_i} log softmax_j(q_i.[k_i, queue_k] / tau)
  L = L_rel + lambda_inst L_inst      (+ an online teacher's own loss, added by training)
the bank moves towards the teacher embeddings assigned to each prototype, and the global batch's
(k, t, label) are enqueued.

This project's extensions beyond the paper (fields of the block, docs/method.md): the
candidates may be the teacher's own embedding and queue, scored as SEED scores them, with the
relation target mixed with SEED's (`candidates`, `beta`, `target_tau_t`); the miner may read the
teacher's pooled backbone features (`miner_input`) of a weakly augmented third view
(`miner_view`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from rekd_jax.methods import common, losses, relation
from rekd_jax.methods import queue as queue_lib

NAME = "rekd"
ASSIGNMENTS = ("argmax", "sinkhorn")
TEACHERS = ("online", "offline", "none")
CANDIDATES = ("student", "teacher")
MINER_INPUTS = ("embedding", "backbone")
MINER_VIEWS = ("key", "weak")
KEY_ENCODER = True  # the step runs the momentum (key) encoder on v2


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
            # an ablation; with teacher 'none' it is a supervised contrastive teacher) |
            # 'oracle_topk' (exactly relation_topk true-label positives per anchor, the newest in
            # the queue: precision 1 at topk's count, an ablation). 'topk' won the CIFAR-10
            # study's validation search (docs/method.md).
            "relation": "topk",
            "relation_threshold": 0.7,  # teacher cosine similarity, for relation='threshold'.
            # Positives per anchor from the queue, for relation='topk' (nearest valid entries) and
            # 'oracle_topk' (newest valid entries with the anchor's label).
            "relation_topk": 10,
            "lambda_inst": 0.0,  # weight of the extra MoCo instance loss L_inst.
            # Whether the own key stays in the target P_i beside the mined positives (False: only
            # anchors without a mined positive keep it).
            "instance_positive": True,
            # 'online' (trained alongside) | 'offline' (frozen) | 'none' (relations 'oracle' /
            # 'oracle_topk' only).
            "teacher": "online",
            # The fields below are this project's extensions beyond the paper; their defaults
            # are the reading above.
            # Candidates scored against q: 'student' (the own key k and the queue of student
            # keys) | 'teacher' (the teacher's embedding t of the same image and the teacher
            # queue, SEED's candidates: logits q.[t_i, queue_t] / temperature; needs the
            # student's embedding width equal to the teacher's).
            "candidates": "student",
            # Weight of the relation target over the teacher's candidates; 1 - beta goes to
            # SEED's soft target softmax([t_i.t_i, t_i.queue_t] / target_tau_t). beta < 1 only
            # with candidates='teacher'; beta 0 is SEED's loss (tau_s = temperature).
            "beta": 1.0,
            "target_tau_t": 1e-4,  # SEED's teacher temperature (the released code's value).
            # What the miner relates: 'embedding' (the teacher's projection-head embedding) |
            # 'backbone' (its pooled backbone features, L2-normalised, as its kNN score reads
            # them; offline teacher only). The prototype bank takes the miner's width.
            "miner_input": "embedding",
            # Which view the teacher embeds for mining (and, with candidates='teacher', as the
            # own image's candidate): 'key' (v2) | 'weak' (a third view: random resized crop and
            # flip only, no colour jitter, greyscale or blur; offline teacher only).
            "miner_view": "key",
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
    if cfg.teacher == "none" and cfg.relation not in relation.LABEL_VARIANTS:
        raise ValueError(
            f"{NAME} config: teacher='none' mines no relations; use it only with "
            f"relation='oracle' or 'oracle_topk' (true labels), or set teacher to "
            f"'online'/'offline'."
        )
    common.check_choice(cfg, "candidates", CANDIDATES, NAME)
    if cfg.teacher == "none" and cfg.candidates == "teacher":
        raise ValueError(
            f"{NAME} config: candidates='teacher' scores the teacher's embeddings but "
            f"teacher='none'; set teacher to 'online'/'offline', or candidates='student'."
        )
    if isinstance(cfg.beta, bool) or not 0.0 <= cfg.beta <= 1.0:
        raise ValueError(f"{NAME} config: beta must be in [0, 1]; got {cfg.beta!r}.")
    if cfg.beta < 1.0 and cfg.candidates != "teacher":
        raise ValueError(
            f"{NAME} config: beta={cfg.beta} mixes SEED's target over the teacher's "
            f"candidates; set candidates='teacher', or beta=1.0."
        )
    common.check_positive(cfg, "target_tau_t", NAME)
    common.check_choice(cfg, "miner_input", MINER_INPUTS, NAME)
    common.check_choice(cfg, "miner_view", MINER_VIEWS, NAME)
    for field, default in (("miner_input", "embedding"), ("miner_view", "key")):
        if cfg[field] != default and cfg.teacher != "offline":
            raise ValueError(
                f"{NAME} config: {field}={cfg[field]!r} needs an offline teacher but "
                f"teacher={cfg.teacher!r}; set teacher='offline', or {field}={default!r}."
            )


def teacher_mode(cfg: ml_collections.ConfigDict) -> str | None:
    """'online' (trained alongside by its own loss, config.teacher.method), 'offline' (frozen),
    or None (teacher 'none': true-label relations only)."""
    return None if cfg.teacher == "none" else cfg.teacher


def teacher_view(cfg: ml_collections.ConfigDict) -> str:
    """The view an offline teacher embeds: 'v2' (the key's view; an online teacher always does)
    or 'weak' (miner_view='weak': a third, weakly augmented view)."""
    return "weak" if cfg.miner_view == "weak" else "v2"


def reads_teacher_features(cfg: ml_collections.ConfigDict) -> bool:
    """Whether the loss reads the teacher's pooled backbone features (miner_input='backbone')."""
    return cfg.miner_input == "backbone"


def loss_inputs(forward: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """loss_fn's embeddings from the step's forward outputs: query, key, labels, and, when there
    is a teacher, its embedding 't' (and an offline teacher's pooled features 't_features') of
    the view `teacher_view` names."""
    embeddings = {"q": forward["query"], "k": forward["key"], "labels": forward["labels"]}
    if "teacher" in forward:
        embeddings["t"] = forward["teacher"]
    if "teacher_features" in forward:
        embeddings["t_features"] = forward["teacher_features"]
    return embeddings


def init_state(
    rng: jax.Array,
    cfg: ml_collections.ConfigDict,
    student_dim: int,
    teacher_dim: int | None,
    teacher_feature_dim: int | None = None,
) -> dict:
    """{'queue': {'key': [K, student_dim], 'teacher': [K, teacher_dim], 'label': [K] (-1),
    'ptr', 'valid'}, 'prototypes': uninitialised bank [num_prototypes, teacher_dim]}.

    miner_input='backbone' adds 'miner': [K, teacher_feature_dim] (the teacher's pooled
    features) and the bank takes that width. Without a teacher (teacher_dim None: teacher
    'none', a label relation) the queue holds no teacher embeddings and there is no prototype
    bank ({}). candidates='teacher' needs student_dim == teacher_dim.
    """
    if cfg.candidates == "teacher" and student_dim != teacher_dim:
        raise ValueError(
            f"rekd candidates='teacher': the student embedding width ({student_dim}) must "
            f"equal the teacher's ({teacher_dim}); set the student projector's output dim to "
            f"{teacher_dim}."
        )
    queue_key, bank_key = jax.random.split(rng)
    fields = {"key": ((student_dim,), jnp.float32, queue_lib.UNIT), "label": ((), jnp.int32, -1)}
    miner_dim = teacher_dim
    if teacher_dim is not None:
        fields["teacher"] = ((teacher_dim,), jnp.float32, queue_lib.UNIT)
        if cfg.miner_input == "backbone":
            if teacher_feature_dim is None:
                raise ValueError(
                    "rekd miner_input='backbone' needs teacher_feature_dim, the width of the "
                    "teacher's pooled backbone features."
                )
            fields["miner"] = ((teacher_feature_dim,), jnp.float32, queue_lib.UNIT)
            miner_dim = teacher_feature_dim
    queue = queue_lib.init_queue(queue_key, cfg.queue_size, fields)
    bank = (
        {}
        if teacher_dim is None
        else relation.init_prototypes(bank_key, cfg.num_prototypes, miner_dim)
    )
    return {"queue": queue, "prototypes": bank}


def _assignments(cfg, m_global, queue_m, queue_valid, centers):
    """Prototype of each global-batch row and of each queue row, against the current centres.

    Sinkhorn balances over the valid queue rows together with the global batch (replicated on
    every device, so no cross-device sum is needed): a batch alone is usually smaller than M
    and would be forced onto near-distinct prototypes.
    """
    if cfg.assignment == "argmax":
        return relation.assign(m_global, centers), relation.assign(queue_m, centers)
    size = queue_m.shape[0]
    pooled = jnp.concatenate([queue_m, m_global.astype(queue_m.dtype)])
    row_mask = jnp.concatenate([queue_valid, jnp.ones(m_global.shape[0], bool)])
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
    """ReKD loss on embeddings {'q': [b, ds], 'k': [b, ds], 't': [b, dt], 'labels': [b]}
    (+ 't_features': [b, df], the teacher's pooled features, for miner_input='backbone').

    'labels' (true labels, -1 when unknown; optional) only feed diagnostics, except for the
    label relations 'oracle' / 'oracle_topk', whose positives they are ('t' may then be absent:
    no teacher, a SupCon teacher with a MoCo queue, never a self-supervised result). `rng` drives
    prototype initialisation / re-seeding; the first device's key is used on all devices so the
    bank stays replicated. Returns (loss, (metrics, new_state)): `loss` = L_rel + lambda_inst
    L_inst, the mean over this device's rows (the caller averages gradients over devices);
    metrics are global-batch scalars; new_state has the updated bank and the global batch
    enqueued. Gradients flow to q only.
    """
    _check_loss_inputs(embeddings, cfg, rng)
    q = embeddings["q"]
    k = jax.lax.stop_gradient(embeddings["k"])
    labels = embeddings.get("labels")
    if labels is None:
        labels = jnp.full((q.shape[0],), -1, jnp.int32)
    labels = labels.astype(jnp.int32)
    queue, bank = state["queue"], state["prototypes"]
    cand_age = queue_lib.row_age(queue) if cfg.relation == "oracle_topk" else None
    batch = _global_items(embeddings, cfg, k, labels, axis_name)
    positive_mask, assign_global, num_prototypes = _mine_positives(
        cfg, batch, queue, bank, labels, cand_age, q.shape[0], axis_name
    )
    loss_rel = _relation_loss(cfg, q, k, batch.teacher, queue, positive_mask)
    loss_inst = losses.info_nce(q, k, queue["key"], cfg.temperature)
    loss = loss_rel + cfg.lambda_inst * loss_inst

    if batch.teacher is not None:
        bank = relation.update_prototypes(
            bank,
            batch.items[batch.miner_field],
            assign_global,
            cfg.prototype_momentum,
            cfg.reseed_after,
            common.replicated_rng(rng, axis_name),
        )
    new_queue = queue_lib.enqueue(queue, batch.items)
    metrics = {
        "loss": common.global_mean(loss, axis_name),
        "loss_rel": common.global_mean(loss_rel, axis_name),
        "loss_inst": common.global_mean(loss_inst, axis_name),
        **common.contrast_metrics(jax.lax.stop_gradient(q), k, queue["key"], axis_name),
        **relation.relation_diagnostics(
            positive_mask,
            labels,
            queue["label"],
            assign_global,
            num_prototypes,
            axis_name=axis_name,
        ),
    }
    if batch.teacher is not None:
        metrics["prototype_mean_age"] = jnp.mean(bank["age"].astype(jnp.float32))
    return loss, (metrics, {"queue": new_queue, "prototypes": bank})


def _relation_loss(cfg, q, k, teacher, queue, positive_mask) -> jax.Array:
    """L_rel over the candidates cfg.candidates names: the student's key and queue, or the
    teacher's embedding and queue (mixed with SEED's target by beta)."""
    if cfg.candidates == "teacher":
        return losses.relation_response(
            q,
            teacher,
            queue["teacher"],
            positive_mask,
            cfg.temperature,
            cfg.beta,
            cfg.target_tau_t,
            cfg.instance_positive,
        )
    return losses.relation_contrast(
        q, k, queue["key"], positive_mask, cfg.temperature, cfg.instance_positive
    )


def _check_loss_inputs(embeddings: dict, cfg: ml_collections.ConfigDict, rng) -> None:
    """What loss_fn needs besides q and k: rng always, 't' or true labels by the relation."""
    if rng is None:
        raise ValueError("rekd.loss_fn needs rng (prototype initialisation and re-seeding).")
    if "t" not in embeddings and cfg.relation not in relation.LABEL_VARIANTS:
        raise ValueError(
            "rekd.loss_fn without teacher embeddings 't' needs relation 'oracle' or 'oracle_topk'."
        )
    if embeddings.get("labels") is None and cfg.relation in relation.LABEL_VARIANTS:
        raise ValueError(
            f"rekd relation {cfg.relation!r} needs embeddings['labels'] (the true labels)."
        )


class _GlobalBatch(NamedTuple):
    """This step's rows, as loss_fn reads and enqueues them.

    items        queue field -> the global batch's rows (what enqueue appends)
    teacher      this device's teacher embeddings t (float32), None without a teacher
    miner        this device's rows the miner relates (t, or the normalised backbone features)
    miner_field  the queue field holding the miner's rows ('teacher' or 'miner')
    """

    items: dict
    teacher: jax.Array | None
    miner: jax.Array | None
    miner_field: str | None


def _global_items(embeddings, cfg, k, labels, axis_name) -> _GlobalBatch:
    """The global batch's key, teacher, miner and label rows (device-major)."""
    items = {"key": queue_lib.global_batch(k, axis_name)}
    teacher = miner = miner_field = None
    if "t" in embeddings:
        teacher = jax.lax.stop_gradient(embeddings["t"]).astype(jnp.float32)
        items["teacher"] = queue_lib.global_batch(teacher, axis_name)
        miner, miner_field = teacher, "teacher"
        if cfg.miner_input == "backbone":
            miner, miner_field = _miner_features(embeddings), "miner"
            items["miner"] = queue_lib.global_batch(miner, axis_name)
    items["label"] = queue_lib.global_batch(labels, axis_name)
    return _GlobalBatch(items, teacher, miner, miner_field)


def _mine_positives(cfg, batch: _GlobalBatch, queue, bank, labels, cand_age, num_local, axis_name):
    """(positive_mask [b, K] over the queue, prototype of each global-batch row, the number of
    prototypes): relations mined in the teacher's space, or from the true labels without one."""
    if batch.teacher is None:
        positive_mask = relation.relation_positives(
            None,
            None,
            None,
            None,
            queue["valid"],
            cfg.relation,
            0.0,
            cfg.relation_topk,
            anchor_labels=labels,
            cand_labels=queue["label"],
            cand_age=cand_age,
        )
        return positive_mask, jnp.zeros_like(batch.items["label"]), 1
    field = batch.miner_field
    assign_global, assign_queue = _assignments(
        cfg, batch.items[field], queue[field], queue["valid"], bank["centers"]
    )
    assign_local = common.local_rows(assign_global, num_local, axis_name)
    positive_mask = relation.relation_positives(
        batch.miner,
        queue[field],
        assign_local,
        assign_queue,
        queue["valid"],
        cfg.relation,
        cfg.relation_threshold,
        cfg.relation_topk,
        anchor_labels=labels,
        cand_labels=queue["label"],
        cand_age=cand_age,
    )
    return positive_mask, assign_global, cfg.num_prototypes


def _miner_features(embeddings: dict[str, jax.Array]) -> jax.Array:
    """The teacher's pooled backbone features, L2-normalised (miner_input='backbone')."""
    if "t_features" not in embeddings:
        raise ValueError(
            "rekd miner_input='backbone' needs embeddings['t_features'] (the offline teacher's "
            "pooled backbone features)."
        )
    x = jax.lax.stop_gradient(embeddings["t_features"]).astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
