"""Self-supervised methods as pure functions on embeddings: MoCo v2, SEED and ReKD.

Each method module exports default_config(), validate_config(cfg, global_batch_size),
init_state(rng, cfg, student_dim, teacher_dim) and
loss_fn(embeddings, state, cfg, *, rng, axis_name) -> (loss, (metrics, new_state)).
"""
from __future__ import annotations

from types import ModuleType

from rekd_jax.methods import mocov2, rekd, seed

METHODS: dict[str, ModuleType] = {'mocov2': mocov2, 'seed': seed, 'rekd': rekd}


def get_method(name: str) -> ModuleType:
    """The method module called `name` ('mocov2' | 'seed' | 'rekd')."""
    if name not in METHODS:
        raise ValueError(f'unknown method {name!r}; choose one of {sorted(METHODS)}.')
    return METHODS[name]
