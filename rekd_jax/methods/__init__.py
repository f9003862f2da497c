"""The methods: MoCo v2, SEED and ReKD (self-supervised), and the supervised cross-entropy of
the oracle-ablation teacher. Adding a method is one module here plus its entry in METHODS.

Each method module owns everything its training step needs, as pure functions and constants:

  NAME                  its config block (config.<NAME>) and its key in METHODS
  default_config()      the block's fields and defaults
  validate_config(cfg, global_batch_size)   ValueError naming the field and the fix
  KEY_ENCODER           whether the step runs the momentum (key) encoder on the second view
  teacher_mode(cfg)     'online' (trained alongside with its own MoCo v2 loss, config.mocov2),
                        'offline' (frozen, from config.teacher.checkpoint) or None
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
"""

from __future__ import annotations

from types import ModuleType

from rekd_jax.methods import mocov2, rekd, seed, supervised

METHODS: dict[str, ModuleType] = {
    module.NAME: module for module in (mocov2, seed, rekd, supervised)
}


def get_method(name: str) -> ModuleType:
    """The method module called `name` (a key of METHODS)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {tuple(METHODS)}")
    return METHODS[name]
