"""Pure contrastive and distillation losses on unit-norm embeddings.

Every loss here is one soft cross-entropy between a target distribution over candidates and the
student's softmax over the same candidates; the methods differ only in the candidates' logits
and in the target:

  info_nce           target = one-hot on the own key                  (MoCo v2, instance-wise)
  relation_contrast  target = relation row R_i / |P_i|                 (ReKD, relation-wise)
  seed_loss          target = softmax(teacher similarities / tau_t)   (SEED, response-wise)
  relation_response  target = beta R_i / |P_i| + (1 - beta) SEED's    (ReKD over the teacher's
                     candidates: this project's extension, docs/method.md)

Conventions: embeddings are rows ([B, d]); a queue is [K, d]; losses are means over the rows of
the batch given (the caller averages across devices). Keys, queues and teacher embeddings are
targets: they pass through `jax.lax.stop_gradient`, so gradients reach only the student query
(`q` / `z_s`). Logits are computed in float32 whatever the input dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean over the batch of the cross-entropy between target rows and softmax(logits).

    L = -(1/B) sum_i sum_j targets_ij * log softmax(logits_i)_j,  each targets_i summing to 1.
    Targets are treated as constants (stop_gradient).
    """
    if logits.shape != targets.shape:
        raise ValueError(
            f"soft_cross_entropy: logits {logits.shape} and targets {targets.shape} must have the "
            "same shape [B, C]."
        )
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    targets = jax.lax.stop_gradient(targets.astype(jnp.float32))
    return -jnp.mean(jnp.sum(targets * log_probs, axis=-1))


def contrast_logits(q: jax.Array, k: jax.Array, queue: jax.Array, temperature: float) -> jax.Array:
    """Logits [B, 1+K] of each query against its own key (column 0) and the queue.

    logits_i = [q_i.k_i, q_i.n_1, ..., q_i.n_K] / temperature; k and queue are stop-gradient.
    """
    _check_rows("q", q, "k", k)
    if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(
            f"queue must be [K, {q.shape[1]}] to match q {q.shape}; got {queue.shape}."
        )
    q = q.astype(jnp.float32)
    k = jax.lax.stop_gradient(k.astype(jnp.float32))
    queue = jax.lax.stop_gradient(queue.astype(jnp.float32))
    positive = jnp.sum(q * k, axis=-1, keepdims=True)
    negatives = q @ queue.T
    return jnp.concatenate([positive, negatives], axis=1) / temperature


def info_nce(q: jax.Array, k: jax.Array, queue: jax.Array, temperature: float) -> jax.Array:
    """MoCo's InfoNCE loss, mean over the batch.

    L_inst = -(1/B) sum_i log( exp(q_i.k_i/tau) / (exp(q_i.k_i/tau) + sum_n exp(q_i.n/tau)) ),
    n over the queue rows. Gradients flow to q only.
    """
    logits = contrast_logits(q, k, queue, temperature)
    targets = jax.nn.one_hot(jnp.zeros(q.shape[0], jnp.int32), logits.shape[1])
    return soft_cross_entropy(logits, targets)


def relation_contrast(
    q: jax.Array,
    k: jax.Array,
    queue_k: jax.Array,
    positive_mask: jax.Array,
    temperature: float,
    keep_own_key: bool = True,
) -> jax.Array:
    """ReKD's relation-wise contrastive loss L_rel (SupCon-style averaging over positives).

    L_rel = -(1/B) sum_i (1/|P_i|) sum_{j in P_i} log( exp(q_i.k_j/tau) / sum_a exp(q_i.k_a/tau) ),
    a over {k_i} U queue_k, P_i = {j : positive_mask_ij}. Column 0 of `positive_mask` [B, 1+K] is
    the own key and is always counted as positive (so |P_i| >= 1); with only column 0 positive
    this is exactly `info_nce`. Equals the soft cross-entropy whose target row is R_i / |P_i|.
    `keep_own_key=False` leaves the own key out of P_i whenever the anchor has another
    positive (it stays a candidate; an anchor without mined positives keeps it as its target).
    """
    logits = contrast_logits(q, k, queue_k, temperature)
    return soft_cross_entropy(logits, relation_targets(positive_mask, logits.shape, keep_own_key))


def relation_targets(
    positive_mask: jax.Array, shape: tuple[int, ...], keep_own_key: bool = True
) -> jax.Array:
    """Target rows R_i / |P_i| [B, 1+K] of a relation mask (column 0 = the own candidate, always
    positive; with keep_own_key=False only for anchors without another positive)."""
    if positive_mask.shape != tuple(shape):
        raise ValueError(
            f"positive_mask must be [B, 1+K] = {tuple(shape)} (column 0 = own key); got "
            f"{positive_mask.shape}."
        )
    mask = jnp.asarray(positive_mask, bool)
    own = jnp.ones(mask.shape[0], bool) if keep_own_key else ~jnp.any(mask[:, 1:], axis=1)
    mask = mask.at[:, 0].set(own).astype(jnp.float32)
    return mask / jnp.sum(mask, axis=1, keepdims=True)


def seed_loss(
    z_s: jax.Array, z_t: jax.Array, queue_t: jax.Array, tau_s: float, tau_t: float
) -> jax.Array:
    """SEED's response distillation loss (arXiv 2101.04731), mean over the batch.

    p_t = softmax([z_t.z_t, z_t.D] / tau_t),  p_s = softmax([z_s.z_t, z_s.D] / tau_s),
    L_seed = -(1/B) sum_i sum_j p_t,ij log p_s,ij, D = queue_t of teacher embeddings.
    Teacher embeddings and the queue are constants; gradients flow to z_s only.
    """
    _check_rows("z_s", z_s, "z_t", z_t)
    z_t = jax.lax.stop_gradient(z_t)
    teacher_logits = contrast_logits(z_t, z_t, queue_t, tau_t)
    student_logits = contrast_logits(z_s, z_t, queue_t, tau_s)
    return soft_cross_entropy(student_logits, jax.nn.softmax(teacher_logits, axis=-1))


def relation_response(
    q: jax.Array,
    t: jax.Array,
    queue_t: jax.Array,
    positive_mask: jax.Array,
    temperature: float,
    beta: float,
    tau_t: float,
    keep_own_key: bool = True,
) -> jax.Array:
    """Relation knowledge over the teacher's candidates, mixed with SEED's response target.

    Candidates are the teacher's embedding of the anchor's own image t_i (column 0) and the
    teacher queue D; the student scores them as SEED's student does, s_i = q_i.[t_i, D] / tau:
      y_i = beta R_i / |P_i| + (1 - beta) softmax([t_i.t_i, t_i.D] / tau_t),
      L = -(1/B) sum_i sum_j y_ij log softmax(s_i)_j.
    beta = 1 is `relation_contrast` with (t, D) in place of (k, queue_k); beta = 0 is
    `seed_loss(q, t, D, tau, tau_t)`. `positive_mask` [B, 1+K] and keep_own_key as in
    relation_contrast. Targets are constants; gradients flow to q only.
    """
    _check_rows("q", q, "t", t)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"relation_response: beta must be in [0, 1]; got {beta}.")
    t = jax.lax.stop_gradient(t)
    logits = contrast_logits(q, t, queue_t, temperature)
    relation = relation_targets(positive_mask, logits.shape, keep_own_key)
    response = jax.nn.softmax(contrast_logits(t, t, queue_t, tau_t), axis=-1)
    return soft_cross_entropy(logits, beta * relation + (1.0 - beta) * response)


def _check_rows(name_a: str, a: jax.Array, name_b: str, b: jax.Array) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"{name_a} {a.shape} and {name_b} {b.shape} must both be [B, d] with the same shape."
        )
