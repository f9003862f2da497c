"""The methods: MoCo v2, SEED and ReKD (self-supervised), and the supervised cross-entropy of
the oracle-ablation teacher. Adding a method is one module here plus its entry in METHODS.

Each method module owns everything its training step needs, as pure functions and constants:

  NAME                  its config block (config.<NAME>) and its key in METHODS
  default_config()      the block's fields and defaults
  validate_config(cfg, global_batch_size)   ValueError naming the field and the fix
  KEY_ENCODER           whether the step runs the momentum (key) encoder on the second view
  teacher_mode(cfg)     what its teacher needs: None (no teacher), 'online' (trained alongside
                        by the loss of the method config.teacher.method names, with that
                        method's block) or 'offline' (frozen, from config.teacher.checkpoint)
  teacher_view(cfg)     (methods with an offline teacher) the view the teacher embeds: 'v1',
                        the student's, 'v2', the key's, or 'weak', a third view with crop and
                        flip only (drawn from its own key: v1 and v2 stay as they are)
  loss_inputs(forward)  loss_fn's embeddings from the step's forward outputs {'query': student
                        on v1, 'key': key encoder on v2, 'teacher': teacher embedding,
                        'teacher_features': an offline teacher's pooled backbone features (of
                        the same view), 'labels'} (each present when the step runs it; all
                        float32 except labels); the method picks what it needs
  init_state(rng, cfg, student_dim, teacher_dim)   the method's state (queues, prototypes)
  loss_fn(embeddings, state, cfg, *, rng, axis_name) -> (loss, (metrics, new_state))

and optionally
  init_params(rng, cfg, student_dim)   trainable parameters of its own (supervised: its
                        classifier), held in params['method'] and passed as loss_fn(..., params=)
  validate_dataset(cfg, num_classes)   checks against the training data, once it is open
  reads_teacher_features(cfg)   True when the loss reads 'teacher_features': init_state is
                        then also given teacher_feature_dim=, their width

Every loss_fn works under `jax.pmap(..., axis_name=rekd_jax.core.parallel.AXIS_NAME)` or on one
device with axis_name=None.

An online teacher is trained by a method of its own: config.teacher.method names it (a method
that learns without a teacher and has no parameters of its own: `can_train_online_teacher`).
The step gives that method's loss_inputs {'query': the teacher on v1, 'key': its momentum
encoder on v2, 'labels'}; the key is also the teacher embedding the student's method reads.
`teacher_plan(config)` decides all of this once per run.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType

import ml_collections

from rekd_jax.methods import mocov2, rekd, seed, supervised

METHODS: dict[str, ModuleType] = {
    module.NAME: module for module in (mocov2, seed, rekd, supervised)
}
TEACHER_MODES = (None, "online", "offline")


def get_method(name: str) -> ModuleType:
    """The method module called `name` (a key of METHODS)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {tuple(METHODS)}")
    return METHODS[name]


@dataclasses.dataclass(frozen=True)
class TeacherPlan:
    """What a run's teacher is, decided once from its config (`teacher_plan`).

    mode    None (no teacher), 'online' (trained alongside) or 'offline' (frozen)
    method  online only: the method whose loss trains the teacher (config.teacher.method);
            its block is config[method]
    view    offline only: the view the teacher embeds ('v1', 'v2' or 'weak')
    """

    mode: str | None = None
    method: str | None = None
    view: str | None = None


def teacher_plan(config: ml_collections.ConfigDict) -> TeacherPlan:
    """The teacher of a pre-training config: its method's teacher_mode and teacher_view, and the
    method config.teacher.method names for an online teacher's own loss."""
    method = get_method(config.method)
    cfg = config[config.method]
    mode = method.teacher_mode(cfg)
    if mode not in TEACHER_MODES:
        raise ValueError(
            f"method {config.method!r}: teacher_mode returned {mode!r}; it must return one of "
            f"{TEACHER_MODES}."
        )
    if mode == "online":
        return TeacherPlan(mode=mode, method=config.teacher.method)
    if mode == "offline":
        return TeacherPlan(mode=mode, view=method.teacher_view(cfg))
    return TeacherPlan()


def can_train_online_teacher(method: ModuleType, cfg: ml_collections.ConfigDict) -> bool:
    """Whether `method` (with its block `cfg`) can be an online teacher's own method: it learns
    from the teacher's two views alone (no teacher of its own, no parameters of its own)."""
    return method.teacher_mode(cfg) is None and not hasattr(method, "init_params")


def online_teacher_methods() -> tuple[str, ...]:
    """The methods that can train an online teacher with their default block."""
    return tuple(
        name
        for name, method in METHODS.items()
        if can_train_online_teacher(method, method.default_config())
    )
