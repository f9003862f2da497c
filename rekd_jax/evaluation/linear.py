"""Linear classifiers on frozen features: the probe engine of the linear and conv-layer protocols.

A probe is a dict of heads, one linear layer per feature name ({'features': ...} for the linear
protocol, {'conv1': ..., 'conv5': ...} for the AlexNet conv protocol); all heads train in one
run on the same batches and their losses are summed (the features are frozen, so the heads do
not interact). With block.head_bn a non-affine BatchNorm normalises each head's input first:
per channel (the last axis) over the batch and, for pooled conv maps (b, s, s, C), over the
s x s positions too -- PyTorch's BatchNorm2d(C, affine=False) of RotNet's classifiers (batch
statistics over the real rows of the global batch while training, running averages with
momentum 0.1 and the unbiased variance for scoring, eps 1e-5). Head init (block.init):
'normal' N(0, init_std^2) (MoCo main_lincls) or 'fan_out' N(0, 2 / num_classes) (RotNet's
LinearClassifier.initilize); biases start at 0. Two ways to feed it:

* fast mode (`rekd_jax.evaluation.feature_probe.train_on_features`): features are extracted
  once without augmentation and kept on the devices, each device holding its own shard; one
  pmapped call runs a whole epoch (`lax.scan` over steps), so the probe trains in seconds.
* image mode (`train_on_images`): the MoCo protocol proper; every step augments a batch of
  uint8 images (RandomResizedCrop + flip), runs the frozen backbone (BatchNorm in eval mode) and
  updates the heads.

Both checkpoint after every epoch with `core.checkpoint.Checkpointer` (probe state + epoch
+ data-iterator state) and resume from the latest checkpoint when rerun.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from rekd_jax.core import parallel
from rekd_jax.core.parallel import AXIS_NAME as AXIS
from rekd_jax.data import pipeline as data_pipeline
from rekd_jax.evaluation import epoch_loop
from rekd_jax.readout import features as features_lib


@flax.struct.dataclass
class ProbeState:
    """Everything that changes while a probe trains (a pytree: checkpointed as is)."""

    params: Any
    opt_state: Any
    step: jax.Array
    stats: Any = flax.struct.field(default_factory=dict)  # head BatchNorm running averages


HEAD_INITS = ("normal", "fan_out")
BN_MOMENTUM = 0.1  # PyTorch's BatchNorm default
BN_EPSILON = 1e-5


def init_heads(
    rng: jax.Array,
    feature_dims: Mapping[str, int],
    num_classes: int,
    init_std: float = 0.01,
    init: str = "normal",
) -> dict:
    """One linear layer per feature name, zero bias; kernel ~ N(0, init_std^2) ('normal',
    MoCo's init) or N(0, 2 / num_classes) ('fan_out', RotNet's)."""
    if init not in HEAD_INITS:
        raise ValueError(f"head init {init!r} is unknown; use one of {HEAD_INITS}")
    std = float(init_std) if init == "normal" else float(np.sqrt(2.0 / num_classes))
    keys = jax.random.split(rng, len(feature_dims))
    return {
        name: {
            "kernel": std * jax.random.normal(key, (dim, num_classes), jnp.float32),
            "bias": jnp.zeros((num_classes,), jnp.float32),
        }
        for key, (name, dim) in zip(keys, sorted(feature_dims.items()))
    }


def init_head_stats(channels: Mapping[str, int]) -> dict:
    """Running mean 0 / variance 1 of each head's non-affine BatchNorm (PyTorch's start)."""
    return {
        name: {"mean": jnp.zeros((c,), jnp.float32), "var": jnp.ones((c,), jnp.float32)}
        for name, c in sorted(channels.items())
    }


def _linear(head: Mapping, x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1).astype(jnp.float32) @ head["kernel"] + head["bias"]


def _normalise(x: jax.Array, mean: jax.Array, var: jax.Array) -> jax.Array:
    return (x - mean) * jax.lax.rsqrt(var + BN_EPSILON)


def head_logits(params: Mapping, features: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Logits of every head on its features (scoring). A head holding 'bn_mean' / 'bn_var'
    (trained with head_bn) normalises its input with those running averages first."""
    out = {}
    for name, head in params.items():
        x = features[name].astype(jnp.float32)
        if "bn_mean" in head:
            x = _normalise(x, head["bn_mean"], head["bn_var"])
        out[name] = _linear(head, x)
    return out


def batch_norm_train(
    x: jax.Array, mask: jax.Array, stats: Mapping, axis_name: str | None
) -> tuple[jax.Array, dict]:
    """Non-affine BatchNorm in train mode over the real (masked-in) rows of the global batch.

    Statistics per channel (last axis) over rows and any spatial axes; returns the normalised x
    and the updated running {'mean', 'var'} (momentum 0.1, unbiased variance, as PyTorch).
    """
    x = x.astype(jnp.float32)
    reduce_axes = tuple(range(x.ndim - 1))
    weight = mask.astype(jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))

    def total(v):
        v = jnp.sum(v, axis=reduce_axes)
        return v if axis_name is None else jax.lax.psum(v, axis_name)

    count = jnp.maximum(total(jnp.broadcast_to(weight, x.shape[:-1] + (1,)))[0], 1.0)
    mean = total(x * weight) / count
    var = total(jnp.square(x - mean) * weight) / count
    unbiased = var * count / jnp.maximum(count - 1.0, 1.0)
    new = {
        "mean": (1 - BN_MOMENTUM) * stats["mean"] + BN_MOMENTUM * mean,
        "var": (1 - BN_MOMENTUM) * stats["var"] + BN_MOMENTUM * unbiased,
    }
    return _normalise(x, mean, var), new


def masked_loss(
    params: Mapping,
    features: Mapping,
    labels: jax.Array,
    mask: jax.Array,
    denominator: jax.Array,
    stats: Mapping | None = None,
    axis_name: str | None = None,
) -> tuple[jax.Array, tuple[dict, dict]]:
    """Sum over heads of the cross-entropy summed over masked-in rows / `denominator`.

    With `denominator` = the number of real rows in the *global* batch and gradients summed
    across devices, every real example weighs the same and padding weighs nothing. `stats`
    (head BatchNorm running averages; empty or None: no head BatchNorm) are updated from the
    global batch over `axis_name`. Returns (loss, (per-head losses, new stats)).
    """
    mask = mask.astype(jnp.float32)
    stats = stats or {}
    total = 0.0
    per_head, new_stats = {}, {}
    for name, head in params.items():
        x = features[name]
        if name in stats:
            x, new_stats[name] = batch_norm_train(x, mask, stats[name], axis_name)
        logits = _linear(head, x)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        per_head[name] = jnp.sum(ce * mask) / denominator
        total = total + per_head[name]
    return total, (per_head, new_stats)


def trained_heads(state: ProbeState) -> dict:
    """Host head params of a trained state, each head's BatchNorm averages merged in as
    'bn_mean' / 'bn_var' (what `head_logits` scores with)."""
    host = jax.device_get(flax.jax_utils.unreplicate(state))
    heads = {name: dict(head) for name, head in host.params.items()}
    for name, s in (host.stats or {}).items():
        heads[name].update(bn_mean=s["mean"], bn_var=s["var"])
    return heads


def init_probe(
    rng: jax.Array,
    shapes: Mapping[str, tuple],
    num_classes: int,
    block,
    tx: optax.GradientTransformation,
) -> ProbeState:
    """A fresh probe state for features of the given per-example shapes: heads as block.init /
    block.init_std ask, head BatchNorm statistics when block.head_bn."""
    dims = {k: int(np.prod(v)) for k, v in shapes.items()}
    params = init_heads(
        rng, dims, num_classes, float(block.init_std), str(block.get("init", "normal"))
    )
    stats = (
        init_head_stats({k: int(v[-1]) for k, v in shapes.items()})
        if bool(block.get("head_bn", False))
        else {}
    )
    return init_state(params, tx, stats)


# From this peak lr on, heads on unnormalised features (head_bn off: MoCo's lr 30) start with
# losses in the hundreds or thousands; large_loss_note says so once, before epoch 1.
LARGE_PROBE_LR = 10.0


def large_loss_note(name: str, block) -> str | None:
    """The one-time log note of a probe that trains on unnormalised features at a large lr
    (the MoCo protocol), so that its first losses are not read as a divergence; None for
    other probes."""
    lr = float(block.learning_rate)
    if bool(block.get("head_bn", False)) or lr < LARGE_PROBE_LR:
        return None
    return (
        f"{name}: the heads train on unnormalised features at lr {lr:g} (the MoCo protocol), "
        "so first-epoch training losses in the hundreds or thousands are expected; they fall "
        "over the following epochs (a non-finite loss stops the probe)"
    )


def learning_rate_schedule(
    block, steps_per_epoch: int, learning_rate: float | None = None
) -> optax.Schedule:
    """The schedule a protocol block asks for, in optimizer steps.

    block.schedule: 'cosine' (to 0 over block.epochs), 'step' (times block.decay_factor at each
    of block.milestones, in epochs) or 'constant'; optional linear warm-up of
    block.warmup_epochs.
    """
    lr = float(block.learning_rate if learning_rate is None else learning_rate)
    total = max(1, int(block.epochs) * steps_per_epoch)
    warmup = int(round(float(block.get("warmup_epochs", 0)) * steps_per_epoch))
    if block.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, max(1, total - warmup))
    elif block.schedule == "step":
        main = optax.piecewise_constant_schedule(
            lr,
            {
                int(m) * steps_per_epoch - warmup: float(block.decay_factor)
                for m in block.milestones
            },
        )
    elif block.schedule == "constant":
        main = optax.constant_schedule(lr)
    else:
        raise ValueError(f"schedule={block.schedule!r}: use 'cosine', 'step' or 'constant'")
    if warmup <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def sgd(
    block, steps_per_epoch: int, learning_rate: float | None = None
) -> optax.GradientTransformation:
    """PyTorch-style SGD: weight decay added to the gradient, then (Nesterov) momentum."""
    schedule = learning_rate_schedule(block, steps_per_epoch, learning_rate)
    parts = []
    if float(block.weight_decay) > 0:
        parts.append(optax.add_decayed_weights(float(block.weight_decay)))
    parts.append(
        optax.sgd(schedule, momentum=float(block.momentum) or None, nesterov=bool(block.nesterov))
    )
    return optax.chain(*parts)


def init_state(params: Any, tx: optax.GradientTransformation, stats: Any = None) -> ProbeState:
    return ProbeState(
        params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32), stats=stats or {}
    )


def apply_gradients(
    state: ProbeState, grads: Any, tx: optax.GradientTransformation, stats: Any = None
) -> ProbeState:
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return ProbeState(
        params=optax.apply_updates(state.params, updates),
        opt_state=opt_state,
        step=state.step + 1,
        stats=state.stats if stats is None else stats,
    )


def epoch_loop_of(
    block, checkpointer, writer, every_epochs: int, name: str, signature
) -> epoch_loop.EpochLoop:
    """The resumable loop of block.epochs epochs that both modes run (and the note on a large
    learning rate, logged once)."""
    if note := large_loss_note(name, block):
        logging.info("%s", note)
    return epoch_loop.EpochLoop(
        checkpointer,
        writer,
        num_epochs=int(block.epochs),
        every_epochs=every_epochs,
        name=name,
        signature=signature,
    )


# --------------------------------------------------------------------------- image mode


def _device_step(feature_fn, train_view: Callable, tx, base_key: jax.Array) -> Callable:
    """(state, frozen, x, labels, mask, resident) -> (state, loss): one step of image mode on
    one device: augment, run the frozen backbone, update the heads (pmapped over AXIS)."""

    def device_step(state, frozen, x, labels, mask, resident):
        # Per-step, per-device augmentation key: reproducible on resume (derived from the step).
        key = jax.random.fold_in(jax.random.fold_in(base_key, state.step), jax.lax.axis_index(AXIS))
        images = train_view(key, features_lib.images_on_device(x, resident))
        feats = jax.lax.stop_gradient(feature_fn(frozen, images))
        count = jax.lax.psum(jnp.sum(mask.astype(jnp.float32)), AXIS)
        (loss, (_, stats)), grads = jax.value_and_grad(masked_loss, has_aux=True)(
            state.params, feats, labels, mask, jnp.maximum(count, 1.0), state.stats, AXIS
        )
        grads = jax.lax.psum(grads, AXIS)
        return apply_gradients(state, grads, tx, stats), jax.lax.psum(loss, AXIS)

    return device_step


def train_on_images(
    feature_fn,
    variables: Any,
    pipeline,
    *,
    train_view: Callable,
    image_size: int,
    num_classes: int,
    block,
    seed: int,
    checkpointer=None,
    writer=None,
    checkpoint_every_epochs: int = 1,
    name: str = "probe",
    signature: Mapping[str, Any] | None = None,
) -> dict:
    """Train one head per named feature of a frozen backbone on augmented images.

    Args:
      feature_fn: (variables, float images) -> {head name: (b, ...)}; BatchNorm in eval mode.
      variables: unreplicated frozen backbone variables.
      pipeline: training `rekd_jax.data.pipeline` (shuffled; get_state / set_state for resume;
        steps_per_epoch).
      train_view: (rng, uint8 (b, H, W, 3)) -> float images (RandomResizedCrop + flip).
      image_size: side of the training crops (for the head widths).
      block: protocol config (epochs, learning_rate, schedule, ..., init_std).
    Returns the trained heads (host; see `trained_heads`).
    """
    steps = int(pipeline.steps_per_epoch)
    if steps < 1:
        raise ValueError(f"{name}: the training split gives no full batch; lower batch_size")
    tx = sgd(block, steps)
    shapes = features_lib.feature_shapes(feature_fn, variables, image_size)
    state = parallel.replicate(
        init_probe(jax.random.PRNGKey(seed), shapes, num_classes, block, tx), AXIS
    )
    frozen = flax.jax_utils.replicate(variables)
    resident = data_pipeline.replicate_resident(pipeline)

    step_fn = jax.pmap(
        _device_step(feature_fn, train_view, tx, jax.random.PRNGKey(seed + 1)),
        axis_name=AXIS,
        donate_argnums=(0,),
    )
    iterator = None

    def run_epoch(state, epoch):
        nonlocal iterator
        if iterator is None:  # created after a resume has restored the pipeline state
            iterator = iter(pipeline)
        losses = []
        for _ in range(steps):
            batch = next(iterator)
            labels = batch["label"]
            mask = batch.get("mask", np.ones(np.shape(labels), bool))
            state, loss = step_fn(
                state, frozen, features_lib.batch_images(batch), labels, mask, resident
            )
            losses.append(loss)
        return state, {"train_loss": float(np.mean(jax.device_get(losses), axis=0)[0])}

    loop = epoch_loop_of(block, checkpointer, writer, checkpoint_every_epochs, name, signature)
    return trained_heads(
        loop.run(state, run_epoch, data_state=pipeline.get_state, set_data_state=pipeline.set_state)
    )
