"""Losses against independent numpy computations (explicit loops, log-sum-exp by hand)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rekd_jax.methods import losses


def unit_rows(seed, n, d):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def log_softmax_loop(row):
    peak = max(row)
    log_total = peak + math.log(sum(math.exp(v - peak) for v in row))
    return [v - log_total for v in row]


def candidate_logits(q_i, k_i, queue, tau):
    return [float(np.dot(q_i, k_i)) / tau] + [float(np.dot(q_i, n)) / tau for n in queue]


def test_soft_cross_entropy_hand_values():
    logits = jnp.array([[0.0, 0.0], [math.log(3.0), 0.0]])
    targets = jnp.array([[1.0, 0.0], [0.5, 0.5]])
    # row 0: -log(1/2); row 1: p = (3/4, 1/4): -(0.5 log 3/4 + 0.5 log 1/4).
    expected = (math.log(2.0) - 0.5 * (math.log(0.75) + math.log(0.25))) / 2
    np.testing.assert_allclose(losses.soft_cross_entropy(logits, targets), expected, rtol=1e-6)


def test_soft_cross_entropy_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        losses.soft_cross_entropy(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


def test_info_nce_matches_loop():
    q, k, queue = unit_rows(0, 3, 5), unit_rows(1, 3, 5), unit_rows(2, 7, 5)
    tau = 0.2
    expected = np.mean(
        [-log_softmax_loop(candidate_logits(q[i], k[i], queue, tau))[0] for i in range(3)]
    )
    np.testing.assert_allclose(losses.info_nce(q, k, queue, tau), expected, rtol=1e-5)


def test_relation_contrast_matches_supcon_loop():
    q, k, queue = unit_rows(3, 4, 6), unit_rows(4, 4, 6), unit_rows(5, 5, 6)
    tau = 0.3
    mask = np.random.default_rng(6).random((4, 6)) < 0.4
    mask[1, 0] = False  # column 0 is positive whatever the caller says
    expected = []
    for i in range(4):
        log_p = log_softmax_loop(candidate_logits(q[i], k[i], queue, tau))
        positives = [0] + [j for j in range(1, 6) if mask[i, j]]
        expected.append(-sum(log_p[j] for j in positives) / len(positives))
    got = losses.relation_contrast(q, k, queue, jnp.asarray(mask), tau)
    np.testing.assert_allclose(got, np.mean(expected), rtol=1e-5)


def test_relation_contrast_with_only_own_key_is_info_nce():
    q, k, queue = unit_rows(7, 4, 6), unit_rows(8, 4, 6), unit_rows(9, 10, 6)
    mask = np.zeros((4, 11), bool)
    np.testing.assert_allclose(
        losses.relation_contrast(q, k, queue, mask, 0.2),
        losses.info_nce(q, k, queue, 0.2),
        rtol=1e-6,
    )


def test_relation_contrast_rejects_wrong_mask_shape():
    q = unit_rows(0, 2, 3)
    with pytest.raises(ValueError, match="positive_mask"):
        losses.relation_contrast(q, q, unit_rows(1, 4, 3), np.ones((2, 4), bool), 0.2)


def test_seed_loss_matches_loop():
    z_s, z_t, queue = unit_rows(10, 3, 4), unit_rows(11, 3, 4), unit_rows(12, 6, 4)
    tau_s, tau_t = 0.2, 0.05
    expected = []
    for i in range(3):
        p_t = np.exp(log_softmax_loop(candidate_logits(z_t[i], z_t[i], queue, tau_t)))
        log_p_s = log_softmax_loop(candidate_logits(z_s[i], z_t[i], queue, tau_s))
        expected.append(-sum(p * lp for p, lp in zip(p_t, log_p_s)))
    np.testing.assert_allclose(
        losses.seed_loss(z_s, z_t, queue, tau_s, tau_t), np.mean(expected), rtol=1e-5
    )


def test_seed_loss_is_minimal_when_student_equals_teacher():
    z_t, queue = unit_rows(13, 3, 4), unit_rows(14, 6, 4)
    tau = 0.1
    at_teacher = losses.seed_loss(z_t, z_t, queue, tau, tau)
    # CE(p_t, p_t) is the teacher's entropy, the minimum over student distributions.
    p_t = jax.nn.softmax(losses.contrast_logits(z_t, z_t, queue, tau), axis=-1)
    entropy = -jnp.mean(jnp.sum(p_t * jnp.log(p_t), axis=-1))
    np.testing.assert_allclose(at_teacher, entropy, rtol=1e-5)
    grad = jax.grad(losses.seed_loss)(jnp.asarray(z_t), z_t, queue, tau, tau)
    np.testing.assert_allclose(grad, 0.0, atol=1e-5)
    for seed in range(3):
        moved = z_t + 0.3 * unit_rows(20 + seed, 3, 4)
        assert losses.seed_loss(moved, z_t, queue, tau, tau) > at_teacher + 1e-4


def test_gradients_reach_the_query_only():
    q, k, queue = unit_rows(15, 3, 4), unit_rows(16, 3, 4), unit_rows(17, 6, 4)
    mask = np.ones((3, 7), bool)
    for fn in (
        lambda q, k, queue: losses.info_nce(q, k, queue, 0.2),
        lambda q, k, queue: losses.relation_contrast(q, k, queue, mask, 0.2),
        lambda q, k, queue: losses.seed_loss(q, k, queue, 0.2, 0.05),
    ):
        grad_q, grad_k, grad_queue = jax.grad(fn, argnums=(0, 1, 2))(q, k, queue)
        assert float(jnp.max(jnp.abs(grad_q))) > 1e-3
        np.testing.assert_array_equal(grad_k, 0.0)
        np.testing.assert_array_equal(grad_queue, 0.0)


def test_relation_contrast_without_the_own_key_averages_over_mined_positives_only():
    q, k, queue = unit_rows(7, 3, 6), unit_rows(8, 3, 6), unit_rows(9, 5, 6)
    tau = 0.2
    mask = np.zeros((3, 6), bool)
    mask[0, [2, 4]] = True  # two mined positives: the own key leaves the target
    mask[2, 1] = True  # one mined positive
    expected = []
    for i, positives in enumerate(([2, 4], [0], [1])):  # row 1 has none: it keeps its own key
        log_p = log_softmax_loop(candidate_logits(q[i], k[i], queue, tau))
        expected.append(-sum(log_p[j] for j in positives) / len(positives))
    got = losses.relation_contrast(q, k, queue, jnp.asarray(mask), tau, keep_own_key=False)
    np.testing.assert_allclose(got, np.mean(expected), rtol=1e-5)
    kept = losses.relation_contrast(q, k, queue, jnp.asarray(mask), tau)
    assert abs(float(kept) - float(got)) > 1e-4


def relation_response_loop(q, t, queue, mask, tau, beta, tau_t, keep_own_key=True):
    """The mixed relation/response loss by explicit loops over anchors and candidates."""
    expected = []
    for i in range(len(q)):
        positives = [j for j in range(1, mask.shape[1]) if mask[i, j]]
        if keep_own_key or not positives:
            positives = [0] + positives
        relation = [1.0 / len(positives) if j in positives else 0.0 for j in range(mask.shape[1])]
        response = np.exp(log_softmax_loop(candidate_logits(t[i], t[i], queue, tau_t)))
        log_p = log_softmax_loop(candidate_logits(q[i], t[i], queue, tau))
        target = [beta * r + (1 - beta) * s for r, s in zip(relation, response)]
        expected.append(-sum(y * lp for y, lp in zip(target, log_p)))
    return np.mean(expected)


@pytest.mark.parametrize("beta,keep_own_key", [(0.3, True), (0.7, False), (1.0, True)])
def test_relation_response_matches_loop(beta, keep_own_key):
    q, t, queue = unit_rows(30, 4, 5), unit_rows(31, 4, 5), unit_rows(32, 6, 5)
    mask = np.random.default_rng(33).random((4, 7)) < 0.4
    mask[2, 1:] = False  # an anchor without mined positives keeps its own image
    got = losses.relation_response(q, t, queue, mask, 0.2, beta, 0.05, keep_own_key)
    expected = relation_response_loop(q, t, queue, mask, 0.2, beta, 0.05, keep_own_key)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_relation_response_ends_are_relation_contrast_and_seed():
    """beta 1: relation_contrast over the teacher's candidates; beta 0: SEED's loss with
    tau_s = the temperature (at SEED's released tau_t 1e-4)."""
    q, t, queue = unit_rows(34, 5, 8), unit_rows(35, 5, 8), unit_rows(36, 9, 8)
    mask = np.random.default_rng(37).random((5, 10)) < 0.3
    for keep in (True, False):
        np.testing.assert_allclose(
            losses.relation_response(q, t, queue, mask, 0.2, 1.0, 1e-4, keep),
            losses.relation_contrast(q, t, queue, mask, 0.2, keep),
            rtol=1e-6,
            atol=1e-6,
        )
    np.testing.assert_allclose(
        losses.relation_response(q, t, queue, mask, 0.2, 0.0, 1e-4),
        losses.seed_loss(q, t, queue, 0.2, 1e-4),
        rtol=1e-6,
        atol=1e-6,
    )
    grad_q, grad_t, grad_queue = jax.grad(
        lambda q, t, queue: losses.relation_response(q, t, queue, mask, 0.2, 0.5, 0.05),
        argnums=(0, 1, 2),
    )(q, t, queue)
    assert float(jnp.max(jnp.abs(grad_q))) > 1e-3
    np.testing.assert_array_equal(grad_t, 0.0)
    np.testing.assert_array_equal(grad_queue, 0.0)


def test_relation_response_rejects_beta_outside_the_unit_interval():
    q = unit_rows(0, 2, 3)
    with pytest.raises(ValueError, match="beta"):
        losses.relation_response(q, q, unit_rows(1, 4, 3), np.ones((2, 5), bool), 0.2, 1.5, 0.1)
