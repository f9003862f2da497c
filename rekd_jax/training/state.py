"""TrainState (all mutable training state, one pytree) and the modules a run trains.

TrainState fields (dicts keyed 'student' / 'teacher'; a part a method does not use is {}):
  step                int32 scalar, steps done
  params              trainable params: {'student', 'teacher' (online teacher only),
                      'method' (a method's own, e.g. the supervised classifier)}
  batch_stats         BatchNorm statistics of those encoders
  ema_params          momentum (key) encoders: {'student' (MoCo v2, ReKD), 'teacher' (online)}
  ema_batch_stats     their BatchNorm statistics (updated by their own forward passes, as MoCo)
  opt_state           optax state over `params`
  method_state        the method's state (queues, prototypes) from rekd_jax.methods.<method>
  teacher_method_state  the state of the online teacher's own method (its queue; {} otherwise)
  rng                 raw uint32 PRNG key; step randomness is fold_in(rng, step)

An offline teacher is not part of the state: it is frozen, loaded from its own encoder
checkpoint every run and never written into student checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rekd_jax import methods, models
from rekd_jax.core.parallel import AXIS_NAME
from rekd_jax.models import heads
from rekd_jax.models import io as model_io


@flax.struct.dataclass
class TrainState:
    step: Any
    params: Any
    batch_stats: Any
    ema_params: Any
    ema_batch_stats: Any
    opt_state: Any
    method_state: Any
    teacher_method_state: Any
    rng: Any


def compute_dtype(config: ml_collections.ConfigDict):
    return jnp.dtype(config.dtype)


def backbone_overrides(overrides) -> dict:
    """User overrides as a plain dict (ConfigDict / FrozenDict / dict)."""
    return dict(overrides.to_dict() if hasattr(overrides, "to_dict") else overrides or {})


def projector_spec(arch: str, overrides: dict, projector_cfg) -> dict:
    """{'hidden','dim','bn','layers'}; hidden 0 means the backbone's feature width (method.md);
    layers 1 is a linear head (hidden unused, stored as 0), 2 the MoCo v2 MLP."""
    layers = int(projector_cfg.get("layers", 2))
    hidden = (
        0 if layers == 1 else (int(projector_cfg.hidden) or models.feature_dim(arch, **overrides))
    )
    return {
        "hidden": hidden,
        "dim": int(projector_cfg.dim),
        "bn": bool(projector_cfg.bn),
        "layers": layers,
    }


def encoder_spec(part_cfg, source: str) -> dict:
    """The models.io spec of a student/teacher block: what evaluation rebuilds."""
    overrides = backbone_overrides(part_cfg.overrides)
    return {
        "arch": part_cfg.arch,
        "overrides": overrides,
        "projector": projector_spec(part_cfg.arch, overrides, part_cfg.projector),
        "source": source,
    }


def embedding_dim(spec: dict) -> int:
    """Width of an encoder's 'embedding': its projector's output, or the pooled backbone
    features when it has none (an import_torch output of a plain torchvision state_dict)."""
    if spec["projector"] is not None:
        return int(spec["projector"]["dim"])
    return feature_dim(spec)


def feature_dim(spec: dict) -> int:
    """Width of an encoder's pooled backbone 'features'."""
    return models.feature_dim(spec["arch"], **backbone_overrides(spec["overrides"]))


def build_encoder_module(spec: dict, *, dtype, bn_axis_name: str | None):
    """Encoder module of a spec with the run's compute dtype and BN axis."""
    return heads.build_encoder(spec, dtype=dtype, bn_axis_name=bn_axis_name)


@dataclasses.dataclass(frozen=True)
class Modules:
    """Flax modules of a run, and its teacher plan. `*_key` modules run per device/split BN
    (shuffle-BN)."""

    student: Any
    student_key: Any
    student_spec: dict
    teacher_plan: methods.TeacherPlan = methods.TeacherPlan()
    teacher: Any = None  # online: query encoder (cross-replica BN); offline: frozen
    teacher_key: Any = None  # online only
    teacher_spec: dict | None = None


def build_modules(
    config: ml_collections.ConfigDict,
    teacher_spec: dict | None = None,
    plan: methods.TeacherPlan | None = None,
) -> Modules:
    """Student (+ key) and teacher modules. `teacher_spec`: the offline teacher's spec; `plan`:
    the run's methods.teacher_plan (decided here when not given)."""
    plan = methods.teacher_plan(config) if plan is None else plan
    dtype = compute_dtype(config)
    student_spec = encoder_spec(config.student, f"rekd-jax pretrain {config.method}")
    teacher = teacher_key = None
    if plan.mode == "online":
        teacher_spec = encoder_spec(config.teacher, "rekd-jax online teacher")
        teacher = build_encoder_module(teacher_spec, dtype=dtype, bn_axis_name=AXIS_NAME)
        teacher_key = build_encoder_module(teacher_spec, dtype=dtype, bn_axis_name=None)
    elif plan.mode == "offline":
        teacher = build_encoder_module(teacher_spec, dtype=dtype, bn_axis_name=None)
    return Modules(
        student=build_encoder_module(student_spec, dtype=dtype, bn_axis_name=AXIS_NAME),
        student_key=build_encoder_module(student_spec, dtype=dtype, bn_axis_name=None),
        student_spec=student_spec,
        teacher_plan=plan,
        teacher=teacher,
        teacher_key=teacher_key,
        teacher_spec=teacher_spec,
    )


def load_offline_teacher(
    config: ml_collections.ConfigDict, plan: methods.TeacherPlan
) -> tuple[dict | None, Any]:
    """(spec, variables) of the frozen teacher, or (None, {}) when the run has none."""
    if plan.mode != "offline":
        return None, {}
    spec, variables = model_io.load_encoder(config.teacher.checkpoint)
    return spec, {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def _init_encoder(module, rng, image_size: int):
    dummy = jnp.zeros((2, image_size, image_size, 3), jnp.float32)
    variables = models.init_variables(module, rng, dummy)
    return variables["params"], variables.get("batch_stats", {})


def create_train_state(config: ml_collections.ConfigDict, modules: Modules, tx) -> TrainState:
    """Fresh state on the host (unreplicated): key encoders start as copies of the encoders."""
    rng = jax.random.PRNGKey(config.rng_seed)
    student_rng, teacher_rng, method_rng, teacher_method_rng, state_rng = jax.random.split(rng, 5)
    size = config.data.image_size
    params, batch_stats, ema_params, ema_batch_stats = {}, {}, {}, {}
    params["student"], batch_stats["student"] = _init_encoder(modules.student, student_rng, size)
    method = methods.get_method(config.method)
    if method.KEY_ENCODER:
        ema_params["student"] = params["student"]
        ema_batch_stats["student"] = batch_stats["student"]
    student_dim = embedding_dim(modules.student_spec)
    teacher_dim = embedding_dim(modules.teacher_spec) if modules.teacher_spec else None
    teacher_method_state = {}
    plan = modules.teacher_plan
    if plan.mode == "online":
        params["teacher"], batch_stats["teacher"] = _init_encoder(
            modules.teacher, teacher_rng, size
        )
        ema_params["teacher"] = params["teacher"]
        ema_batch_stats["teacher"] = batch_stats["teacher"]
        teacher_method_state = methods.get_method(plan.method).init_state(
            teacher_method_rng, config[plan.method], teacher_dim, None
        )
    widths = {}
    if modules.teacher_spec and getattr(method, "reads_teacher_features", lambda cfg: False)(
        config[config.method]
    ):
        widths["teacher_feature_dim"] = feature_dim(modules.teacher_spec)
    method_state = method.init_state(
        method_rng, config[config.method], student_dim, teacher_dim, **widths
    )
    if hasattr(method, "init_params"):  # trainable parameters of the method's own
        params["method"] = method.init_params(
            jax.random.fold_in(method_rng, 1), config[config.method], student_dim
        )
    copy = lambda t: jax.tree_util.tree_map(jnp.array, t)  # distinct buffers (donation-safe)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        ema_params=copy(ema_params),
        ema_batch_stats=copy(ema_batch_stats),
        opt_state=tx.init(params),
        method_state=method_state,
        teacher_method_state=teacher_method_state,
        rng=state_rng,
    )


def to_host(state: TrainState) -> dict:
    """State as a plain dict of numpy arrays (what the checkpoint stores)."""
    return jax.tree_util.tree_map(
        np.asarray, flax.serialization.to_state_dict(jax.device_get(state))
    )


def from_host(template: TrainState, restored: dict) -> TrainState:
    return flax.serialization.from_state_dict(template, restored)


def encoder_variables(state: TrainState, part: str, ema: bool = False) -> dict:
    """{'params', 'batch_stats'} of 'student' or 'teacher' (the query encoder unless ema)."""
    params = state.ema_params if ema else state.params
    stats = state.ema_batch_stats if ema else state.batch_stats
    return {"params": params[part], "batch_stats": stats[part]}
