"""The pre-training step for MoCo v2, SEED and ReKD, written per device for jax.pmap.

Inside `pmap(..., axis_name='batch')` each device holds `b` images of the global batch of
N = D*b (device-major). One step:

1. Augment: two views per image, each image's randomness drawn from its *global* index, so the
   result does not depend on how the global batch is laid out over devices or hosts.
2. Key encoders (EMA copies, updated first, as MoCo does) run with shuffle-BN: the global batch
   is permuted across devices, each device's slice is split into `splits_per_device` groups
   with their own BatchNorm statistics (MoCo's SplitBN, vmapped), and the outputs are
   un-permuted. D devices x S splits equals 1 device x D*S splits.
3. The query/student encoder's BatchNorm follows config.student_bn (`student_forward`):
   'global' = cross-replica over the global batch (axis 'batch'), 'per_device' = statistics of
   each device's b images, 'split:N' = N groups over the global batch (MoCo's SplitBN; N/D per
   device, vmapped). An offline teacher runs with BN in eval mode; an online teacher's query
   encoder (cross-replica BN) is trained by its own MoCo v2 loss.
4. Loss per method (rekd_jax.methods), gradients averaged across devices (pmean), SGD update.

Total loss: MoCo v2: L_inst. SEED: L_seed. ReKD: L_rel + lambda_inst L_inst (inside
methods.rekd) + [online teacher] L_t, where L_t is methods.mocov2.loss_fn on the teacher's
query/key embeddings with the teacher's own queue. Teacher embeddings enter the student loss
through stop_gradient, so the teacher never gets gradients from the student loss. For an online
teacher the relation targets t come from its momentum (key) encoder's embedding of v2 (the
forward that also gives its MoCo key).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from rekd_jax.data import augment
from rekd_jax.training import state as state_lib

AXIS = state_lib.AXIS_NAME


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Everything static the step needs (hashable by identity; built once per run)."""
    method: str
    teacher_mode: str | None
    modules: state_lib.Modules
    method_cfg: ml_collections.ConfigDict
    teacher_mocov2_cfg: ml_collections.ConfigDict | None
    augment_cfg: ml_collections.ConfigDict
    image_size: int
    dtype: Any
    tx: optax.GradientTransformation
    schedule: Callable
    ema_momentum: float
    global_batch_size: int
    num_devices: int
    splits_per_device: int
    student_bn_groups_per_device: int = 0  # 0: cross-replica BN ('global')


def make_step_config(config: ml_collections.ConfigDict, modules: state_lib.Modules, tx, schedule,
                     global_batch_size: int, num_devices: int) -> StepConfig:
    return StepConfig(
        method=config.method, teacher_mode=state_lib.teacher_mode(config), modules=modules,
        method_cfg=config[config.method],
        teacher_mocov2_cfg=config.mocov2 if state_lib.teacher_mode(config) == "online" else None,
        augment_cfg=config.data.augment, image_size=config.data.image_size,
        dtype=state_lib.compute_dtype(config), tx=tx, schedule=schedule,
        ema_momentum=config.ema_momentum, global_batch_size=global_batch_size,
        num_devices=num_devices,
        splits_per_device=key_bn_splits(config, num_devices) // num_devices,
        student_bn_groups_per_device=student_bn_groups(config.student_bn, num_devices,
                                                       global_batch_size) // num_devices)


def student_bn_groups(student_bn: str, num_devices: int, global_batch_size: int) -> int:
    """Total BatchNorm groups of the query/student forward over the global batch: 0 for
    'global' (cross-replica), num_devices for 'per_device', N for 'split:N'.

    Raises ValueError naming config.student_bn and the fix when the groups do not tile the
    devices and the global batch.
    """
    fix = ("use 'global', 'per_device' or 'split:N' with N a multiple of the device count "
           f"({num_devices}) dividing global_batch_size ({global_batch_size}), e.g. 'split:"
           f"{max(1, global_batch_size // 32)}' for 32 images per group as MoCo/SEED have")
    if student_bn == "global":
        return 0
    if student_bn == "per_device":
        return num_devices
    head, _, count = str(student_bn).partition(":")
    if head != "split" or not count.isdigit() or int(count) < 1:
        raise ValueError(f"config.student_bn={student_bn!r} is unknown; {fix}")
    groups = int(count)
    if groups % num_devices or global_batch_size % groups:
        raise ValueError(f"config.student_bn={student_bn!r}: {groups} groups do not tile "
                         f"{num_devices} devices x a global batch of {global_batch_size}; {fix}")
    return groups


def student_forward(cfg: StepConfig, variables, x, dropout_rng):
    """(out, mutated) of the student/query encoder on this device's x in train mode, with the
    BatchNorm statistics config.student_bn asks for (see the module docstring)."""
    mods, groups = cfg.modules, cfg.student_bn_groups_per_device
    if groups == 0:
        return mods.student.apply(variables, x, train=True, mutable=["batch_stats"],
                                  rngs={"dropout": dropout_rng})
    b = x.shape[0]

    def forward(xs, drop_key):  # student_key: the same encoder with per-call (local) BN
        return mods.student_key.apply(variables, xs, train=True, mutable=["batch_stats"],
                                      rngs={"dropout": drop_key})

    out, mutated = jax.vmap(forward)(x.reshape((groups, b // groups) + x.shape[1:]),
                                     jax.random.split(dropout_rng, groups))
    out = jax.tree_util.tree_map(lambda v: v.reshape((b,) + v.shape[2:]), out)
    return out, jax.tree_util.tree_map(lambda v: v.mean(0), mutated)


def key_bn_splits(config: ml_collections.ConfigDict, num_devices: int) -> int:
    """Total BN groups of the key encoders over the global batch (0 = auto: >= 8, one or more
    per device)."""
    if config.key_bn_splits:
        return int(config.key_bn_splits)
    return num_devices * max(1, -(-8 // num_devices))


def _local_slice(x_global, b):
    return jax.lax.dynamic_slice_in_dim(x_global, jax.lax.axis_index(AXIS) * b, b, axis=0)


def two_views(cfg: StepConfig, rng, images):
    """(v1, v2) of this device's images; randomness keyed by the global example index."""
    b = images.shape[0]
    keys = _local_slice(jax.random.split(rng, cfg.global_batch_size), b)

    def one(key, image):
        v1, v2 = augment.two_views(key, image[None], cfg.augment_cfg, cfg.image_size, cfg.dtype)
        return v1[0], v2[0]

    return jax.vmap(one)(keys, images)


def shuffled_key_forward(cfg: StepConfig, module, variables, x, rng, dropout_rng):
    """Key-encoder embeddings of x with shuffle-BN / SplitBN; returns (emb [b, d], batch_stats).

    The new BN statistics are averaged over splits and devices, so replicas stay identical.
    """
    b = x.shape[0]
    n = cfg.global_batch_size
    x_all = jax.lax.all_gather(x, AXIS, tiled=True)
    perm = jax.random.permutation(rng, n)
    x_mine = _local_slice(x_all[perm], b)
    s = cfg.splits_per_device
    x_split = x_mine.reshape((s, b // s) + x_mine.shape[1:])

    def forward(xs, drop_key):
        out, mutated = module.apply(variables, xs, train=True, mutable=["batch_stats"],
                                    rngs={"dropout": drop_key})
        return out["embedding"], mutated["batch_stats"]

    emb, stats = jax.vmap(forward)(x_split, jax.random.split(dropout_rng, s))
    emb = emb.reshape((b,) + emb.shape[2:]).astype(jnp.float32)
    stats = jax.lax.pmean(jax.tree_util.tree_map(lambda v: v.mean(0), stats), AXIS)
    emb_all = jax.lax.all_gather(emb, AXIS, tiled=True)
    emb_all = emb_all[jnp.argsort(perm)]
    return _local_slice(emb_all, b), stats


def ema(old, new, momentum):
    return jax.tree_util.tree_map(lambda o, n: momentum * o + (1.0 - momentum) * n, old, new)


def train_step(cfg: StepConfig, state: state_lib.TrainState, batch: dict,
               teacher_variables: Any, resident_images: Any):
    """One optimisation step on this device's shard. Returns (new_state, metrics)."""
    from rekd_jax.methods import mocov2
    method = state_lib.method_module(cfg.method)
    mods = cfg.modules
    rng = jax.random.fold_in(state.rng, state.step)
    (aug_rng, shuffle_rng, teacher_shuffle_rng, loss_rng, teacher_loss_rng,
     dropout_rng) = jax.random.split(rng, 6)
    # Stochastic depth / dropout (EfficientNet): a key per device and per forward.
    dropout_rng = jax.random.fold_in(dropout_rng, jax.lax.axis_index(AXIS))
    student_drop, teacher_drop, key_drop, teacher_key_drop = jax.random.split(dropout_rng, 4)
    images = batch["image"] if "image" in batch else resident_images[batch["index"]]
    labels = batch["label"]
    v1, v2 = two_views(cfg, aug_rng, images)

    # Momentum encoders first (MoCo order: EMA of the current weights, then keys).
    ema_params = {part: ema(state.ema_params[part], state.params[part], cfg.ema_momentum)
                  for part in state.ema_params}
    ema_batch_stats = dict(state.ema_batch_stats)
    targets = {}
    if cfg.method != "seed":
        targets["k"], ema_batch_stats["student"] = shuffled_key_forward(
            cfg, mods.student_key, {"params": ema_params["student"],
                                    "batch_stats": state.ema_batch_stats["student"]},
            v2, shuffle_rng, key_drop)
    if cfg.teacher_mode == "offline":
        view = v1 if cfg.method == "seed" else v2
        t = mods.teacher.apply(teacher_variables, view, train=False)["embedding"]
        targets["t"] = jax.lax.stop_gradient(t.astype(jnp.float32))
    elif cfg.teacher_mode == "online":
        targets["k_t"], ema_batch_stats["teacher"] = shuffled_key_forward(
            cfg, mods.teacher_key, {"params": ema_params["teacher"],
                                    "batch_stats": state.ema_batch_stats["teacher"]},
            v2, teacher_shuffle_rng, teacher_key_drop)
        targets["t"] = targets["k_t"]

    def loss_fn(params):
        out, mutated = student_forward(
            cfg, {"params": params["student"], "batch_stats": state.batch_stats["student"]},
            v1, student_drop)
        new_stats = {"student": mutated["batch_stats"]}
        z = out["embedding"].astype(jnp.float32)
        if cfg.method == "mocov2":
            emb = {"q": z, "k": targets["k"]}
        elif cfg.method == "seed":
            emb = {"z_s": z, "z_t": targets["t"]}
        else:
            emb = {"q": z, "k": targets["k"], "labels": labels}
            if "t" in targets:
                emb["t"] = targets["t"]
        loss, (metrics, method_state) = method.loss_fn(
            emb, state.method_state, cfg.method_cfg, rng=loss_rng, axis_name=AXIS)
        metrics = dict(metrics)
        teacher_method_state = state.teacher_method_state
        if cfg.teacher_mode == "online":
            t_out, t_mutated = mods.teacher.apply(
                {"params": params["teacher"], "batch_stats": state.batch_stats["teacher"]},
                v1, train=True, mutable=["batch_stats"], rngs={"dropout": teacher_drop})
            new_stats["teacher"] = t_mutated["batch_stats"]
            t_loss, (t_metrics, teacher_method_state) = mocov2.loss_fn(
                {"q": t_out["embedding"].astype(jnp.float32), "k": targets["k_t"]},
                state.teacher_method_state, cfg.teacher_mocov2_cfg, rng=teacher_loss_rng,
                axis_name=AXIS)
            metrics.update({f"teacher/{k}": v for k, v in t_metrics.items()})
            metrics["student_loss"] = metrics["loss"]
            metrics["loss"] = metrics["loss"] + t_metrics["loss"]
            loss = loss + t_loss
        return loss, (metrics, new_stats, method_state, teacher_method_state)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, (metrics, new_stats, method_state, teacher_method_state)), grads = grad_fn(state.params)
    grads = jax.lax.pmean(grads, AXIS)
    new_stats = jax.lax.pmean(new_stats, AXIS)
    updates, opt_state = cfg.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {k: jax.lax.pmean(jnp.asarray(v, jnp.float32), AXIS) for k, v in metrics.items()}
    metrics["learning_rate"] = cfg.schedule(state.step)
    metrics["grad_norm"] = optax.global_norm(grads)
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=new_stats, ema_params=ema_params,
        ema_batch_stats=ema_batch_stats, opt_state=opt_state, method_state=method_state,
        teacher_method_state=teacher_method_state)
    return new_state, metrics


def make_pmapped_step(cfg: StepConfig):
    """pmap over local devices; the state buffers are donated (updated in place)."""
    def step(state, batch, teacher_variables, resident_images):
        return train_step(cfg, state, batch, teacher_variables, resident_images)
    return jax.pmap(step, axis_name=AXIS, donate_argnums=(0,))
