"""Exact top-k scoring: every example of a split counted exactly once.

Batches are laid out (local_devices, per_device_batch, ...) with a boolean `mask`; the last
batch is padded and its padding masked out, never dropped. Correct counts are summed per device
inside `pmap` *without* collectives (processes may hold different numbers of batches, so a
cross-device collective could deadlock), then on the host, then across processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from rekd_jax.core import progress as progress_lib


def topk_correct(
    logits: jax.Array, labels: jax.Array, mask: jax.Array, ks: Sequence[int] = (1, 5)
) -> jax.Array:
    """Number of masked-in rows whose label is among the top-k logits, for each k.

    k larger than the number of classes counts every row as correct. Ties in the logits go
    to the lower class index (`lax.top_k`). Returns float32 (len(ks),) counts.
    """
    num_classes = logits.shape[-1]
    kmax = min(max(ks), num_classes)
    _, top = jax.lax.top_k(logits.astype(jnp.float32), kmax)
    hits = top == labels[..., None].astype(top.dtype)
    mask = mask.astype(jnp.float32)
    return jnp.stack(
        [jnp.sum(jnp.any(hits[..., : min(k, num_classes)], axis=-1) * mask) for k in ks]
    )


def sum_across_processes(values: np.ndarray) -> np.ndarray:
    """Sum a host array over all JAX processes (identity with a single process)."""
    values = np.asarray(values)
    if jax.process_count() == 1:
        return values
    return np.asarray(multihost_utils.process_allgather(values)).sum(axis=0)


def gather_rows(values: np.ndarray) -> np.ndarray:
    """Concatenate the rows each process holds (row counts may differ) on every process."""
    values = np.asarray(values)
    if jax.process_count() == 1:
        return values
    counts = np.asarray(multihost_utils.process_allgather(np.int64(values.shape[0])))
    padded = np.zeros((int(counts.max()),) + values.shape[1:], values.dtype)
    padded[: values.shape[0]] = values
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return np.concatenate([gathered[p, : int(n)] for p, n in enumerate(counts)], axis=0)


def padded_batches(
    arrays: Mapping[str, np.ndarray], per_device_batch: int, num_devices: int
) -> Iterator[dict[str, np.ndarray]]:
    """One ordered pass over host arrays as (num_devices, per_device_batch, ...) batches.

    The last batch is zero-padded; `mask` marks the real rows. All arrays share their length.
    """
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"padded_batches: arrays differ in length: {lengths}")
    n = next(iter(lengths.values()))
    batch = per_device_batch * num_devices
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        out = {}
        for name, a in arrays.items():
            part = np.zeros((batch,) + a.shape[1:], a.dtype)
            part[: stop - start] = a[start:stop]
            out[name] = part.reshape((num_devices, per_device_batch) + a.shape[1:])
        mask = np.zeros((batch,), bool)
        mask[: stop - start] = True
        out["mask"] = mask.reshape(num_devices, per_device_batch)
        yield out


def score(
    logits_fn: Callable[..., Mapping[str, jax.Array]],
    args: tuple,
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    input_key: str,
    ks: Sequence[int] = (1, 5),
) -> dict[str, dict[str, float]]:
    """Top-k accuracy of every head of `logits_fn` over all masked-in examples of `batches`.

    Args:
      logits_fn: per-device function `(*args, batch[input_key]) -> {head: logits (b, C)}`.
      args: replicated leading arguments (e.g. variables, probe params), already on devices.
      batches: padded batches with `input_key`, 'label' and 'mask', shaped (D, b, ...).
      input_key: the batch entry fed to `logits_fn` ('image' or a feature name).
    Returns:
      {head: {'top1': %, 'top5': %, 'count': n}} summed over all devices and processes.
    """

    def device_counts(*inputs):
        *leading, x, labels, mask = inputs
        logits = logits_fn(*leading, x)
        counts = {name: topk_correct(head, labels, mask, ks) for name, head in logits.items()}
        return counts, jnp.sum(mask.astype(jnp.float32))

    counts_fn = progress_lib.heartbeat_first_call(jax.pmap(device_counts), "compiling the scorer")
    totals: dict[str, np.ndarray] = {}
    seen = 0.0
    progress = progress_lib.Progress(
        "scoring", int(getattr(batches, "steps_per_epoch", 0) or 0), unit="batch"
    )
    for batch in batches:
        if "mask" not in batch:
            raise ValueError(
                "score: evaluation batches need a 'mask' (pipeline.create(..., "
                "training=False) pads the last batch and masks it)"
            )
        correct, count = counts_fn(*args, batch[input_key], batch["label"], batch["mask"])
        correct, count = jax.device_get((correct, count))
        for name, c in correct.items():
            totals[name] = totals.get(name, 0.0) + np.asarray(c, np.float64).sum(axis=0)
        seen += float(np.sum(count))
        progress.update(1)
    progress.close()
    names = sorted(totals)
    stacked = (
        np.stack([totals[n] for n in names] + [np.full(len(ks), seen)])
        if names
        else np.full((1, len(ks)), seen)
    )
    stacked = sum_across_processes(stacked)
    total = float(stacked[-1, 0])
    if total == 0:
        raise ValueError("score: no examples were evaluated (empty split?)")
    return {
        name: {
            **{f"top{k}": 100.0 * float(stacked[i, j]) / total for j, k in enumerate(ks)},
            "count": int(round(total)),
        }
        for i, name in enumerate(names)
    }


def per_device_batch_size(global_batch_size: int, what: str = "batch_size") -> int:
    """Examples per local device for a global batch; raises if it does not split evenly."""
    devices = jax.device_count()
    if global_batch_size <= 0 or global_batch_size % devices:
        suggestion = devices * max(1, math.ceil(global_batch_size / devices))
        raise ValueError(
            f"{what}={global_batch_size} must be a positive multiple of the "
            f"{devices} devices; set it to e.g. {suggestion}"
        )
    return global_batch_size // devices
