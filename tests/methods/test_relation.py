"""Relation miner: assignment, Sinkhorn balancing, the prototype bank, masks and diagnostics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rekd_jax.methods import relation


def unit_rows(seed, n, d):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_assign_is_argmax_of_similarity():
    t, centers = unit_rows(0, 10, 4), unit_rows(1, 3, 4)
    expected = [int(np.argmax([np.dot(row, c) for c in centers])) for row in t]
    np.testing.assert_array_equal(relation.assign(t, centers), expected)


def test_sinkhorn_balances_a_skewed_batch():
    rng = np.random.default_rng(0)
    scores = (rng.normal(size=(64, 4)) * 0.05 + np.array([0.3, 0, 0, 0])).astype(np.float32)
    assert np.all(np.argmax(scores, 1) == 0)  # plain argmax collapses onto prototype 0
    codes = relation.sinkhorn(scores, epsilon=0.05, iterations=3)
    np.testing.assert_allclose(codes.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(codes.sum(0), 64 / 4, rtol=0.03)
    counts = np.bincount(np.argmax(codes, 1), minlength=4)
    assert counts.min() >= 8, counts
    np.testing.assert_array_equal(
        relation.assign_balanced(scores, np.eye(4, dtype=np.float32), 0.05, 3), np.argmax(codes, 1)
    )


def test_sinkhorn_under_pmap_equals_the_global_batch_on_one_device():
    scores = unit_rows(2, 32, 3) @ unit_rows(3, 3, 3).T
    single = relation.sinkhorn(scores, 0.05, 3)
    sharded = jax.pmap(
        lambda s: relation.sinkhorn(s, 0.05, 3, axis_name="batch"), axis_name="batch"
    )(scores.reshape(4, 8, 3))
    np.testing.assert_allclose(np.asarray(sharded).reshape(32, 3), single, rtol=1e-5, atol=1e-7)


def test_sinkhorn_row_mask_excludes_rows():
    scores = unit_rows(4, 12, 3) @ unit_rows(5, 3, 3).T
    row_mask = np.arange(12) % 3 != 0
    masked = relation.sinkhorn(scores, 0.1, 3, row_mask=row_mask)
    np.testing.assert_array_equal(masked[~row_mask], 0.0)
    np.testing.assert_allclose(
        masked[row_mask], relation.sinkhorn(scores[row_mask], 0.1, 3), rtol=1e-5
    )


def test_first_update_initialises_the_bank_from_the_batch():
    bank = relation.init_prototypes(jax.random.PRNGKey(0), 4, 5)
    assert not bool(bank["initialized"])
    t = unit_rows(6, 6, 5)
    new = relation.update_prototypes(
        bank, t, np.zeros(6, np.int32), 0.99, 10, jax.random.PRNGKey(1)
    )
    assert bool(new["initialized"])
    np.testing.assert_array_equal(new["age"], 0)
    centers = np.asarray(new["centers"])
    np.testing.assert_allclose(np.linalg.norm(centers, axis=1), 1.0, rtol=1e-6)
    nearest = np.argmax(centers @ t.T, axis=1)
    np.testing.assert_allclose(centers, t[nearest], atol=1e-2)
    assert len(set(nearest)) == 4  # without replacement: 4 different batch rows

    small = relation.update_prototypes(
        bank, t[:2], np.zeros(2, np.int32), 0.99, 10, jax.random.PRNGKey(2)
    )
    small_centers = np.asarray(small["centers"])
    np.testing.assert_allclose(
        small_centers, t[:2][np.argmax(small_centers @ t[:2].T, 1)], atol=1e-2
    )
    assert len({tuple(row) for row in small_centers}) == 4  # duplicates were perturbed apart


def initialised_bank(centers, age):
    return {
        "centers": jnp.asarray(centers, jnp.float32),
        "age": jnp.asarray(age, jnp.int32),
        "initialized": jnp.asarray(True),
    }


def test_update_moves_used_centres_towards_their_members_and_ages_the_rest():
    centers = np.eye(3, dtype=np.float32)
    t = unit_rows(7, 3, 3)
    assignments = np.array([0, 0, 1], np.int32)
    mu = 0.9
    new = relation.update_prototypes(
        initialised_bank(centers, [5, 5, 5]), t, assignments, mu, 100, jax.random.PRNGKey(0)
    )
    expected0 = mu * centers[0] + (1 - mu) * t[:2].mean(0)
    expected1 = mu * centers[1] + (1 - mu) * t[2]
    np.testing.assert_allclose(new["centers"][0], expected0 / np.linalg.norm(expected0), rtol=1e-5)
    np.testing.assert_allclose(new["centers"][1], expected1 / np.linalg.norm(expected1), rtol=1e-5)
    np.testing.assert_array_equal(new["centers"][2], centers[2])
    np.testing.assert_array_equal(new["age"], [0, 0, 6])
    np.testing.assert_allclose(np.linalg.norm(new["centers"], axis=1), 1.0, rtol=1e-6)
    mean0 = t[:2].mean(0)
    assert float(np.dot(new["centers"][0], mean0)) > float(np.dot(centers[0], mean0))


def test_stale_prototypes_are_reseeded_from_the_batch():
    centers = np.eye(3, dtype=np.float32)
    t = unit_rows(8, 4, 3)
    bank = initialised_bank(centers, [0, 8, 3])
    new = relation.update_prototypes(bank, t, np.zeros(4, np.int32), 0.99, 9, jax.random.PRNGKey(3))
    np.testing.assert_array_equal(new["age"], [0, 0, 4])  # prototype 1 hit age 9: re-seeded
    reseeded = np.asarray(new["centers"][1])
    assert np.min(np.linalg.norm(t - reseeded, axis=1)) < 1e-2
    np.testing.assert_array_equal(new["centers"][2], centers[2])
    never = relation.update_prototypes(
        bank, t, np.zeros(4, np.int32), 0.99, 0, jax.random.PRNGKey(3)
    )
    np.testing.assert_array_equal(never["age"], [0, 9, 4])
    np.testing.assert_array_equal(never["centers"][1], centers[1])


def brute_force_positives(t_a, t_c, a_a, a_c, valid, variant, threshold, topk):
    mask = np.zeros((len(t_a), 1 + len(t_c)), bool)
    for i in range(len(t_a)):
        mask[i, 0] = True
        sims = [float(np.dot(t_a[i], t_c[j])) for j in range(len(t_c))]
        ranked = sorted((j for j in range(len(t_c)) if valid[j]), key=lambda j: -sims[j])
        for j in range(len(t_c)):
            if not valid[j]:
                continue
            if variant == "prototype":
                mask[i, 1 + j] = a_a[i] == a_c[j]
            elif variant == "threshold":
                mask[i, 1 + j] = sims[j] >= threshold
            else:
                mask[i, 1 + j] = j in ranked[:topk]
    return mask


@pytest.mark.parametrize("variant", ["prototype", "threshold", "topk"])
def test_relation_positives_match_brute_force(variant):
    t_a, t_c = unit_rows(9, 5, 4), unit_rows(10, 12, 4)
    centers = unit_rows(11, 3, 4)
    a_a, a_c = relation.assign(t_a, centers), relation.assign(t_c, centers)
    valid = np.arange(12) % 4 != 1
    got = relation.relation_positives(t_a, t_c, a_a, a_c, valid, variant, 0.3, 3)
    expected = brute_force_positives(
        t_a, t_c, np.asarray(a_a), np.asarray(a_c), valid, variant, 0.3, 3
    )
    np.testing.assert_array_equal(got, expected)
    assert expected[:, 1:].any() and not expected[:, 1:].all()


def test_topk_with_fewer_valid_candidates_than_k():
    t_a, t_c = unit_rows(12, 2, 4), unit_rows(13, 5, 4)
    valid = np.array([1, 0, 0, 1, 0], bool)
    got = relation.relation_positives(t_a, t_c, np.zeros(2), np.zeros(5), valid, "topk", 0.0, 4)
    np.testing.assert_array_equal(got[:, 1:], np.broadcast_to(valid, (2, 5)))


def test_relation_positives_rejects_unknown_variant():
    with pytest.raises(ValueError, match="unknown relation variant"):
        relation.relation_positives(
            unit_rows(0, 1, 2),
            unit_rows(1, 2, 2),
            np.zeros(1),
            np.zeros(2),
            np.ones(2, bool),
            "knn",
            0.5,
            1,
        )


def test_relation_diagnostics_on_a_constructed_example():
    mask = np.array(
        [[1, 1, 0, 1], [0, 0, 1, 0]], bool
    )  # anchor 1's own-key column counts as positive
    anchor_labels = np.array([0, 1])
    cand_labels = np.array([0, 2, -1])
    diagnostics = relation.relation_diagnostics(
        mask, anchor_labels, cand_labels, np.array([0, 0, 1, 3]), 4
    )
    # anchor 0: +cand 0 (same label), +cand 2 (unknown label); anchor 1: +cand 1 (label 2 != 1).
    np.testing.assert_allclose(diagnostics["positives_per_anchor"], 2.5)
    np.testing.assert_allclose(diagnostics["positive_label_precision"], 0.5)
    np.testing.assert_allclose(diagnostics["labelled_pairs_per_anchor"], 1.0)
    # usage (1/2, 1/4, 0, 1/4): entropy 1.5 ln 2, normalised by ln 4.
    np.testing.assert_allclose(diagnostics["prototype_entropy"], 0.75, rtol=1e-6)
    np.testing.assert_allclose(diagnostics["prototypes_used"], 3)


def test_relation_diagnostics_without_labels_report_zero_precision():
    diagnostics = relation.relation_diagnostics(
        np.ones((2, 3), bool),
        -np.ones(2, np.int32),
        -np.ones(2, np.int32),
        np.zeros(2, np.int32),
        1,
    )
    np.testing.assert_allclose(diagnostics["positive_label_precision"], 0.0)
    np.testing.assert_allclose(diagnostics["labelled_pairs_per_anchor"], 0.0)
    np.testing.assert_allclose(diagnostics["prototype_entropy"], 0.0)
    assert math.isfinite(float(diagnostics["positives_per_anchor"]))


def test_oracle_relation_is_label_equality_over_valid_candidates():
    anchor = np.array([0, 1, -1], np.int32)
    cand = np.array([0, 1, 0, -1, 1], np.int32)
    valid = np.array([True, True, False, True, True])
    got = relation.relation_positives(
        None, None, None, None, valid, "oracle", 0.0, 1, anchor_labels=anchor, cand_labels=cand
    )
    expected = np.array(
        [[1, 1, 0, 0, 0, 0], [1, 0, 1, 0, 0, 1], [1, 0, 0, 0, 0, 0]], bool
    )  # unknown labels relate to nothing
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="oracle.*labels"):
        relation.relation_positives(None, None, None, None, valid, "oracle", 0.0, 1)


def test_oracle_topk_takes_the_newest_same_label_candidates():
    """Exactly topk same-label positives per anchor, the most recently enqueued valid ones;
    fewer only when the candidates hold fewer; unknown labels relate to nothing."""
    anchor = np.array([0, 1, 2, -1], np.int32)
    cand = np.array([0, 0, 1, 0, 0, 1, 0, -1], np.int32)
    valid = np.array([True, True, True, True, False, True, True, True])
    age = np.array([7, 6, 5, 4, 3, 2, 1, 0], np.int32)  # row 7 is the newest
    got = relation.relation_positives(
        None,
        None,
        None,
        None,
        valid,
        "oracle_topk",
        0.0,
        2,
        anchor_labels=anchor,
        cand_labels=cand,
        cand_age=age,
    )
    expected = np.zeros((4, 9), bool)
    expected[:, 0] = True
    for i, label in enumerate(anchor):  # by hand: valid same-label rows, newest first
        rows = [j for j in np.argsort(age) if valid[j] and cand[j] == label and label >= 0]
        expected[i, 1 + np.asarray(rows[:2], int)] = True
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got[:, 1:].sum(1), [2, 2, 0, 0])  # label 0: rows 6, 3
    assert got[0, 1 + 6] and got[0, 1 + 3] and not got[0, 1 + 4]  # row 4 is invalid
    with pytest.raises(ValueError, match="cand_age"):
        relation.relation_positives(
            None,
            None,
            None,
            None,
            valid,
            "oracle_topk",
            0.0,
            2,
            anchor_labels=anchor,
            cand_labels=cand,
        )
