"""Methods as pure functions on embeddings: MoCo v2, SEED and ReKD (self-supervised), and the
supervised cross-entropy of the oracle-ablation teacher.

Each method module exports default_config(), validate_config(cfg, global_batch_size),
init_state(rng, cfg, student_dim, teacher_dim) and
loss_fn(embeddings, state, cfg, *, rng, axis_name) -> (loss, (metrics, new_state)); a method
with trainable parameters of its own (supervised: its classifier) also exports
init_params(rng, cfg, student_dim) and takes them as loss_fn(..., params=...).
"""
from __future__ import annotations

from types import ModuleType

from rekd_jax.methods import mocov2, rekd, seed, supervised

METHODS: dict[str, ModuleType] = {'mocov2': mocov2, 'seed': seed, 'rekd': rekd,
                                  'supervised': supervised}


def get_method(name: str) -> ModuleType:
    """The method module called `name` ('mocov2' | 'seed' | 'rekd')."""
    if name not in METHODS:
        raise ValueError(f'unknown method {name!r}; choose one of {sorted(METHODS)}.')
    return METHODS[name]
