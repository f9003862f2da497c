"""Fast mode of the probes: heads trained on cached frozen features.

Features are extracted once without augmentation (rekd_jax.evaluation.common.split_features)
and kept on the devices, each device holding its own shard (`shard_for_devices`); one pmapped
call runs a whole epoch (`lax.scan` over its steps, rows in a seeded order: `epoch_indices`),
so the probe trains in seconds. The heads, their loss and optimizer are those of image mode
(rekd_jax.evaluation.linear).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rekd_jax.core import parallel
from rekd_jax.core.parallel import AXIS_NAME as AXIS
from rekd_jax.evaluation import linear, scoring


def shard_for_devices(
    arrays: Mapping[str, np.ndarray], num_devices: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Split rows into `num_devices` equal shards (D, n_d, ...), zero-padded, plus their mask."""
    n = len(next(iter(arrays.values())))
    per = max(1, -(-n // num_devices))
    out = {}
    for name, a in arrays.items():
        padded = np.zeros((num_devices * per,) + a.shape[1:], a.dtype)
        padded[:n] = a
        out[name] = padded.reshape((num_devices, per) + a.shape[1:])
    mask = np.zeros((num_devices * per,), bool)
    mask[:n] = True
    return out, mask.reshape(num_devices, per)


def epoch_indices(
    mask: np.ndarray, steps: int, per_device_batch: int, seed: int, epoch: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled row indices and validity, each (D, steps, b), for one epoch of fast mode.

    Every device visits each of its real rows exactly once, in an order seeded by (seed, epoch,
    process); the remaining slots are marked invalid (they contribute nothing).
    """
    num_devices = mask.shape[0]
    if int(mask.sum(axis=1).max()) > steps * per_device_batch:
        raise ValueError("epoch_indices: steps * per_device_batch is smaller than a shard")
    rng = np.random.default_rng([seed, epoch, jax.process_index()])
    idx = np.zeros((num_devices, steps * per_device_batch), np.int32)
    valid = np.zeros_like(idx, dtype=bool)
    for d in range(num_devices):
        perm = rng.permutation(np.flatnonzero(mask[d]))
        idx[d, : len(perm)] = perm
        valid[d, : len(perm)] = True
    shape = (num_devices, steps, per_device_batch)
    return idx.reshape(shape), valid.reshape(shape)


def _device_epoch(tx: optax.GradientTransformation, head_names: list[str]) -> Callable:
    """(state, device-resident data, idx, valid) -> (state, mean loss): one epoch of fast mode
    on one device, a `lax.scan` over its steps (pmapped over AXIS)."""

    def device_epoch(state, data, idx, valid):
        def step(state, inputs):
            rows, ok = inputs
            feats = {k: data[k][rows] for k in head_names}
            batch_mask = data["mask"][rows] & ok
            count = jax.lax.psum(jnp.sum(batch_mask.astype(jnp.float32)), AXIS)
            (loss, (_, stats)), grads = jax.value_and_grad(linear.masked_loss, has_aux=True)(
                state.params,
                feats,
                data["label"][rows],
                batch_mask,
                jnp.maximum(count, 1.0),
                state.stats,
                AXIS,
            )
            grads = jax.lax.psum(grads, AXIS)
            return linear.apply_gradients(state, grads, tx, stats), jax.lax.psum(loss, AXIS)

        state, losses = jax.lax.scan(step, state, (idx, valid))
        return state, jnp.mean(losses)

    return device_epoch


def train_on_features(
    features: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    num_classes: int,
    block,
    batch_size: int,
    seed: int,
    checkpointer=None,
    writer=None,
    checkpoint_every_epochs: int = 1,
    name: str = "probe",
    signature: Mapping[str, Any] | None = None,
) -> dict:
    """Train one head per feature array on cached features (fast mode); returns host params.

    Args:
      features: {head name: (n, ...) host array} of this process's training examples.
      labels: (n,) int labels.
      num_classes: classifier width.
      block: protocol config (epochs, learning_rate, schedule, milestones, decay_factor,
        warmup_epochs, momentum, nesterov, weight_decay, init_std, and optionally init and
        head_bn).
      batch_size: global batch size (a multiple of jax.device_count()).
      seed: head initialisation and per-epoch shuffling.
      checkpointer / writer: `core.checkpoint.Checkpointer` / `core.logging` writer
        (None: no checkpoints / logs).
      signature: what identifies the run; resuming a checkpoint of another run is refused.
    """
    num_devices = jax.local_device_count()
    per_device = scoring.per_device_batch_size(batch_size, f"{name} batch_size")
    n = len(labels)
    if n == 0:
        raise ValueError(f"{name}: no training features")
    flat = {k: np.asarray(v, np.float32) for k, v in features.items()}
    shards, mask = shard_for_devices({**flat, "label": np.asarray(labels, np.int32)}, num_devices)
    # Same number of steps on every device of every process (the gradient psum needs it).
    rows_per_device = int(scoring.gather_rows(np.array([mask.shape[1]])).max())
    steps = max(1, -(-rows_per_device // per_device))
    tx = linear.sgd(block, steps)
    state = parallel.replicate(
        linear.init_probe(
            jax.random.PRNGKey(seed),
            {k: v.shape[1:] for k, v in flat.items()},
            num_classes,
            block,
            tx,
        ),
        AXIS,
    )
    # Device-resident shards: a pmapped identity leaves shard d on local device d.
    resident = jax.pmap(lambda x: x)({**shards, "mask": mask})

    epoch_fn = jax.pmap(_device_epoch(tx, sorted(flat)), axis_name=AXIS, donate_argnums=(0,))

    def run_epoch(state, epoch):
        idx, valid = epoch_indices(mask, steps, per_device, seed, epoch)
        state, loss = epoch_fn(state, resident, idx, valid)
        return state, {"train_loss": float(jax.device_get(loss)[0])}

    loop = linear.epoch_loop_of(
        block, checkpointer, writer, checkpoint_every_epochs, name, signature
    )
    return linear.trained_heads(loop.run(state, run_epoch))
