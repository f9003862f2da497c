"""The quick start's plan (configs/quickstart.py, whose docstring gives the command, the recipe
and the measured result): a MoCo v2 teacher, then ReKD, SEED and MoCo v2 students, each a
pre-training config of rekd_jax.recipes, and the evaluation of every encoder. Its variants
(tiny, lr_grid, seeds, x4) change the whole plan; variants.apply_variants applies them in any
order."""

from __future__ import annotations

import ml_collections

from rekd_jax import recipes
from rekd_jax.evaluation.config import default_eval_config
from rekd_jax.variants import apply_variants

# The teacher gets more steps than the students: ReKD can only pass on what it has learnt.
TEACHER_STEPS, STUDENT_STEPS, BATCH = 1700, 700, 128
DATASET = "rekd_shapes"
# :tiny: every stage this many steps (the students, times their multiple of STUDENT_STEPS).
TINY_STEPS, TINY_BATCH, TINY_DATASET = 6, 16, "rekd_shapes/tiny"

# Peak lr of each student method at batch 128: the best validation kNN of LR_GRID
# (configs/quickstart.py:lr_grid; the grid is in docs/results.md).
LR = {"rekd": 0.02, "seed": 0.04, "mocov2": 0.08}
TEACHER_LR = 0.06
LR_GRID = (0.01, 0.02, 0.04, 0.08, 0.16)
TINY_LR_GRID = LR_GRID[:2]
SEEDS = (0, 1, 2)
STUDENTS = (("student", "rekd"), ("seed", "seed"), ("baseline", "mocov2"))  # (run, method)


def _set_steps(run: ml_collections.ConfigDict, steps: int) -> None:
    """A stage's length and what follows from it: ten log lines, one checkpoint at the end."""
    run.num_train_steps = steps
    run.log_every_steps = max(1, steps // 10)
    run.checkpoint_every_steps = steps


def _set_batch(run: ml_collections.ConfigDict, batch: int) -> None:
    """A stage's batch, the peak lr given at that batch (not scaled), a queue of 8 batches."""
    run.global_batch_size = batch
    run.optimizer.lr_scaling_batch = batch
    recipes.set_queue_size(run, 8 * batch)


def _stage(method: str, peak_lr: float, steps: int) -> ml_collections.ConfigDict:
    """One pre-training stage at the quick start's recipe (the module docstring)."""
    config = recipes.base_config()
    config.method = method
    config.data.update(dataset=DATASET, image_size=16, eval_resize=16, num_workers=2)
    config.data.augment.update(blur_prob=0.0, jitter=(0.8, 0.8, 0.8, 0.2))
    _set_batch(config, BATCH)
    _set_steps(config, steps)
    config.rekd.num_prototypes = 100
    config.rekd.relation = "prototype"  # the reading of LR and of docs/results.md's seeds
    config.optimizer.base_learning_rate = peak_lr
    config.optimizer.weight_decay = 5e-4
    config.ema_momentum = 0.99
    config.knn_monitor.every_epochs = 0
    return config


def _evaluation(data: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """kNN and the fast linear probe of every encoder, on the students' 16 px data."""
    evaluation = default_eval_config()
    evaluation.data = data.copy_and_resolve_references()
    evaluation.eval_batch_size = 64
    evaluation.linear.update(
        fast=True, epochs=30, batch_size=64, learning_rate=1.0, schedule="cosine", milestones=()
    )
    evaluation.knn.chunk_size = 128
    return evaluation


def default_plan() -> ml_collections.ConfigDict:
    """The quick start without variants: the teacher, the three students, their evaluation."""
    teacher = _stage("mocov2", TEACHER_LR, TEACHER_STEPS)
    teacher.student.arch = "resnet18"
    teacher.student.overrides = {"cifar_stem": True, "width_multiplier": 0.125}
    teacher.data.image_size = 12  # its views only; it is evaluated (and mines) at 16 px
    students = {}
    for name, method in STUDENTS:
        run = _stage(method, LR[method], STUDENT_STEPS)
        run.rekd.teacher = "offline"
        run.student.arch = "alexnet"
        run.student.overrides = {"cifar_stem": True, "width_multiplier": 0.25}
        run.teacher.arch = teacher.student.arch  # the offline teacher's (its checkpoint's)
        run.teacher.overrides = dict(teacher.student.overrides)
        students[name] = run
    rng_seed = ml_collections.FieldReference(0)  # --config.rng_seed=N reseeds every stage
    for run in (teacher, *students.values()):
        run.rng_seed = rng_seed

    config = ml_collections.ConfigDict()
    config.mode = "quickstart"
    config.rng_seed = rng_seed
    config.rng_seeds = ()  # non-empty: one run per seed (:seeds)
    config.runs = ml_collections.ConfigDict({"teacher": teacher, **students})
    config.evaluation = _evaluation(students["student"].data)
    config.eval_modes = ("knn", "linear")
    return config


def _is_tiny(config: ml_collections.ConfigDict) -> bool:
    return config.evaluation.data.dataset == TINY_DATASET


def tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The embedded toy data rekd_shapes/tiny (200 train / 100 test images), batch 16, 6 steps
    per stage (24 for the students with x4), 2 probe epochs: what the tests run."""
    for name, run in config.runs.items():
        run.data.dataset = TINY_DATASET
        _set_batch(run, TINY_BATCH)
        budget = 1 if name == "teacher" else max(1, run.num_train_steps // STUDENT_STEPS)
        _set_steps(run, TINY_STEPS * budget)
    config.evaluation.data.dataset = TINY_DATASET
    config.evaluation.eval_batch_size = TINY_BATCH
    config.evaluation.linear.epochs = 2
    if "lr_grid" in config:
        config.lr_grid = TINY_LR_GRID
    return config


def lr_grid(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Chooses the students' peak lr from LR_GRID on a validation split (mode quickstart_grid,
    rekd_jax.experiments.quickstart_grid; with tiny, the grid's first two)."""
    config.mode = "quickstart_grid"
    config.lr_grid = TINY_LR_GRID if _is_tiny(config) else LR_GRID
    return config


def seeds(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Runs the quick start once per seed of SEEDS (0, 1, 2; WORKDIR/seed_<N>) and prints each
    row's mean and [min, max] over the seeds."""
    config.rng_seeds = SEEDS
    return config


def x4(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Trains the students four times longer (2,800 steps, each cosine over its own length; the
    teacher as it is): the quick start's budget probe."""
    for name, _ in STUDENTS:
        _set_steps(config.runs[name], 4 * config.runs[name].num_train_steps)
    return config


VARIANTS = {"tiny": tiny, "lr_grid": lr_grid, "seeds": seeds, "x4": x4}


def get_config(arg: str | None, config_file: str) -> ml_collections.ConfigDict:
    """What configs/quickstart.py returns: the default plan with the variants of `arg`."""
    return apply_variants(default_plan(), arg, VARIANTS, config_file)
