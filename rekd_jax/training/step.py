"""The pre-training step of every method, written per device for jax.pmap.

Inside `pmap(..., axis_name='batch')` each device holds `b` images of the global batch of
N = D*b (device-major). One step:

1. Augment: two views per image, each image's randomness drawn from its *global* index, so the
   result does not depend on how the global batch is laid out over devices or hosts.
2. Key encoders (EMA copies, updated first, as MoCo does) run with shuffle-BN
   (`shuffled_key_forward`, in the way config.key_shuffle says; docs/scaling.md compares the
   two ways).
3. The query/student encoder's BatchNorm follows config.student_bn (`student_forward`):
   'global' = cross-replica over the global batch (axis 'batch'), 'per_device' = statistics of
   each device's b images, 'split:N' = N groups over the global batch (MoCo's SplitBN; N/D per
   device, vmapped). An offline teacher runs with BN in eval mode; an online teacher's query
   encoder (cross-replica BN) is trained by its own method's loss.
4. Loss of the method (rekd_jax.methods), gradients averaged across devices (pmean), SGD
   update. The method module says what runs: the key encoder or not (KEY_ENCODER), and how its
   loss reads the forward outputs (loss_inputs); the run's methods.TeacherPlan (decided once,
   carried by the Modules) says which teacher runs, which view an offline teacher embeds (v1,
   v2, or a third, weakly augmented view) and which method trains an online teacher.

An online teacher is trained alongside by the loss of the method config.teacher.method names
(with that method's block and the teacher's own method state) on its query (v1) and
momentum-encoder key (v2); that key is also the teacher embedding the student's loss reads.
Teacher embeddings enter the student loss through stop_gradient, so the teacher never gets
gradients from the student loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from rekd_jax import methods
from rekd_jax.core.parallel import AXIS_NAME
from rekd_jax.data import augment
from rekd_jax.training import state as state_lib


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Everything static the step needs (hashable by identity; built once per run)."""

    method: str
    teacher: methods.TeacherPlan
    modules: state_lib.Modules
    method_cfg: ml_collections.ConfigDict
    teacher_method_cfg: ml_collections.ConfigDict | None  # the online teacher's method block
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
    key_shuffle: str = "all_gather"
    key_shuffle_devices: int = 0  # P of key_shuffle='ppermute' (0: 'all_gather' / 1 device)


def make_step_config(
    config: ml_collections.ConfigDict,
    modules: state_lib.Modules,
    tx,
    schedule,
    global_batch_size: int,
    num_devices: int,
) -> StepConfig:
    """The step's static configuration; the teacher plan is the one the Modules carry
    (decided from the config when there are none: key-encoder tests and benchmarks)."""
    plan = methods.teacher_plan(config) if modules is None else modules.teacher_plan
    return StepConfig(
        method=config.method,
        teacher=plan,
        modules=modules,
        method_cfg=config[config.method],
        teacher_method_cfg=config[plan.method] if plan.mode == "online" else None,
        augment_cfg=config.data.augment,
        image_size=config.data.image_size,
        dtype=state_lib.compute_dtype(config),
        tx=tx,
        schedule=schedule,
        ema_momentum=config.ema_momentum,
        global_batch_size=global_batch_size,
        num_devices=num_devices,
        splits_per_device=key_bn_splits(config, num_devices) // num_devices,
        student_bn_groups_per_device=student_bn_groups(
            config.student_bn, num_devices, global_batch_size
        )
        // num_devices,
        key_shuffle=config.key_shuffle,
        key_shuffle_devices=key_shuffle_devices(config, num_devices, global_batch_size),
    )


def student_bn_groups(student_bn: str, num_devices: int, global_batch_size: int) -> int:
    """Total BatchNorm groups of the query/student forward over the global batch: 0 for
    'global' (cross-replica), num_devices for 'per_device', N for 'split:N'.

    Raises ValueError naming config.student_bn and the fix when the groups do not tile the
    devices and the global batch.
    """
    fix = (
        "use 'global', 'per_device' or 'split:N' with N a multiple of the device count "
        f"({num_devices}) dividing global_batch_size ({global_batch_size}), e.g. 'split:"
        f"{max(1, global_batch_size // 32)}' for 32 images per group as MoCo/SEED have"
    )
    if student_bn == "global":
        return 0
    if student_bn == "per_device":
        return num_devices
    head, _, count = str(student_bn).partition(":")
    if head != "split" or not count.isdigit() or int(count) < 1:
        raise ValueError(f"config.student_bn={student_bn!r} is unknown; {fix}")
    groups = int(count)
    if groups % num_devices or global_batch_size % groups:
        raise ValueError(
            f"config.student_bn={student_bn!r}: {groups} groups do not tile "
            f"{num_devices} devices x a global batch of {global_batch_size}; {fix}"
        )
    return groups


def student_forward(cfg: StepConfig, variables, x, dropout_rng):
    """(out, mutated) of the student/query encoder on this device's x in train mode, with the
    BatchNorm statistics config.student_bn asks for (see the module docstring)."""
    mods, groups = cfg.modules, cfg.student_bn_groups_per_device
    if groups == 0:
        return mods.student.apply(
            variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": dropout_rng}
        )
    b = x.shape[0]

    def forward(xs, drop_key):  # student_key: the same encoder with per-call (local) BN
        return mods.student_key.apply(
            variables, xs, train=True, mutable=["batch_stats"], rngs={"dropout": drop_key}
        )

    out, mutated = jax.vmap(forward)(
        x.reshape((groups, b // groups) + x.shape[1:]), jax.random.split(dropout_rng, groups)
    )
    out = jax.tree_util.tree_map(lambda v: v.reshape((b,) + v.shape[2:]), out)
    return out, jax.tree_util.tree_map(lambda v: v.mean(0), mutated)


def key_bn_splits(config: ml_collections.ConfigDict, num_devices: int) -> int:
    """Total BN groups of the key encoders over the global batch (0 = auto: >= 8, one or more
    per device)."""
    if config.key_bn_splits:
        return int(config.key_bn_splits)
    return num_devices * max(1, -(-8 // num_devices))


def _local_slice(x_global, b):
    return jax.lax.dynamic_slice_in_dim(x_global, jax.lax.axis_index(AXIS_NAME) * b, b, axis=0)


def two_views(cfg: StepConfig, rng, images):
    """(v1, v2) of this device's images; randomness keyed by the global example index."""
    b = images.shape[0]
    keys = _local_slice(jax.random.split(rng, cfg.global_batch_size), b)

    def one(key, image):
        v1, v2 = augment.two_views(key, image[None], cfg.augment_cfg, cfg.image_size, cfg.dtype)
        return v1[0], v2[0]

    return jax.vmap(one)(keys, images)


# fold_in data of the weak view's key: no split of the step key yields it (with or without
# jax_threefry_partitionable), so v1, v2 and every other draw of the step stay as they are.
WEAK_VIEW_STREAM = 0x7765616B  # 'weak'
WEAK_VIEW_OFF = ("jitter_prob", "gray_prob", "blur_prob")  # colour jitter, greyscale, blur


def weak_view(cfg: StepConfig, rng, images):
    """A third view of this device's images (a method's teacher_view 'weak'): the configured
    random resized crop and horizontal flip, no colour jitter, greyscale or blur; randomness
    keyed by the global example index, from its own key (WEAK_VIEW_STREAM)."""
    if images.ndim != 4:
        raise ValueError(
            "the weak teacher view (rekd.miner_view='weak') draws its own crop on the device; "
            "set data.train_crop='device'"
        )
    aug = cfg.augment_cfg
    weak_cfg = {**(aug.to_dict() if hasattr(aug, "to_dict") else aug)}
    weak_cfg.update({field: 0.0 for field in WEAK_VIEW_OFF})
    b = images.shape[0]
    key = jax.random.fold_in(rng, WEAK_VIEW_STREAM)
    keys = _local_slice(jax.random.split(key, cfg.global_batch_size), b)

    def one(key, image):
        height, width = image.shape[:2]
        params = augment.sample_view_params(key, 1, height, width, weak_cfg, cfg.image_size)
        return augment.apply_view(image[None], params, weak_cfg, cfg.image_size, cfg.dtype)[0]

    return jax.vmap(one)(keys, images)


KEY_SHUFFLES = ("all_gather", "ppermute")
AUTO_SHUFFLE_DEVICES = 8  # key_shuffle_devices=0: up to 8, the mixing of MoCo's 8-GPU runs


def check_key_shuffle(config: ml_collections.ConfigDict) -> None:
    """The spelling of config.key_shuffle / key_shuffle_devices (the device count aside)."""
    mode, spread = config.key_shuffle, config.key_shuffle_devices
    if mode not in KEY_SHUFFLES:
        raise ValueError(
            f"config.key_shuffle={mode!r} is unknown; use 'all_gather' (MoCo's "
            "shuffle, the default) or 'ppermute' (cheaper at pod scale, see "
            "docs/scaling.md)"
        )
    if not isinstance(spread, int) or spread < 0:
        raise ValueError(
            f"config.key_shuffle_devices={spread!r} must be an integer >= 0; use 0 (auto)"
        )
    if spread and mode != "ppermute":
        raise ValueError(
            f"config.key_shuffle_devices={spread} is only read by "
            f"key_shuffle='ppermute' (key_shuffle is {mode!r}); set it to 0, or "
            "set key_shuffle='ppermute'"
        )


def key_shuffle_devices(
    config: ml_collections.ConfigDict, num_devices: int, global_batch_size: int
) -> int:
    """P of key_shuffle='ppermute': every key BN group draws its images from P devices (0 for
    'all_gather' and on one device). config.key_shuffle_devices=0 picks the largest P <=
    min(num_devices, 8) with P x (key BN splits per device) dividing the per-device batch.

    Raises ValueError naming the field and the fix for an unknown mode or a P that does not fit.
    """
    check_key_shuffle(config)
    spread = config.key_shuffle_devices
    if config.key_shuffle == "all_gather":
        return 0
    if num_devices == 1:
        if spread:
            raise ValueError(
                f"config.key_shuffle_devices={spread}: there is one device; use "
                "0 (one device shuffles within its key BN splits)"
            )
        return 0
    local = global_batch_size // num_devices
    splits = key_bn_splits(config, num_devices) // num_devices
    fits = [p for p in range(2, num_devices + 1) if local % (p * splits) == 0]
    if spread == 0 and fits:  # auto: the most mixing up to 8 devices (or the least above)
        return max([p for p in fits if p <= AUTO_SHUFFLE_DEVICES] or [min(fits)])
    if spread not in fits:
        choices = (
            f"use 0 (auto) or one of {fits}"
            if fits
            else "change global_batch_size or key_bn_splits, or use key_shuffle='all_gather'"
        )
        raise ValueError(
            f"config.key_shuffle_devices={spread} (0 = auto) does not fit {num_devices} devices "
            f"x {local} images x {splits} key BN splits per device: P must be in "
            f"2..{num_devices} and P x {splits} must divide {local}; {choices}"
        )
    return spread


def shuffled_key_forward(cfg: StepConfig, module, variables, x, rng, dropout_rng):
    """Key-encoder embeddings of x with shuffle-BN / SplitBN; returns (emb [b, d], batch_stats).

    Both modes move the examples so that the BN group a key is normalised in is not the group
    its query saw (the leak MoCo's shuffle-BN removes: He et al. 2020, Sec. 3.3;
    facebookresearch/moco, moco/builder.py `_batch_shuffle_ddp` / `_batch_unshuffle_ddp`), run
    cfg.splits_per_device BN groups per device, and undo the move exactly: every example gets
    its own embedding back. The new BN statistics are averaged over groups and devices, so
    replicas stay identical.

    'all_gather' is MoCo's shuffle: every device all-gathers the global batch, takes its slice
    of one random permutation (the same on all devices, from the shared rng) and all-gathers
    the embeddings back. A key BN group is a uniformly random subset of the global batch: in
    expectation 1/D of it comes from the key's own device (1/8 in MoCo's 8-GPU runs). Each
    device receives (D-1) x b images per step.

    'ppermute': each device permutes its b images at random (its own permutation, from the
    shared rng and its index) and sends chunk k (b/P images) to device (i + k) mod D,
    k = 0..P-1, by P-1 static ring rotations (lax.ppermute; chunk 0 stays); the embeddings go
    back by the inverse rotations. A key BN group holds b/(P S) random images of each of P
    consecutive devices: exactly 1/P of it comes from the key's own device, the fraction MoCo's
    shuffle has in expectation on P devices (P = D = 8: MoCo's setting, stratified). Which
    devices pair up is fixed, which images travel is random every step (and the loader already
    shuffles which images a device holds), so no per-step device permutation is needed. Each
    device sends (P-1)/P x b images per step, whatever D. Not MoCo's shuffle: 'all_gather'
    stays the default.

    One device: both modes are SplitBN with an in-device shuffle (as MoCo's single-GPU
    SplitBatchNorm demo): one random permutation of the b images over the splits.
    """
    s = cfg.splits_per_device

    def forward(x_split):
        def one(xs, drop_key):
            out, mutated = module.apply(
                variables, xs, train=True, mutable=["batch_stats"], rngs={"dropout": drop_key}
            )
            return out["embedding"], mutated.get("batch_stats", {})

        emb, stats = jax.vmap(one)(x_split, jax.random.split(dropout_rng, s))
        stats = jax.lax.pmean(jax.tree_util.tree_map(lambda v: v.mean(0), stats), AXIS_NAME)
        return emb.astype(jnp.float32), stats

    if cfg.key_shuffle_devices:
        return _ppermute_key_forward(cfg, forward, x, rng)
    b = x.shape[0]
    n = cfg.global_batch_size
    x_all = jax.lax.all_gather(x, AXIS_NAME, tiled=True)
    perm = jax.random.permutation(rng, n)
    x_mine = _local_slice(x_all[perm], b)
    emb, stats = forward(x_mine.reshape((s, b // s) + x_mine.shape[1:]))
    emb_all = jax.lax.all_gather(emb.reshape((b,) + emb.shape[2:]), AXIS_NAME, tiled=True)
    emb_all = emb_all[jnp.argsort(perm)]
    return _local_slice(emb_all, b), stats


def _rotate(x, shift: int, num_devices: int):
    """x of device i goes to device (i + shift) mod num_devices (shift 0: stays)."""
    if shift % num_devices == 0:
        return x
    pairs = [(i, (i + shift) % num_devices) for i in range(num_devices)]
    return jax.lax.ppermute(x, AXIS_NAME, pairs)


def _ppermute_key_forward(cfg: StepConfig, forward, x, rng):
    """key_shuffle='ppermute' (see shuffled_key_forward)."""
    d, p, s, b = cfg.num_devices, cfg.key_shuffle_devices, cfg.splits_per_device, x.shape[0]
    c, rest = b // p, x.shape[1:]
    perm = jax.random.permutation(jax.random.fold_in(rng, jax.lax.axis_index(AXIS_NAME)), b)
    chunks = x[perm].reshape((p, c) + rest)
    # received[k]: chunk k of device i - k; BN group t takes part t of every received chunk.
    received = jnp.stack([_rotate(chunks[k], k, d) for k in range(p)])
    groups = received.reshape((p, s, c // s) + rest).swapaxes(0, 1).reshape((s, b // s) + rest)
    emb, stats = forward(groups)
    emb = emb.reshape((s, p, c // s, -1)).swapaxes(0, 1).reshape((p, c, -1))
    returned = jnp.stack([_rotate(emb[k], -k, d) for k in range(p)])
    return returned.reshape((b, -1))[jnp.argsort(perm)], stats


def ema(old, new, momentum):
    return jax.tree_util.tree_map(lambda o, n: momentum * o + (1.0 - momentum) * n, old, new)


class StepKeys(NamedTuple):
    """The random keys of one step, all drawn from fold_in(state.rng, state.step)."""

    step: jax.Array  # the step's own key (the weak teacher view folds its stream into it)
    augment: jax.Array
    shuffle: jax.Array
    teacher_shuffle: jax.Array
    loss: jax.Array
    teacher_loss: jax.Array
    student_dropout: jax.Array  # dropout / stochastic depth: this device's key per forward
    teacher_dropout: jax.Array
    key_dropout: jax.Array
    teacher_key_dropout: jax.Array


def step_keys(state: state_lib.TrainState) -> StepKeys:
    """The step's keys; the dropout keys differ per device (stochastic depth, EfficientNet)."""
    rng = jax.random.fold_in(state.rng, state.step)
    augment_rng, shuffle, teacher_shuffle, loss, teacher_loss, dropout = jax.random.split(rng, 6)
    dropout = jax.random.fold_in(dropout, jax.lax.axis_index(AXIS_NAME))
    return StepKeys(
        rng,
        augment_rng,
        shuffle,
        teacher_shuffle,
        loss,
        teacher_loss,
        *jax.random.split(dropout, 4),
    )


def offline_teacher_forward(cfg: StepConfig, teacher_variables, rng, images, v1, v2) -> dict:
    """The frozen teacher (BN in eval mode) on the view its plan names: its embedding
    'teacher' and pooled backbone features 'teacher_features', both without gradient."""
    view_name = cfg.teacher.view
    view = weak_view(cfg, rng, images) if view_name == "weak" else {"v1": v1, "v2": v2}[view_name]
    out = cfg.modules.teacher.apply(teacher_variables, view, train=False)
    return {
        "teacher": jax.lax.stop_gradient(out["embedding"].astype(jnp.float32)),
        "teacher_features": jax.lax.stop_gradient(out["features"].astype(jnp.float32)),
    }


def forwards_without_gradient(
    cfg: StepConfig, method, state, ema_params, teacher_variables, keys: StepKeys, images, v1, v2
):
    """The forward outputs no gradient flows through: the student's momentum (key) encoder on v2
    (a method with KEY_ENCODER) and the teacher's embedding (the frozen teacher, or the online
    teacher's momentum encoder on v2). Returns (forward, ema_batch_stats)."""
    mods = cfg.modules
    ema_batch_stats = dict(state.ema_batch_stats)
    forward = {}
    if method.KEY_ENCODER:
        forward["key"], ema_batch_stats["student"] = shuffled_key_forward(
            cfg,
            mods.student_key,
            {"params": ema_params["student"], "batch_stats": state.ema_batch_stats["student"]},
            v2,
            keys.shuffle,
            keys.key_dropout,
        )
    if cfg.teacher.mode == "offline":
        forward.update(offline_teacher_forward(cfg, teacher_variables, keys.step, images, v1, v2))
    elif cfg.teacher.mode == "online":
        forward["teacher"], ema_batch_stats["teacher"] = shuffled_key_forward(
            cfg,
            mods.teacher_key,
            {"params": ema_params["teacher"], "batch_stats": state.ema_batch_stats["teacher"]},
            v2,
            keys.teacher_shuffle,
            keys.teacher_key_dropout,
        )
    return forward, ema_batch_stats


def student_loss(cfg: StepConfig, method, state, params, forward: dict, v1, keys: StepKeys):
    """The student's method loss on its query (v1) and the forward outputs.
    Returns (loss, metrics, new batch_stats {'student'}, new method state)."""
    out, mutated = student_forward(
        cfg,
        {"params": params["student"], "batch_stats": state.batch_stats["student"]},
        v1,
        keys.student_dropout,
    )
    new_stats = {"student": mutated.get("batch_stats", {})}  # {}: a BN-free encoder
    embeddings = method.loss_inputs({**forward, "query": out["embedding"].astype(jnp.float32)})
    own = {"params": params["method"]} if "method" in params else {}
    loss, (metrics, method_state) = method.loss_fn(
        embeddings, state.method_state, cfg.method_cfg, rng=keys.loss, axis_name=AXIS_NAME, **own
    )
    return loss, dict(metrics), new_stats, method_state


def online_teacher_loss(cfg: StepConfig, state, params, forward: dict, v1, keys: StepKeys):
    """The online teacher's own method loss (cfg.teacher.method) on its query encoder's v1
    (cross-replica BN) and its momentum key on v2 (forward['teacher']).
    Returns (loss, metrics, the teacher's new batch_stats, its new method state)."""
    teacher_method = methods.get_method(cfg.teacher.method)
    out, mutated = cfg.modules.teacher.apply(
        {"params": params["teacher"], "batch_stats": state.batch_stats["teacher"]},
        v1,
        train=True,
        mutable=["batch_stats"],
        rngs={"dropout": keys.teacher_dropout},
    )
    embeddings = teacher_method.loss_inputs(
        {
            "query": out["embedding"].astype(jnp.float32),
            "key": forward["teacher"],
            "labels": forward["labels"],
        }
    )
    loss, (metrics, method_state) = teacher_method.loss_fn(
        embeddings,
        state.teacher_method_state,
        cfg.teacher_method_cfg,
        rng=keys.teacher_loss,
        axis_name=AXIS_NAME,
    )
    return loss, metrics, mutated["batch_stats"], method_state


def total_loss(cfg: StepConfig, method, state, params, forward: dict, v1, keys: StepKeys):
    """The student's loss plus, with an online teacher, the teacher's own (metrics 'loss' is
    their sum, 'student_loss' the student's, 'teacher/*' the teacher's).
    Returns (loss, (metrics, new batch_stats, method state, teacher method state))."""
    loss, metrics, new_stats, method_state = student_loss(
        cfg, method, state, params, forward, v1, keys
    )
    teacher_method_state = state.teacher_method_state
    if cfg.teacher.mode == "online":
        t_loss, t_metrics, new_stats["teacher"], teacher_method_state = online_teacher_loss(
            cfg, state, params, forward, v1, keys
        )
        metrics.update({f"teacher/{k}": v for k, v in t_metrics.items()})
        metrics["student_loss"] = metrics["loss"]
        metrics["loss"] = metrics["loss"] + t_metrics["loss"]
        loss = loss + t_loss
    return loss, (metrics, new_stats, method_state, teacher_method_state)


def train_step(
    cfg: StepConfig,
    state: state_lib.TrainState,
    batch: dict,
    teacher_variables: Any,
    resident_images: Any,
):
    """One optimisation step on this device's shard. Returns (new_state, metrics)."""
    method = methods.get_method(cfg.method)
    keys = step_keys(state)
    images = batch["image"] if "image" in batch else resident_images[batch["index"]]
    v1, v2 = two_views(cfg, keys.augment, images)

    # Momentum encoders first (MoCo order: EMA of the current weights, then keys).
    ema_params = {
        part: ema(state.ema_params[part], state.params[part], cfg.ema_momentum)
        for part in state.ema_params
    }
    forward, ema_batch_stats = forwards_without_gradient(
        cfg, method, state, ema_params, teacher_variables, keys, images, v1, v2
    )
    forward = {"labels": batch["label"], **forward}  # what the methods' loss_inputs read

    grad_fn = jax.value_and_grad(
        lambda params: total_loss(cfg, method, state, params, forward, v1, keys), has_aux=True
    )
    (_, (metrics, new_stats, method_state, teacher_method_state)), grads = grad_fn(state.params)
    grads = jax.lax.pmean(grads, AXIS_NAME)
    new_stats = jax.lax.pmean(new_stats, AXIS_NAME)
    updates, opt_state = cfg.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {k: jax.lax.pmean(jnp.asarray(v, jnp.float32), AXIS_NAME) for k, v in metrics.items()}
    metrics["learning_rate"] = cfg.schedule(state.step)
    metrics["grad_norm"] = optax.global_norm(grads)
    new_state = state.replace(
        step=state.step + 1,
        params=params,
        batch_stats=new_stats,
        ema_params=ema_params,
        ema_batch_stats=ema_batch_stats,
        opt_state=opt_state,
        method_state=method_state,
        teacher_method_state=teacher_method_state,
    )
    return new_state, metrics


def make_pmapped_step(cfg: StepConfig):
    """pmap over local devices; the state buffers are donated (updated in place)."""

    def step(state, batch, teacher_variables, resident_images):
        return train_step(cfg, state, batch, teacher_variables, resident_images)

    return jax.pmap(step, axis_name=AXIS_NAME, donate_argnums=(0,))
