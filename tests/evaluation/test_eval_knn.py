"""Weighted kNN against a brute-force numpy reference (top-1, top-5, ties, chunking)."""

import jax.numpy as jnp
import numpy as np
import pytest

from rekd_jax.readout import knn


def reference_knn(train, train_labels, test, num_classes, k, temperature):
    """Brute force: cosine similarities, stable sort (ties -> lower index), exp(sim/tau) votes."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    sims = test.astype(np.float64) @ train.T.astype(np.float64)
    k = min(k, len(train))
    scores = np.zeros((len(test), num_classes))
    for i, row in enumerate(sims):
        order = np.argsort(-row, kind="stable")[:k]
        for j in order:
            scores[i, train_labels[j]] += np.exp(row[j] / temperature)
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, : min(5, num_classes)]
    return scores, ranked


@pytest.mark.parametrize("chunk_size,train_chunk_size", [(7, 13), (256, 65536)])
def test_knn_matches_numpy_reference(chunk_size, train_chunk_size):
    rng = np.random.default_rng(0)
    num_classes = 10
    centres = rng.normal(size=(num_classes, 16))
    train_labels = rng.integers(0, num_classes, 150)
    test_labels = rng.integers(0, num_classes, 41)
    train = centres[train_labels] + 0.8 * rng.normal(size=(150, 16))
    test = centres[test_labels] + 0.8 * rng.normal(size=(41, 16))
    out = knn.knn_classify(
        jnp.asarray(train, jnp.float32),
        jnp.asarray(train_labels),
        jnp.asarray(test, jnp.float32),
        num_classes,
        k=20,
        temperature=0.1,
        chunk_size=chunk_size,
        train_chunk_size=train_chunk_size,
    )
    ref_scores, ref_ranked = reference_knn(train, train_labels, test, num_classes, 20, 0.1)
    np.testing.assert_allclose(np.asarray(out.scores), ref_scores, rtol=2e-4)
    np.testing.assert_array_equal(np.asarray(out.predictions), ref_ranked)
    acc = knn.knn_accuracy(out, jnp.asarray(test_labels))
    ref_top1 = np.mean(ref_ranked[:, 0] == test_labels)
    ref_top5 = np.mean((ref_ranked == test_labels[:, None]).any(axis=1))
    assert float(acc["top1"]) == pytest.approx(ref_top1)
    assert float(acc["top5"]) == pytest.approx(ref_top5)
    assert ref_top1 > 0.5  # the clusters are separable enough for kNN to work


def test_knn_ties_go_to_lower_index_and_lower_class():
    # Four identical training vectors, k=2: the neighbours must be rows 0 and 1 (labels 3, 1),
    # giving classes 1 and 3 equal scores; the class tie goes to the lower class (1).
    train = np.ones((4, 3), np.float32)
    train_labels = np.array([3, 1, 0, 2])
    test = np.ones((1, 3), np.float32)
    for train_chunk in (1, 2, 3, 4):
        out = knn.knn_classify(
            jnp.asarray(train),
            jnp.asarray(train_labels),
            jnp.asarray(test),
            4,
            k=2,
            temperature=0.1,
            train_chunk_size=train_chunk,
        )
        scores = np.asarray(out.scores)[0]
        assert scores[0] == 0 and scores[2] == 0
        assert scores[1] == pytest.approx(scores[3]) and scores[1] > 0
        assert list(np.asarray(out.predictions)[0][:2]) == [1, 3]
    ref_scores, ref_ranked = reference_knn(train, train_labels, test, 4, 2, 0.1)
    np.testing.assert_array_equal(np.asarray(out.predictions), ref_ranked)


def test_k_larger_than_train_set_and_few_classes():
    train = np.eye(3, dtype=np.float32)
    out = knn.knn_classify(
        jnp.asarray(train), jnp.array([0, 1, 2]), jnp.asarray(train), 3, k=200, temperature=0.1
    )
    assert np.asarray(out.predictions).shape == (3, 3)  # top-5 clipped to 3 classes
    np.testing.assert_array_equal(np.asarray(out.predictions)[:, 0], [0, 1, 2])
    # Each class gets exp(1/0.1) from itself and exp(0) from each of the two others.
    np.testing.assert_allclose(np.asarray(out.scores)[0], [np.exp(10.0), 1.0, 1.0], rtol=1e-5)
