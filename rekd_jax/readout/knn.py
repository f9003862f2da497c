"""Weighted k-nearest-neighbour classification (InstDisc, Wu et al. 2018): pure JAX.

Each test feature votes with its k most cosine-similar training features; neighbour j adds
exp(sim_j / temperature) to the score of its class. This one function serves the offline
evaluation (`mode='knn'`) and the online monitor of pre-training, so both report the same number.

Memory stays bounded for large training sets: test rows are processed `chunk_size` at a time
and, within a chunk, the training set is scanned `train_chunk_size` rows at a time while a
running top-k is kept. Ties in similarity go to the lower training index (`lax.top_k` keeps the
lower index first and the running top-k keeps earlier chunks first), ties in class score go to
the lower class index: the result is deterministic and matches a stable numpy sort.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp


class KnnOutput(NamedTuple):
    """`predictions`: (n_test, min(5, num_classes)) int32 classes ranked by score;
    `scores`: (n_test, num_classes) float32 summed exp(sim / temperature) votes."""

    predictions: jax.Array
    scores: jax.Array


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Rows scaled to unit length (cosine similarity becomes a dot product)."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


def _pad_rows(x: jax.Array, multiple: int, value=0) -> jax.Array:
    pad = (-x.shape[0]) % multiple
    if pad == 0:
        return x
    widths = [(0, pad)] + [(0, 0)] * (x.ndim - 1)
    return jnp.pad(x, widths, constant_values=value)


@functools.partial(
    jax.jit,
    static_argnames=(
        "num_classes",
        "k",
        "temperature",
        "chunk_size",
        "train_chunk_size",
        "normalize",
    ),
)
def knn_classify(
    train_features: jax.Array,
    train_labels: jax.Array,
    test_features: jax.Array,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 256,
    train_chunk_size: int = 65536,
    normalize: bool = True,
) -> KnnOutput:
    """Weighted kNN class scores and ranked predictions for every test row.

    Args:
      train_features: (n_train, d) features of the labelled set (the "memory bank").
      train_labels: (n_train,) int labels in [0, num_classes).
      test_features: (n_test, d) features to classify.
      num_classes: number of classes (static).
      k: neighbours per test row (clipped to n_train).
      temperature: tau in the vote weight exp(sim / tau).
      chunk_size: test rows per block (bounds memory at chunk_size x train_chunk_size).
      train_chunk_size: training rows compared at once inside a block.
      normalize: l2-normalise both feature sets first (cosine similarity); pass False when the
        inputs are already unit vectors.
    Returns:
      KnnOutput(predictions (n_test, min(5, C)), scores (n_test, C)).
    """
    _check_shapes(train_features, train_labels, test_features)
    n_train = train_features.shape[0]
    n_test = test_features.shape[0]
    k = int(min(k, n_train))
    if normalize:
        train_features = l2_normalize(train_features)
        test_features = l2_normalize(test_features)
    train_features = train_features.astype(jnp.float32)
    test_features = test_features.astype(jnp.float32)
    blocks = _train_blocks(train_features, train_labels.astype(jnp.int32), train_chunk_size)

    def score_chunk(query):
        sim, labels = _running_top_k(query, blocks, k)
        weights = jnp.exp(sim / temperature)
        return jnp.sum(
            jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * weights[..., None], axis=1
        )

    chunk = int(max(1, min(chunk_size, n_test)))
    queries = _pad_rows(test_features, chunk).reshape(-1, chunk, test_features.shape[1])
    scores = jax.lax.map(score_chunk, queries).reshape(-1, num_classes)[:n_test]
    _, predictions = jax.lax.top_k(scores, min(5, num_classes))
    return KnnOutput(predictions=predictions.astype(jnp.int32), scores=scores)


def _check_shapes(train_features, train_labels, test_features) -> None:
    """ValueError for features that are not (rows, dim) or labels of another length."""
    if train_features.ndim != 2 or test_features.ndim != 2:
        raise ValueError(
            "knn_classify: features must be 2-D (rows, dim); got "
            f"{train_features.shape} and {test_features.shape}"
        )
    if train_features.shape[0] != train_labels.shape[0]:
        raise ValueError(
            f"knn_classify: {train_features.shape[0]} training features but "
            f"{train_labels.shape[0]} labels"
        )


def _train_blocks(train_features, train_labels, train_chunk_size: int):
    """(features, labels, valid) of the training set in blocks of `train_chunk_size` rows
    (fewer when the set is smaller), the last block padded with invalid rows."""
    n_train = train_features.shape[0]
    train_chunk = int(min(train_chunk_size, n_train))
    # Padding rows get similarity -inf so they are never chosen while a real row is left.
    train_valid = _pad_rows(jnp.ones((n_train,), bool), train_chunk, False)
    train_blocks = _pad_rows(train_features, train_chunk).reshape(
        -1, train_chunk, train_features.shape[1]
    )
    label_blocks = _pad_rows(train_labels, train_chunk).reshape(-1, train_chunk)
    valid_blocks = train_valid.reshape(-1, train_chunk)
    return train_blocks, label_blocks, valid_blocks


def _running_top_k(query, blocks, k: int):
    """Running top-k (similarity, label) of `query` rows over all training blocks."""
    init = (
        jnp.full((query.shape[0], k), -jnp.inf, jnp.float32),
        jnp.zeros((query.shape[0], k), jnp.int32),
    )

    def scan_block(carry, block):
        best_sim, best_label = carry
        feats, labels, valid = block
        sim = jnp.where(valid[None, :], query @ feats.T, -jnp.inf)
        # Earlier blocks first, so equal similarities keep the lower training index.
        all_sim = jnp.concatenate([best_sim, sim], axis=1)
        all_label = jnp.concatenate(
            [best_label, jnp.broadcast_to(labels[None, :], sim.shape)], axis=1
        )
        top_sim, top_idx = jax.lax.top_k(all_sim, k)
        return (top_sim, jnp.take_along_axis(all_label, top_idx, axis=1)), None

    (best_sim, best_label), _ = jax.lax.scan(scan_block, init, blocks)
    return best_sim, best_label


def knn_accuracy(output: KnnOutput, labels: jax.Array) -> dict[str, jax.Array]:
    """Top-1 / top-5 accuracy (fractions) of a `knn_classify` output against `labels`."""
    hits = output.predictions == labels[:, None].astype(jnp.int32)
    return {"top1": jnp.mean(hits[:, 0]), "top5": jnp.mean(jnp.any(hits, axis=1))}
