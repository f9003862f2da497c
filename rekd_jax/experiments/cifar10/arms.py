"""The study's runs as plan.Arms, stage by stage: the pre-training and evaluation configs
of teachers and students at a scale, and the arms of each stage given the choices so far."""

from __future__ import annotations

import dataclasses
import os

import ml_collections

from rekd_jax import recipes
from rekd_jax.evaluation import config as eval_config
from rekd_jax.experiments import plan
from rekd_jax.experiments.cifar10.scales import STUDENT_FAMILIES, Scale
from rekd_jax.experiments.cifar10.settings import (
    ARM_RELATION,
    ARMS,
    MORE_SEARCHES,
    STUDENT_ARMS,
    TUNED,
    budget_arms_of,
    budget_name,
    edge_lr,
    middle_lr,
    readings,
    search_name,
    select_name,
    setting_of,
    snapshot_arm_name,
)
from rekd_jax.training import pretrain


def _recipe(scale: Scale, data_dir: str, seed: int) -> ml_collections.ConfigDict:
    """rekd_jax.recipes.cifar10() with the scale's departures."""
    config = recipes.cifar10(recipes.base_config())
    config.rng_seed = seed
    config.data.update(
        dataset=scale.dataset,
        data_dir=data_dir,
        train_split=scale.train_split,
        eval_split=scale.test_split,
        image_size=scale.image_size,
        eval_resize=scale.image_size,
    )
    config.global_batch_size = scale.batch
    config.student_bn = scale.student_bn
    config.optimizer.cosine_unit = scale.cosine_unit
    recipes.set_queue_size(config, scale.queue_batches * scale.batch)
    config.rekd.num_prototypes = scale.num_prototypes
    config.knn_monitor.update(
        every_epochs=0, bank_split=scale.val_bank_split, query_split=scale.val_split
    )
    config.log_every_steps = max(1, min(50, scale.student_steps // 8))
    config.checkpoint_every_steps = max(1, min(1000, scale.teacher_steps // 4))
    config.tensorboard = "off"
    return config


def _encoder(arch: str, overrides: dict) -> dict:
    return {"cifar_stem": True, **overrides}


def teacher_config(
    scale: Scale, kind: str, data_dir: str, seed: int = 0
) -> ml_collections.ConfigDict:
    """'mocov2': the self-supervised teacher, on the whole training split, with encoder
    snapshots at scale.teacher_snapshots; 'supervised': cross-entropy on the labelled part of
    the training split only (val_bank_split: the validation images stay unseen), an ORACLE
    ABLATION. Both at the teacher's peak lr, unscaled at the scale's batch."""
    config = _recipe(scale, data_dir, seed)
    config.student.arch = scale.teacher_arch
    config.student.overrides = _encoder(scale.teacher_arch, scale.teacher_overrides)
    config.optimizer.lr_scaling_batch = scale.batch
    config.knn_monitor.every_epochs = scale.knn_monitor_every_epochs
    if kind == "mocov2":
        config.method = "mocov2"
        config.num_train_steps = scale.teacher_steps
        config.optimizer.base_learning_rate = scale.teacher_lr
        config.export_encoder_steps = scale.snapshot_steps()
    elif kind == "supervised":
        config.method = "supervised"
        config.num_train_steps = scale.supervised_steps
        config.optimizer.base_learning_rate = scale.supervised_lr
        config.data.train_split = scale.val_bank_split
        # The standard supervised CIFAR augmentation: crops and flips, no colour distortion.
        config.data.augment.update(crop_scale=(0.25, 1.0), jitter_prob=0.0, gray_prob=0.0)
    else:
        raise ValueError(f"teacher kind {kind!r}: use 'mocov2' or 'supervised'")
    config.log_every_steps = 50
    return config


def student_config(
    scale: Scale,
    arch: str,
    arm: str,
    data_dir: str,
    seed: int,
    lr: float,
    steps: int,
    overrides: dict | None = None,
) -> ml_collections.ConfigDict:
    """One student run of arm ARM (a key of ARMS) at peak lr LR (at the scale's batch);
    `overrides` are fields of the arm's method block (a reading of ReKD, SEED's temperatures)."""
    _, method, rekd_teacher, _ = ARMS[arm]
    config = _recipe(scale, data_dir, seed)
    config.num_train_steps = steps
    config.student.arch = arch
    config.student.overrides = _encoder(arch, scale.student_overrides.get(arch, {}))
    config.teacher.arch = scale.teacher_arch
    config.teacher.overrides = _encoder(scale.teacher_arch, scale.teacher_overrides)
    config.optimizer.base_learning_rate = lr
    config.optimizer.lr_scaling_batch = scale.batch
    config.method = method
    config[method].update(overrides or {})
    if method == "rekd":
        config.rekd.teacher = rekd_teacher
        if arm in ARM_RELATION:
            config.rekd.relation = ARM_RELATION[arm]
    if arm == "mocov2" and arch == scale.mechanism_student and scale.knn_monitor_every_epochs:
        # MoCo v2's kNN curve every epoch, on validation as the search scores it: its early
        # dip below the random encoder (the 'select/random_init' row).
        config.knn_monitor.update(every_epochs=1)
    return config


def _arm(
    scale: Scale,
    data_dir: str,
    name: str,
    arm: str,
    *,
    seed: int,
    lr: float,
    variant: str,
    overrides: dict,
    group: str,
    arch: str = "",
    steps: int = 0,
    evaluation=None,
    teacher: str | None = None,
    teacher_encoder: str = "student",
) -> plan.Arm:
    arch = arch or scale.mechanism_student
    label = ARMS[arm][0]
    config = student_config(
        scale, arch, arm, data_dir, seed, lr, steps or scale.student_steps, overrides
    )
    return plan.Arm(
        name=name,
        arch=arch,
        label=label,
        config=config,
        group=group,
        seed=seed,
        teacher=ARMS[arm][3] if teacher is None else teacher,
        teacher_encoder=teacher_encoder,
        evaluation=evaluation,
    )


def teacher_arms(scale: Scale, data_dir: str) -> list[plan.Arm]:
    """Random-init teacher, the MoCo v2 and supervised teachers, the MoCo v2 snapshots."""
    mocov2 = teacher_config(scale, "mocov2", data_dir)
    arch = f"{scale.teacher_arch}_teacher"  # its own row label: other width and steps
    arms = [
        dataclasses.replace(
            plan.random_init_arm(mocov2, "random_init/teacher", group="teacher"), arch=arch
        ),
        plan.Arm(
            name="teacher/mocov2",
            arch=arch,
            label="MoCo v2 teacher",
            config=mocov2,
            group="teacher",
        ),
        plan.Arm(
            name="teacher/supervised",
            arch=arch,
            label="cross-entropy teacher (oracle)",
            config=teacher_config(scale, "supervised", data_dir),
            group="teacher",
        ),
    ]
    for fraction, step in zip(scale.teacher_snapshots, scale.snapshot_steps()):
        arms.append(
            plan.Arm(
                name=snapshot_arm_name(fraction),
                arch=arch,
                label=f"MoCo v2 teacher at {round(100 * fraction)}%",
                group="teacher",
                source=os.path.join("teacher/mocov2/encoders", pretrain.snapshot_name(step)),
            )
        )
    return arms


def search_arms(scale: Scale, data_dir: str, val) -> list[plan.Arm]:
    """The random-init student and ReKD's readings and SEED's temperatures, one run each at the
    grid's middle lr for scale.search_steps steps, on validation."""
    lr = middle_lr(scale)
    first = student_config(
        scale, scale.mechanism_student, "mocov2", data_dir, 0, lr, scale.student_steps
    )
    arms = [
        dataclasses.replace(
            plan.random_init_arm(first, "select/random_init", group="search"), evaluation=val
        )
    ]
    for arm, names in (("rekd", scale.readings), ("seed", scale.seed_temperatures)):
        settings = readings(scale, arm, {})
        for variant in names:
            arms.append(
                _arm(
                    scale,
                    data_dir,
                    search_name(arm, variant),
                    arm,
                    seed=0,
                    lr=lr,
                    variant=variant,
                    overrides=settings[variant],
                    group="search",
                    steps=scale.search_steps,
                    evaluation=val,
                )
            )
    return arms


def grid_arms(scale: Scale, data_dir: str, val, choices: dict) -> list[plan.Arm]:
    """Each tuned method at every lr of the grid, at the searched settings."""
    arms = []
    for arm in TUNED:
        variant, overrides = setting_of(arm, choices, scale)
        for lr in scale.lr_grid:
            arms.append(
                _arm(
                    scale,
                    data_dir,
                    select_name(arm, variant, lr),
                    arm,
                    seed=0,
                    lr=lr,
                    variant=variant,
                    overrides=overrides,
                    group="grid",
                    evaluation=val,
                )
            )
    return arms


def more_search_arms(scale: Scale, data_dir: str, val, choices: dict) -> list[plan.Arm]:
    """ReKD in the teacher's space (beta x k), and the chosen reading's joint temperature x k
    search and miner inputs, one run each at the grid's middle lr for scale.search_steps steps
    on validation, as the first search ran (its chosen reading's row is not run again)."""
    arms = []
    for search, arm in MORE_SEARCHES.items():
        for variant, overrides in readings(scale, search, choices).items():
            if search == "rekd_long" and variant == choices["rekd"]:
                continue  # search/rekd/<chosen> is this run
            arms.append(
                _arm(
                    scale,
                    data_dir,
                    search_name(search, variant),
                    arm,
                    seed=0,
                    lr=middle_lr(scale),
                    variant=variant,
                    overrides=overrides,
                    group="search",
                    steps=scale.search_steps,
                    evaluation=val,
                )
            )
    return arms


def edge_arms(scale: Scale, data_dir: str, val, choices: dict, lrs: dict) -> list[plan.Arm]:
    """Each tuned method whose chosen lr sits at the top of the grid, one step above it
    (edge_lr), at the full student budget on validation: the lr of the longer runs."""
    arms = []
    for arm in TUNED:
        if lrs[arm] != scale.lr_grid[-1]:
            continue
        variant, overrides = setting_of(arm, choices, scale)
        arms.append(
            _arm(
                scale,
                data_dir,
                select_name(arm, variant, edge_lr(scale)),
                arm,
                seed=0,
                lr=edge_lr(scale),
                variant=variant,
                overrides=overrides,
                group="grid",
                evaluation=val,
            )
        )
    return arms


def budget_arms(
    scale: Scale,
    data_dir: str,
    test,
    choices: dict,
    lrs: dict,
    lrs_long: dict,
    extension: bool,
) -> list[plan.Arm]:
    """Each budget arm at each of scale.budget_steps (budget_seeds seeds), at its longer-run lr
    (lrs_long) and ReKD's best reading, scored on the test split. At the student budget the
    final stage's rows stand for the arm unless its lr or setting differs from theirs; then
    the arm runs there too (as many seeds as at the first longer budget)."""
    arms = []
    for arm in budget_arms_of(scale, extension):
        variant, overrides = setting_of(arm, choices, scale, long=True)
        points = list(zip(scale.budget_steps, scale.budget_seeds))
        if (variant, lrs_long[arm]) != (setting_of(arm, choices, scale)[0], lrs[arm]):
            points.insert(0, (scale.student_steps, scale.budget_seeds[0]))
        for steps, seeds in points:
            for seed in range(seeds):
                run = _arm(
                    scale,
                    data_dir,
                    budget_name(arm, steps, seed),
                    arm,
                    seed=seed,
                    lr=lrs_long[arm],
                    variant=variant,
                    overrides=overrides,
                    group="budget",
                    steps=steps,
                    evaluation=test,
                )
                if run.config.knn_monitor.every_epochs:  # MoCo v2's validation curve, sparser
                    run.config.knn_monitor.every_epochs = scale.knn_monitor_every_epochs
                arms.append(run)
    return arms


def final_arms(scale: Scale, data_dir: str, test, choices: dict, lrs: dict) -> list[plan.Arm]:
    """Random init and each arm at its chosen settings over the seeds, on the test split;
    a tuned method's seed 0 re-scores its grid run."""
    arch = scale.mechanism_student
    first = student_config(
        scale, arch, "mocov2", data_dir, 0, middle_lr(scale), scale.student_steps
    )
    arms = [
        dataclasses.replace(
            plan.random_init_arm(first, f"random_init/{arch}", group="final"), evaluation=test
        )
    ]
    for arm in ARMS:
        variant, overrides = setting_of(arm, choices, scale)
        for seed in range(scale.seeds):
            name = f"final/{arm}/s{seed}"
            if seed == 0 and arm in TUNED:
                arms.append(
                    plan.Arm(
                        name=name,
                        arch=arch,
                        label=ARMS[arm][0],
                        group="final",
                        reuse=select_name(arm, variant, lrs[arm]),
                        evaluation=test,
                    )
                )
            else:
                arms.append(
                    _arm(
                        scale,
                        data_dir,
                        name,
                        arm,
                        seed=seed,
                        lr=lrs[arm],
                        variant=variant,
                        overrides=overrides,
                        group="final",
                        evaluation=test,
                    )
                )
    return arms


def quality_arms(scale: Scale, data_dir: str, test, choices: dict, lrs: dict) -> list[plan.Arm]:
    """SEED and ReKD from each MoCo v2 teacher snapshot, scale.quality_seeds seeds each."""
    arms = []
    for fraction, step in zip(scale.teacher_snapshots, scale.snapshot_steps()):
        for arm in ("seed", "rekd"):
            variant, overrides = setting_of(arm, choices, scale)
            for seed in range(scale.quality_seeds):
                arms.append(
                    _arm(
                        scale,
                        data_dir,
                        f"quality/{round(100 * fraction)}pct/{arm}/s{seed}",
                        arm,
                        seed=seed,
                        lr=lrs[arm],
                        variant=variant,
                        overrides=overrides,
                        group="quality",
                        evaluation=test,
                        teacher="teacher/mocov2",
                        teacher_encoder=pretrain.snapshot_name(step),
                    )
                )
    return arms


def student_arms(
    scale: Scale, data_dir: str, test, choices: dict, lrs: dict, families=STUDENT_FAMILIES
) -> list[plan.Arm]:
    """The other students: random init, MoCo v2, SEED and ReKD at the chosen settings, seed 0
    (the mechanism student's rows are the final stage's seed 0)."""
    arms = []
    for arch in scale.students(families):
        if arch == scale.mechanism_student:
            continue
        first = student_config(
            scale, arch, "mocov2", data_dir, 0, lrs["mocov2"], scale.five_student_steps
        )
        arms.append(
            dataclasses.replace(
                plan.random_init_arm(first, f"random_init/{arch}", group="students"),
                evaluation=test,
            )
        )
        for arm in STUDENT_ARMS:
            variant, overrides = setting_of(arm, choices, scale)
            arms.append(
                _arm(
                    scale,
                    data_dir,
                    f"students/{arch}/{arm}",
                    arm,
                    seed=0,
                    lr=lrs[arm],
                    variant=variant,
                    overrides=overrides,
                    group="students",
                    arch=arch,
                    steps=scale.five_student_steps,
                    evaluation=test,
                )
            )
    return arms


def evaluation_config(scale: Scale, data_dir: str, protocol: str) -> ml_collections.ConfigDict:
    """kNN and the fast linear probe at the scale's resolution. 'val': the validation split
    scored against (and probed on) val_bank_split; 'test': the test split against the whole
    training split."""
    bank, query = (
        (scale.val_bank_split, scale.val_split)
        if protocol == "val"
        else (scale.train_split, scale.test_split)
    )
    config = eval_config.default_eval_config()
    config.data.update(
        dataset=scale.dataset,
        data_dir=data_dir,
        train_split=bank,
        eval_split=query,
        image_size=scale.image_size,
        eval_resize=scale.image_size,
        host_size=0,
    )
    config.data.augment = recipes.cifar10(recipes.base_config()).data.augment
    config.eval_batch_size = scale.eval_batch
    config.tensorboard = "off"
    config.linear.update(
        fast=True,
        epochs=scale.linear_epochs,
        batch_size=scale.eval_batch,
        learning_rate=1.0,
        schedule="cosine",
        milestones=(),
    )
    config.knn.chunk_size = 256
    return config
