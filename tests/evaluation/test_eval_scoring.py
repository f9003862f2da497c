"""Exact padded evaluation: every example counted exactly once, top-1/top-5 values exact."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rekd_jax.evaluation import scoring


def test_topk_correct_counts_masked_rows_only():
    logits = jnp.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.9, 0.0, 0.1]])
    labels = jnp.array([1, 2, 2, 0])
    mask = jnp.array([True, True, True, False])
    counts = np.asarray(scoring.topk_correct(logits, labels, mask, ks=(1, 2, 5)))
    # top-1: rows 0 and 2; top-2: row 1's label 2 ties with class 1 at 0.1 -> lower index (1)
    # wins, so row 1 is still wrong; k=5 > 3 classes counts every masked-in row.
    np.testing.assert_array_equal(counts, [2, 2, 3])


def test_10001_examples_on_4_devices_each_counted_once():
    assert jax.local_device_count() == 4
    rng = np.random.default_rng(0)
    n, num_classes, dim = 10001, 7, 5
    features = rng.normal(size=(n, dim)).astype(np.float32)
    weights = rng.normal(size=(dim, num_classes)).astype(np.float32)
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    logits_np = features @ weights

    batches = list(
        scoring.padded_batches(
            {"features": features, "label": labels}, per_device_batch=64, num_devices=4
        )
    )
    assert sum(int(b["mask"].sum()) for b in batches) == n
    assert batches[-1]["mask"].sum() == n % 256 and batches[-1]["features"].shape == (4, 64, 5)

    def logits_fn(w, x):
        return {"probe": x @ w}

    replicated_w = jnp.broadcast_to(weights, (4,) + weights.shape)
    result = scoring.score(logits_fn, (replicated_w,), batches, input_key="features")
    top = np.argsort(-logits_np, axis=1, kind="stable")
    ref_top1 = 100 * np.mean(top[:, 0] == labels)
    ref_top5 = 100 * np.mean((top[:, :5] == labels[:, None]).any(axis=1))
    assert result["probe"]["count"] == n
    assert result["probe"]["top1"] == pytest.approx(ref_top1, abs=1e-9)
    assert result["probe"]["top5"] == pytest.approx(ref_top5, abs=1e-9)


def test_score_refuses_batches_without_mask():
    batch = {"features": np.zeros((4, 1, 2), np.float32), "label": np.zeros((4, 1), np.int32)}
    with pytest.raises(ValueError, match="mask"):
        scoring.score(lambda x: {"p": x}, (), [batch], input_key="features")


def test_per_device_batch_size_error_names_the_field():
    with pytest.raises(ValueError, match="eval_batch_size=6 must be a positive multiple"):
        scoring.per_device_batch_size(6, "eval_batch_size")
    assert scoring.per_device_batch_size(8) == 2
