"""ReKD's relation miner: a dynamic prototype bank in the teacher's embedding space.

The teacher's embeddings are assigned to prototypes (plain argmax, or balanced with
Sinkhorn-Knopp); two samples are related when they share a prototype (or, as variants, when their
teacher embeddings are similar enough / among the k nearest, or, as label ablations, when their
true labels agree). The relation mask is the target of `losses.relation_contrast`. Everything
here is a target: inputs pass through stop_gradient.

Prototype bank state (a pytree, identical on every device):
  {'centers': [M, d] unit rows, 'age': int32 [M] steps since last used,
   'initialized': bool scalar (False until the first update fills the bank from the batch)}.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

RELATION_VARIANTS = ("prototype", "threshold", "topk", "oracle", "oracle_topk")
LABEL_VARIANTS = ("oracle", "oracle_topk")  # relations from the true labels (need no teacher)
# Scale of the seeded noise added to teacher embeddings copied into the bank, so that two
# prototypes seeded from the same embedding still differ (and split its neighbourhood).
SEED_PERTURBATION = 1e-3


def _normalize(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def init_prototypes(rng: jax.Array, num: int, dim: int) -> dict[str, jax.Array]:
    """An uninitialised bank of `num` random unit prototypes of width `dim`.

    The random centres only serve until the first `update_prototypes`, which replaces them by
    teacher embeddings of the batch.
    """
    if num < 1 or dim < 1:
        raise ValueError(f"init_prototypes needs num >= 1 and dim >= 1; got num={num}, dim={dim}.")
    centers = _normalize(jax.random.normal(rng, (num, dim), jnp.float32))
    return {
        "centers": centers,
        "age": jnp.zeros((num,), jnp.int32),
        "initialized": jnp.zeros((), bool),
    }


def assign(t: jax.Array, centers: jax.Array) -> jax.Array:
    """Prototype index of each row of t: a(t) = argmax_m t.c_m, int32 [N]."""
    scores = jax.lax.stop_gradient(t.astype(jnp.float32)) @ centers.astype(jnp.float32).T
    return jnp.argmax(scores, axis=-1).astype(jnp.int32)


def _batch_logsumexp(x: jax.Array, axis_name: str | None) -> jax.Array:
    """log sum_rows exp(x) over axis 0 and over all devices of `axis_name`: [M]."""
    peak = jnp.max(x, axis=0)
    if axis_name is not None:
        peak = jax.lax.pmax(peak, axis_name)
    peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
    total = jnp.sum(jnp.exp(x - peak), axis=0)
    if axis_name is not None:
        total = jax.lax.psum(total, axis_name)
    return peak + jnp.log(total)


def sinkhorn(
    scores: jax.Array,
    epsilon: float,
    iterations: int,
    axis_name: str | None = None,
    row_mask: jax.Array | None = None,
) -> jax.Array:
    """Balanced soft assignments (SwAV's Sinkhorn-Knopp), codes [N_local, M], rows sum to 1.

    Finds Q proportional to exp(scores/epsilon) whose prototype (column) marginals are uniform,
    1/M each, and whose sample (row) marginals are 1/N, N = the number of (unmasked) rows of the
    global batch: `iterations` alternating normalisations, columns then rows, as in SwAV's
    distributed_sinkhorn, with the column sums taken over all devices (psum over `axis_name`).
    Computed in the log domain, so a small epsilon cannot overflow. Rows with row_mask False
    take no mass and get all-zero codes. The output is a constant (stop_gradient).
    """
    if iterations < 1 or epsilon <= 0:
        raise ValueError(
            f"sinkhorn needs iterations >= 1 and epsilon > 0; got {iterations}, {epsilon}."
        )
    num_prototypes = scores.shape[1]
    log_q = jax.lax.stop_gradient(scores.astype(jnp.float32)) / epsilon
    if row_mask is None:
        row_mask = jnp.ones(scores.shape[0], bool)
    keep = row_mask[:, None]
    log_q = jnp.where(keep, log_q, -jnp.inf)
    num_rows = jnp.sum(row_mask.astype(jnp.float32))
    if axis_name is not None:
        num_rows = jax.lax.psum(num_rows, axis_name)
    log_rows = jnp.log(num_rows)
    for _ in range(iterations):
        log_q = log_q - _batch_logsumexp(log_q, axis_name)[None, :] - math.log(num_prototypes)
        log_q = log_q - jax.nn.logsumexp(log_q, axis=1, keepdims=True) - log_rows
        log_q = jnp.where(keep, log_q, -jnp.inf)
    return jnp.where(keep, jnp.exp(log_q + log_rows), 0.0)


def assign_balanced(
    t: jax.Array,
    centers: jax.Array,
    epsilon: float,
    iterations: int,
    axis_name: str | None = None,
    row_mask: jax.Array | None = None,
) -> jax.Array:
    """Prototype index of each row of t after Sinkhorn balancing: argmax of `sinkhorn` codes."""
    scores = jax.lax.stop_gradient(t.astype(jnp.float32)) @ centers.astype(jnp.float32).T
    codes = sinkhorn(scores, epsilon, iterations, axis_name=axis_name, row_mask=row_mask)
    return jnp.argmax(codes, axis=-1).astype(jnp.int32)


def _seeded_from(t: jax.Array, rng: jax.Array, num: int, replace: bool) -> jax.Array:
    """`num` unit rows copied from random rows of t, each with a tiny seeded perturbation."""
    index_key, noise_key = jax.random.split(rng)
    index = jax.random.choice(index_key, t.shape[0], (num,), replace=replace)
    noise = jax.random.normal(noise_key, (num, t.shape[1]), jnp.float32)
    return _normalize(t[index] + SEED_PERTURBATION * noise)


def update_prototypes(
    bank: dict[str, jax.Array],
    t_global: jax.Array,
    assignments_global: jax.Array,
    momentum: float,
    reseed_after: int,
    rng: jax.Array,
) -> dict[str, jax.Array]:
    """The bank after one step, from the global batch of teacher embeddings and assignments.

    - Not yet initialised: the centres become M teacher embeddings of the batch, sampled without
      replacement (with replacement if the batch has fewer than M rows), slightly perturbed.
    - Otherwise, for each prototype m used in the batch:
        c_m <- normalize(momentum * c_m + (1 - momentum) * mean{t_i : a_i = m}),  age_m <- 0;
      unused prototypes keep their centre and age by one step. With reseed_after > 0, a
      prototype whose age reaches `reseed_after` is re-seeded from a random teacher embedding of
      the batch (perturbed) and its age reset (reseed_after = 0: never re-seed).
    Inputs must be identical on all devices (global batch, same rng) so the bank stays replicated.
    """
    centers, age = bank["centers"], bank["age"]
    num_prototypes = centers.shape[0]
    t = jax.lax.stop_gradient(t_global.astype(jnp.float32))
    if t.ndim != 2 or t.shape[1] != centers.shape[1]:
        raise ValueError(
            f"update_prototypes: teacher embeddings must be [N, {centers.shape[1]}]; got {t.shape}."
        )
    init_key, reseed_key = jax.random.split(rng)

    initial = _seeded_from(t, init_key, num_prototypes, replace=t.shape[0] < num_prototypes)

    counts = jax.ops.segment_sum(
        jnp.ones(t.shape[0], jnp.float32), assignments_global, num_segments=num_prototypes
    )
    sums = jax.ops.segment_sum(t, assignments_global, num_segments=num_prototypes)
    used = counts > 0
    means = sums / jnp.maximum(counts, 1.0)[:, None]
    moved = _normalize(momentum * centers + (1.0 - momentum) * means)
    updated = jnp.where(used[:, None], moved, centers)
    new_age = jnp.where(used, 0, age + 1).astype(jnp.int32)
    if reseed_after > 0:
        stale = new_age >= reseed_after
        fresh = _seeded_from(t, reseed_key, num_prototypes, replace=True)
        updated = jnp.where(stale[:, None], fresh, updated)
        new_age = jnp.where(stale, 0, new_age).astype(jnp.int32)

    initialized = bank["initialized"]
    return {
        "centers": jnp.where(initialized, updated, initial),
        "age": jnp.where(initialized, new_age, jnp.zeros_like(age)),
        "initialized": jnp.ones((), bool),
    }


def relation_positives(
    t_anchor: jax.Array | None,
    t_cand: jax.Array | None,
    assign_anchor: jax.Array | None,
    assign_cand: jax.Array | None,
    cand_valid: jax.Array,
    variant: str,
    threshold: float,
    topk: int,
    *,
    anchor_labels: jax.Array | None = None,
    cand_labels: jax.Array | None = None,
    cand_age: jax.Array | None = None,
) -> jax.Array:
    """Relation mask R, bool [B, 1+N]: column 0 = own key (always True), columns 1.. = candidates.

    variant 'prototype': R_ij = a(t_i) == a(t_j);  'threshold': t_i.t_j >= threshold;
    'topk': j among the `topk` valid candidates most similar to t_i (teacher cosine similarity);
    'oracle': R_ij = y_i == y_j from the true labels (the SupCon upper bound: an ablation that
    needs no teacher; unknown labels, < 0, relate to nothing);
    'oracle_topk': j among the `topk` most recently enqueued valid candidates with y_j == y_i
    (`cand_age` [N]: rows enqueued since j, 0 = newest; `queue.row_age`): exactly `topk` true
    positives per anchor (fewer only when the candidates hold fewer), an ablation that separates
    the precision of the relations from their count.
    Candidates with cand_valid False are never positive.
    """
    if variant not in RELATION_VARIANTS:
        raise ValueError(
            f"unknown relation variant {variant!r}; choose one of {RELATION_VARIANTS}."
        )
    valid = jnp.asarray(cand_valid, bool)[None, :]
    if variant in LABEL_VARIANTS:
        if anchor_labels is None or cand_labels is None:
            raise ValueError(f"relation {variant!r} needs anchor_labels and cand_labels.")
        anchor_labels = jnp.asarray(anchor_labels)[:, None]
        related = (anchor_labels == jnp.asarray(cand_labels)[None, :]) & (anchor_labels >= 0)
        if variant == "oracle_topk":
            related = _newest(related & valid, cand_age, topk)
        own = jnp.ones((related.shape[0], 1), bool)
        return jnp.concatenate([own, related & valid], axis=1)
    num_anchors, num_cand = t_anchor.shape[0], t_cand.shape[0]
    if variant == "prototype":
        related = assign_anchor[:, None] == assign_cand[None, :]
    else:
        similarity = (
            jax.lax.stop_gradient(t_anchor.astype(jnp.float32))
            @ jax.lax.stop_gradient(t_cand.astype(jnp.float32)).T
        )
        if variant == "threshold":
            related = similarity >= threshold
        else:
            if topk < 1:
                raise ValueError(f"relation topk must be >= 1; got {topk}.")
            k = min(topk, num_cand)
            _, nearest = jax.lax.top_k(jnp.where(valid, similarity, -jnp.inf), k)
            related = (
                jnp.zeros((num_anchors, num_cand), bool)
                .at[jnp.arange(num_anchors)[:, None], nearest]
                .set(True)
            )
    own = jnp.ones((num_anchors, 1), bool)
    return jnp.concatenate([own, related & valid], axis=1)


def _newest(related: jax.Array, cand_age: jax.Array | None, topk: int) -> jax.Array:
    """The (at most) `topk` youngest True entries of each row of `related` [B, N]."""
    if cand_age is None:
        raise ValueError("relation 'oracle_topk' needs cand_age (queue.row_age of the queue).")
    if topk < 1:
        raise ValueError(f"relation topk must be >= 1; got {topk}.")
    num_anchors, num_cand = related.shape
    youth = -jnp.asarray(cand_age, jnp.float32)[None, :]
    _, newest = jax.lax.top_k(jnp.where(related, youth, -jnp.inf), min(topk, num_cand))
    chosen = (
        jnp.zeros((num_anchors, num_cand), bool)
        .at[jnp.arange(num_anchors)[:, None], newest]
        .set(True)
    )
    return chosen & related


def relation_diagnostics(
    positive_mask: jax.Array,
    anchor_labels: jax.Array,
    cand_labels: jax.Array,
    assignments_global: jax.Array,
    num_prototypes: int,
    axis_name: str | None = None,
) -> dict[str, jax.Array]:
    """Scalar diagnostics of the mined relations, over the global batch.

    - positives_per_anchor: mean |P_i| (own key included, so >= 1).
    - positive_label_precision: among mined positives (own key excluded) where both labels are
      known (>= 0), the fraction sharing the anchor's true label; 0 when there is no such pair.
    - labelled_pairs_per_anchor: how many such pairs per anchor the precision rests on.
    - prototype_entropy: entropy of the batch's prototype usage normalised by log M (1 = uniform
      over all M; with a batch smaller than M at most log(batch)/log M).
    - prototypes_used: number of distinct prototypes assigned in the batch.
    positive_mask / anchor_labels are this device's rows; cand_labels [N] and
    assignments_global are replicated; sums run over `axis_name` when given.
    """

    def total(x):
        x = jnp.sum(x.astype(jnp.float32))
        return x if axis_name is None else jax.lax.psum(x, axis_name)

    mask = jnp.asarray(positive_mask, bool).at[:, 0].set(True)
    num_anchors = total(jnp.ones(mask.shape[0]))
    mined = mask[:, 1:]
    anchor_labels = anchor_labels[:, None]
    cand_labels = cand_labels[None, :]
    labelled = mined & (anchor_labels >= 0) & (cand_labels >= 0)
    agree = labelled & (anchor_labels == cand_labels)
    labelled_pairs = total(labelled)

    counts = jnp.zeros(num_prototypes, jnp.float32).at[assignments_global].add(1.0)
    usage = counts / jnp.sum(counts)
    entropy = -jnp.sum(jnp.where(usage > 0, usage * jnp.log(jnp.where(usage > 0, usage, 1.0)), 0.0))
    normaliser = math.log(num_prototypes) if num_prototypes > 1 else 1.0
    return {
        "positives_per_anchor": total(mask) / num_anchors,
        "positive_label_precision": total(agree) / jnp.maximum(labelled_pairs, 1.0),
        "labelled_pairs_per_anchor": labelled_pairs / num_anchors,
        "prototype_entropy": entropy / normaliser,
        "prototypes_used": jnp.sum(counts > 0).astype(jnp.float32),
    }
