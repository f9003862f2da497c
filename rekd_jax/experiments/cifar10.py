"""The CIFAR-10 study: does ReKD beat MoCo v2 and SEED when the teacher knows something?

    python -m rekd_jax.experiments.cifar10 --scale=cpu --workdir=/tmp/c10_study \
        --data_dir=/data/tfds [--src=/data/cifar10]

One command, one resumable workdir (rerunning skips finished runs; an interrupted run resumes
from its checkpoints); progress lines carry an ETA. Stages, each a set of rows (plan.Arm):
  teachers   a MoCo v2 teacher on the whole training split, with encoder snapshots at
             scale.teacher_snapshots of its steps, and a supervised cross-entropy teacher
             trained on the labelled part of the split only (an ORACLE ABLATION), each beside
             the random-init encoder; scored on the test split.
  search     on a validation split carved from the training set (val_split, scored against
             val_bank_split): the free choices of our ReKD reading (READINGS) and SEED's
             temperatures (SEED_TEMPERATURES, a search of the same size), one run each at the
             middle learning rate of the grid for scale.search_steps steps (a shorter proxy of
             the student budget); the best validation kNN wins.
  grid       each method (TUNED: MoCo v2, SEED and ReKD, from the MoCo v2 teacher) at every peak
             lr of scale.lr_grid, on validation; the best validation kNN wins per method. The
             ReKD ablations (from the supervised teacher, with true-label relations) take
             ReKD's lr (LR_FOLLOWS).
  final      each arm of ARMS at its chosen settings over scale.seeds seeds (a tuned method's
             seed 0 is its grid run, re-scored), scored on the test split: mean and spread,
             ReKD's margins over MoCo v2 and SEED.
  quality    SEED and ReKD distilled from each teacher snapshot (scale.quality_seeds seeds):
             the gain over MoCo v2 against the teacher's mined-positive label precision.
  students   the five students (AlexNet, MobileNetV3-L, ShuffleNetV2, EfficientNet-B0,
             ResNet-18): random init, MoCo v2, SEED, ReKD at the chosen settings, one seed.
No choice reads a test number: every choice is made by `choose` on validation rows.
WORKDIR/results.json holds every row, the choices and the summaries (results.md the tables,
plots/ the figures; `python -m rekd_jax.tools.report WORKDIR/results.json` redraws them).

Scales (each field of Scale is a documented departure from rekd_jax.recipes.cifar10(),
the MoCo CIFAR-10 demo):
  tiny  seconds; rekd_shapes/tiny, a reduced search; what the tests run.
  cpu   two CPU cores: CIFAR-10 at 16 px, all 50,000 training images (45,000 / 5,000 for
        validation), batch 256; ResNet-18 x0.25 teachers (MoCo v2 12,000 steps, cross-entropy
        6,000 steps); AlexNet x0.25 students, 1,500 steps (the search: 500). docs/results.md
        has the times.
  gpu   full CIFAR-10 at 32 px, full widths, 200 teacher epochs (not measured).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys

import jax
import ml_collections
import numpy as np

from rekd_jax import recipes
from rekd_jax.core import errors, fileio
from rekd_jax.core import logging as logging_lib
from rekd_jax.data import prepare, sources
from rekd_jax.evaluation import config as eval_config
from rekd_jax.experiments import plan, study_report
from rekd_jax.tools import study_figures
from rekd_jax.training import pretrain

STUDENT_FAMILIES = ("alexnet", "mobilenetv3_large", "shufflenetv2", "efficientnet_b0", "resnet18")

# The free choices of our ReKD reading (docs/method.md), one alternative at a time from the
# prototype reading (the plain reading of the paper's prototype bank: argmax assignment, the
# recipe's prototypes and temperature, no instance term): rekd.<field> overrides, each naming
# its relation so that a reading does not move with the library's default.
_PROTOTYPE = {"relation": "prototype"}
READINGS = (
    ("prototype", _PROTOTYPE),
    ("sinkhorn", {**_PROTOTYPE, "assignment": "sinkhorn"}),
    ("topk", {"relation": "topk"}),
    ("threshold", {"relation": "threshold"}),
    ("prototypes_10", {**_PROTOTYPE, "num_prototypes": 10}),
    ("prototypes_1000", {**_PROTOTYPE, "num_prototypes": 1000}),
    ("lambda_inst_1", {**_PROTOTYPE, "lambda_inst": 1.0}),
    ("tau_0.2", {**_PROTOTYPE, "temperature": 0.2}),
    ("no_instance_positive", {**_PROTOTYPE, "instance_positive": False}),
)
# SEED's temperatures, a search of the same size (seed.<field> overrides); the default
# (tau_s 0.2, tau_t 1e-4: jacobswan1/SEED tools/opts.py) is one of them.
SEED_TEMPERATURES = tuple(
    (f"tau_s_{tau_s:g}_tau_t_{tau_t:g}", {"tau_s": tau_s, "tau_t": tau_t})
    for tau_s in (0.1, 0.2, 0.4)
    for tau_t in (1e-4, 0.01, 0.05)
)


@dataclasses.dataclass(frozen=True)
class Scale:
    """Everything a scale changes from the CIFAR-10 recipe (each a documented departure)."""

    dataset: str
    train_split: str  # pre-training split of every run (no labels used)
    test_split: str  # scored once, with the chosen settings
    val_bank_split: str  # validation: the labelled bank / probe training split...
    val_split: str  # ...and the held-out part of the training set it scores
    image_size: int
    batch: int
    teacher_arch: str
    teacher_overrides: dict
    teacher_steps: int
    teacher_lr: float  # peak lr of both teachers at `batch`
    teacher_snapshots: tuple  # fractions of teacher_steps kept as encoders (item 3)
    supervised_steps: int  # the cross-entropy teacher (oracle ablation)
    supervised_lr: float
    student_steps: int
    search_steps: int  # each searched alternative's steps: a cheaper proxy of student_steps
    student_overrides: dict  # arch -> overrides (cifar_stem is always set)
    lr_grid: tuple  # students' peak lr at `batch`, the same grid for every tuned method
    seeds: int  # seeds of each mechanism arm at the chosen settings
    quality_seeds: int  # seeds of each teacher-quality arm
    five_student_steps: int  # the five-student comparison (one seed)
    queue_batches: int  # queue = queue_batches x batch
    num_prototypes: int
    linear_epochs: int
    mechanism_student: str
    eval_batch: int
    knn_monitor_every_epochs: int  # teachers' and MoCo v2 students' kNN curve (validation)
    readings: tuple = tuple(name for name, _ in READINGS)  # the searched subset
    seed_temperatures: tuple = tuple(name for name, _ in SEED_TEMPERATURES)
    shufflenet: str = "shufflenetv2_x1_0"  # the ShuffleNetV2 width of this scale
    student_bn: str = "split:8"
    cosine_unit: str = "epoch"

    def students(self, families=STUDENT_FAMILIES) -> tuple[str, ...]:
        return tuple(self.shufflenet if f == "shufflenetv2" else f for f in families)

    def snapshot_steps(self) -> tuple[int, ...]:
        return tuple(int(round(f * self.teacher_steps)) for f in self.teacher_snapshots)


_SMALL_STUDENTS = {
    "resnet18": {"width_multiplier": 0.125},
    "mobilenetv3_large": {"width_multiplier": 0.25},
    "efficientnet_b0": {"width_multiplier": 0.25},
    "alexnet": {"width_multiplier": 0.25},
}

SCALES = {
    "tiny": Scale(
        dataset="rekd_shapes/tiny",
        train_split="train",
        test_split="test",
        val_bank_split="train[:160]",
        val_split="train[160:]",
        image_size=16,
        batch=16,
        teacher_arch="resnet18",
        teacher_overrides={"width_multiplier": 0.125},
        teacher_steps=8,
        teacher_lr=0.06,
        teacher_snapshots=(0.5,),
        supervised_steps=4,
        supervised_lr=0.1,
        student_steps=3,
        search_steps=2,
        student_overrides=_SMALL_STUDENTS,
        lr_grid=(0.01, 0.02),
        seeds=2,
        quality_seeds=1,
        five_student_steps=2,
        queue_batches=4,
        num_prototypes=10,
        linear_epochs=2,
        mechanism_student="alexnet",
        eval_batch=16,
        knn_monitor_every_epochs=0,
        readings=("prototype", "sinkhorn"),
        seed_temperatures=("tau_s_0.2_tau_t_0.0001", "tau_s_0.2_tau_t_0.01"),
        shufflenet="shufflenetv2_x0_5",
        student_bn="global",
        cosine_unit="step",
    ),
    # Two CPU cores: CIFAR-10 at 16 px, all 50,000 training images, quarter-width teachers.
    "cpu": Scale(
        dataset="cifar10",
        train_split="train",
        test_split="test",
        val_bank_split="train[:45000]",
        val_split="train[45000:]",
        image_size=16,
        batch=256,
        teacher_arch="resnet18",
        teacher_overrides={"width_multiplier": 0.25},
        teacher_steps=12000,
        teacher_lr=0.06,
        teacher_snapshots=(0.05, 0.15, 0.4),
        supervised_steps=6000,
        supervised_lr=0.1,
        student_steps=1500,
        search_steps=500,
        student_overrides=_SMALL_STUDENTS,
        lr_grid=(0.015, 0.03, 0.06),
        seeds=3,
        quality_seeds=2,
        five_student_steps=800,
        queue_batches=16,
        num_prototypes=100,
        linear_epochs=30,
        mechanism_student="alexnet",
        eval_batch=512,
        knn_monitor_every_epochs=6,
        shufflenet="shufflenetv2_x0_5",
        student_bn="global",
        cosine_unit="step",
    ),
    "gpu": Scale(
        dataset="cifar10",
        train_split="train",
        test_split="test",
        val_bank_split="train[:45000]",
        val_split="train[45000:]",
        image_size=32,
        batch=512,
        teacher_arch="resnet18",
        teacher_overrides={},
        teacher_steps=200 * 97,
        teacher_lr=0.06,
        teacher_snapshots=(0.05, 0.15, 0.4),
        supervised_steps=100 * 88,
        supervised_lr=0.2,
        student_steps=50 * 97,
        search_steps=16 * 97,
        student_overrides={},
        lr_grid=(0.03, 0.06, 0.12),
        seeds=3,
        quality_seeds=2,
        five_student_steps=50 * 97,
        queue_batches=8,
        num_prototypes=100,
        linear_epochs=100,
        mechanism_student="resnet18",
        eval_batch=1024,
        knn_monitor_every_epochs=10,
    ),
}


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


# The mechanism arms: name -> (label, method, rekd.teacher, teacher arm).
ARMS = {
    "mocov2": ("MoCo v2", "mocov2", "", ""),
    "seed": ("SEED", "seed", "", "teacher/mocov2"),
    "rekd": ("ReKD", "rekd", "offline", "teacher/mocov2"),
    "rekd_supervised": (
        "ReKD, supervised teacher (oracle)",
        "rekd",
        "offline",
        "teacher/supervised",
    ),
    "rekd_oracle": ("ReKD, true-label relations (oracle)", "rekd", "none", ""),
}
# The arms each search tunes, and the arms that follow its choice.
SEARCHED = {"rekd": ("rekd", dict(READINGS)), "seed": ("seed", dict(SEED_TEMPERATURES))}
FOLLOWS = {"rekd": "rekd", "rekd_supervised": "rekd", "rekd_oracle": "rekd", "seed": "seed"}
# The methods whose peak lr the grid chooses, and the ablations that take their method's lr.
TUNED = ("mocov2", "seed", "rekd")
LR_FOLLOWS = {"rekd_supervised": "rekd", "rekd_oracle": "rekd"}
MODES = ("knn", "linear")


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
        if arm == "rekd_oracle":
            config.rekd.relation = "oracle"
    if arm == "mocov2" and arch == scale.mechanism_student and scale.knn_monitor_every_epochs:
        # MoCo v2's kNN curve every epoch, on validation as the search scores it: its early
        # dip below the random encoder (the 'select/random_init' row).
        config.knn_monitor.update(every_epochs=1)
    return config


def _lr_name(lr: float) -> str:
    return f"lr{lr:g}"


def _variant(arm: str, choices: dict) -> tuple[str, dict]:
    """(name, overrides) of the setting ARM runs with, given the choices made so far."""
    search = FOLLOWS.get(arm)
    if search is None:
        return "default", {}
    name = choices.get(search, READINGS[0][0] if search == "rekd" else scale_default_seed())
    overrides = dict(SEARCHED[search][1][name])
    if arm == "rekd_oracle":  # true-label relations: the miner's fields do not apply
        overrides = {
            k: v
            for k, v in overrides.items()
            if k not in ("relation", "assignment", "num_prototypes")
        }
        name = name if overrides or name == "default" else "default"
    return name, overrides


def scale_default_seed() -> str:
    """The SEED setting of the released code (tau_s 0.2, tau_t 1e-4)."""
    return "tau_s_0.2_tau_t_0.0001"


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


def snapshot_arm_name(fraction: float) -> str:
    return f"teacher/mocov2_{round(100 * fraction)}pct"


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


def select_name(arm: str, variant: str, lr: float) -> str:
    """A grid run: ARM with setting VARIANT at peak lr LR, the full student budget."""
    return f"select/{arm}/{variant}/{_lr_name(lr)}"


def search_name(arm: str, variant: str) -> str:
    """A search run: ARM with setting VARIANT, scale.search_steps at the middle lr."""
    return f"search/{arm}/{variant}"


def middle_lr(scale: Scale) -> float:
    return scale.lr_grid[len(scale.lr_grid) // 2]


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
        settings = SEARCHED[arm][1]
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
        variant, overrides = _variant(arm, choices)
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
        variant, overrides = _variant(arm, choices)
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
            variant, overrides = _variant(arm, choices)
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


STUDENT_ARMS = ("mocov2", "seed", "rekd")


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
            variant, overrides = _variant(arm, choices)
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


def choose(rows: list[dict]) -> dict:
    """The row with the best validation kNN top-1 (ties: the better linear probe)."""
    return max(
        rows, key=lambda r: (r["eval"]["knn"]["top1"], r["eval"].get("linear", {}).get("top1", 0.0))
    )


def _values(rows: list[dict], mode: str) -> list[float]:
    return [r["eval"][mode]["top1"] for r in rows if mode in r["eval"]]


def _stats(values: list[float]) -> dict:
    v = np.asarray(values, float)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "spread": float(v.max() - v.min()),
        "values": [float(x) for x in v],
    }


def precision(rows: list[dict]) -> float | None:
    values = [
        r.get("diagnostics", {}).get("positive_label_precision")
        for r in rows
        if r.get("method") == "rekd"
    ]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def margin(ours: list[dict], theirs: list[dict], mode: str) -> dict:
    """Mean of OURS minus mean of THEIRS, the range of the seed-paired differences, and whether
    the two arms' seed ranges are apart (every seed of one above every seed of the other)."""
    a, b = _values(ours, mode), _values(theirs, mode)
    by_seed_a = {r["seed"]: r["eval"][mode]["top1"] for r in ours if mode in r["eval"]}
    by_seed_b = {r["seed"]: r["eval"][mode]["top1"] for r in theirs if mode in r["eval"]}
    paired = [by_seed_a[s] - by_seed_b[s] for s in sorted(by_seed_a) if s in by_seed_b]
    return {
        "mean": float(np.mean(a) - np.mean(b)),
        "paired_min": float(min(paired)) if paired else None,
        "paired_max": float(max(paired)) if paired else None,
        "outside_seed_spread": bool(min(a) > max(b) or max(a) < min(b)),
    }


def mechanism_summary(rows: list[dict]) -> dict:
    """Per final arm: kNN / linear over seeds, label precision; ReKD's margins."""
    final = {arm: [r for r in rows if r["name"].startswith(f"final/{arm}/")] for arm in ARMS}
    out = {"arms": {}, "margins": {}}
    for arm, chosen in final.items():
        if chosen:
            out["arms"][arm] = {
                "label": ARMS[arm][0],
                "seeds": [r["seed"] for r in chosen],
                **{m: _stats(_values(chosen, m)) for m in MODES},
                "label_precision": precision(chosen),
            }
    for other in ("mocov2", "seed"):
        if final["rekd"] and final[other]:
            out["margins"][f"rekd_over_{other}"] = {
                m: margin(final["rekd"], final[other], m) for m in MODES
            }
    return out


def quality_summary(scale: Scale, rows: list[dict]) -> list[dict]:
    """One point per teacher: its test kNN / linear, its mined positives' label precision,
    and SEED's and ReKD's gain over the MoCo v2 student (mean and per-seed range)."""
    by_name = {r["name"]: r for r in rows}
    mocov2 = [r for r in rows if r["name"].startswith("final/mocov2/")]
    if not mocov2:
        return []
    base = {m: float(np.mean(_values(mocov2, m))) for m in MODES}
    teachers = [
        (f"{round(100 * f)}%", step, snapshot_arm_name(f), f"quality/{round(100 * f)}pct")
        for f, step in zip(scale.teacher_snapshots, scale.snapshot_steps())
    ]
    teachers.append(("100%", scale.teacher_steps, "teacher/mocov2", "final"))
    points = []
    for label, step, teacher, prefix in teachers:
        students = {
            arm: [r for r in rows if r["name"].startswith(f"{prefix}/{arm}/")]
            for arm in ("seed", "rekd")
        }
        if not any(students.values()) or teacher not in by_name:
            continue
        point = {
            "teacher": label,
            "teacher_step": step,
            "teacher_eval": by_name[teacher]["eval"],
            "label_precision": precision(students["rekd"]),
        }
        for arm, chosen in students.items():
            if chosen:  # an interrupted stage may have run one arm of a teacher only
                point[arm] = {m: _stats([v - base[m] for v in _values(chosen, m)]) for m in MODES}
        points.append(point)
    oracle = [r for r in rows if r["name"].startswith("final/rekd_oracle/")]
    if oracle:
        points.append(
            {
                "teacher": "true labels (oracle)",
                "teacher_step": None,
                "teacher_eval": None,
                "label_precision": 1.0,
                "rekd": {m: _stats([v - base[m] for v in _values(oracle, m)]) for m in MODES},
            }
        )
    return points


def students_summary(rows: list[dict], scale: Scale) -> dict:
    """arch -> {arm: {'knn', 'linear', 'steps'}} of the five-student comparison."""
    out = {}
    for r in rows:
        parts = r["name"].split("/")
        if r["name"].startswith("students/"):
            arch, arm = parts[1], parts[2]
        elif r["name"].startswith("final/") and parts[2] == "s0" and parts[1] in STUDENT_ARMS:
            arch, arm = scale.mechanism_student, parts[1]
        elif r["name"].startswith("random_init/") and r["arch"] != f"{scale.teacher_arch}_teacher":
            arch, arm = r["arch"], "random_init"
        else:
            continue
        out.setdefault(arch, {})[arm] = {
            m: r["eval"][m]["top1"] for m in MODES if m in r["eval"]
        } | {"steps": r["steps"]}
    return out


def machine() -> str:
    """The hardware and software a result was measured on, as a description."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    return (
        f"{os.cpu_count()}-core {platform.machine()} CPU ({model}), Python "
        f"{platform.python_version()}, jax {jax.__version__}, {jax.devices()[0].platform}"
    )


def _cost(scale: Scale):
    """Relative cost of an arm: training steps x images x the per-image cost of its method and
    encoders (measured ratios at 16 px); an evaluation-only arm, 0.2 student-runs."""

    def cost(arm: plan.Arm) -> float:
        if not arm.trained:
            return 0.2 * scale.student_steps
        c = arm.config
        factor = {"mocov2": 1.0, "seed": 2.2, "rekd": 2.5, "supervised": 0.6}[c.method]
        if c.method == "rekd" and c.rekd.teacher == "none":
            factor = 1.0
        if arm.group == "teacher":
            factor *= 5.5
        return float(c.num_train_steps) * factor + 0.2 * scale.student_steps

    return cost


def run(
    scale_name: str,
    workdir: str,
    data_dir: str,
    *,
    families=STUDENT_FAMILIES,
    plots: bool = True,
    log=print,
) -> dict:
    """Runs the study into WORKDIR (resuming); writes results.json, results.md and plots/
    after every stage; returns the results dict."""
    scale = SCALES[scale_name]
    val = evaluation_config(scale, data_dir, "val")
    test = evaluation_config(scale, data_dir, "test")
    cost = _cost(scale)
    defaults = {"rekd": READINGS[0][0], "seed": scale_default_seed()}
    lrs0 = {arm: middle_lr(scale) for arm in ARMS}

    def after_search(choices):
        """The arms from the grid on, under CHOICES (their names and costs do not depend on
        the learning rates chosen later)."""
        return (
            grid_arms(scale, data_dir, val, choices)
            + final_arms(scale, data_dir, test, choices, lrs0)
            + quality_arms(scale, data_dir, test, choices, lrs0)
            + student_arms(scale, data_dir, test, choices, lrs0, families)
        )

    budget = plan.Budget.of(
        teacher_arms(scale, data_dir) + search_arms(scale, data_dir, val) + after_search(defaults),
        cost,
        workdir,
    )
    result = {
        "scale": scale_name,
        "scale_settings": dataclasses.asdict(scale),
        "data_dir": data_dir,
        "command": " ".join(sys.argv),
        "machine": machine(),
        "chance": None,
        "choices": {},
        "rows": [],
    }
    rows: dict[str, dict] = {}

    def stage(arms, name):
        log(f"stage {name}: {len(arms)} runs")
        for row in plan.run_plan(arms, workdir, test, MODES, cost=cost, log=log, budget=budget):
            rows[row["name"]] = row
        result["rows"] = list(rows.values())
        result["chance"] = result["chance"] or plan.label_chance(test.data, scale.test_split)
        _write(workdir, scale, result, plots)

    stage(teacher_arms(scale, data_dir), "teachers")
    stage(search_arms(scale, data_dir, val), "search")
    choices = {}
    for arm, (_, settings) in SEARCHED.items():
        searched = [rows[search_name(arm, v)] for v in settings if search_name(arm, v) in rows]
        choices[arm] = choose(searched)["name"].split("/")[2]
    result["choices"]["settings"] = choices
    budget.replan(after_search(choices), cost, workdir)
    stage(grid_arms(scale, data_dir, val, choices), "grid")
    lrs = {}
    for arm in TUNED:
        variant, _ = _variant(arm, choices)
        by_name = {select_name(arm, variant, lr): lr for lr in scale.lr_grid}
        lrs[arm] = by_name[choose([rows[name] for name in by_name])["name"]]
    lrs.update({arm: lrs[method] for arm, method in LR_FOLLOWS.items()})
    result["choices"]["lr"] = lrs
    log(f"chosen on validation: settings {choices}, peak lr {lrs}")
    stage(final_arms(scale, data_dir, test, choices, lrs), "final")
    stage(quality_arms(scale, data_dir, test, choices, lrs), "quality")
    stage(student_arms(scale, data_dir, test, choices, lrs, families), "students")
    log(f"wrote {os.path.join(workdir, 'results.json')}, results.md and plots/")
    return result


def summarize(scale: Scale, result: dict) -> None:
    """Adds the summaries of result['rows'] to RESULT (in place)."""
    rows = result["rows"]
    by_name = {r["name"]: r for r in rows}
    settings = result["choices"].get("settings")
    if settings:
        result["grid"] = {}
        for arm in TUNED:
            variant, _ = _variant(arm, settings)
            points = [
                [lr] + [by_name[name]["eval"][m]["top1"] for m in MODES]
                for lr in scale.lr_grid
                if (name := select_name(arm, variant, lr)) in by_name
            ]
            result["grid"][arm] = {"label": ARMS[arm][0], "setting": variant, "points": points}
    result["mechanism"] = mechanism_summary(rows)
    result["quality"] = quality_summary(scale, rows)
    result["students"] = students_summary(rows, scale)
    result["seconds"] = {
        group: round(
            sum(
                r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0)
                for r in rows
                if r["group"] == group
            ),
            1,
        )
        for group in dict.fromkeys(r["group"] for r in rows)
    }


def _write(workdir: str, scale: Scale, result: dict, plots: bool) -> None:
    summarize(scale, result)
    fileio.write_text(os.path.join(workdir, "results.md"), study_report.markdown(result))
    fileio.write_json(os.path.join(workdir, "results.json"), result, default=float)
    if plots:
        result["plots"] = study_figures.draw(result, os.path.join(workdir, "plots"))
        fileio.write_json(os.path.join(workdir, "results.json"), result, default=float)


def _ensure_dataset(scale: Scale, data_dir: str, src: str) -> None:
    """Prepares CIFAR-10 from a JPEG folder when it is not in data_dir yet."""
    if scale.dataset.startswith("rekd_shapes") or sources.find_dataset_dir(scale.dataset, data_dir):
        return
    if not src:
        raise SystemExit(
            f"FATAL: CIFAR-10 is not prepared in {data_dir!r}; pass --src=DIR "
            "(a folder of cifar10/{train,test}/<class>/*.jpg, e.g. extracted from "
            "cifar10-jpeg.tar.gz) to prepare it, or run `python -m "
            "rekd_jax.data.prepare --src DIR --name cifar10 --data_dir "
            f"{data_dir}` first."
        )
    prepare.prepare(src, "cifar10", data_dir)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m rekd_jax.experiments.cifar10",
        description="Does ReKD beat MoCo v2 and SEED with a teacher that knows something? "
        "Teachers, a validation search, seeded test runs, teacher quality and five "
        "students on CIFAR-10 (see the module docstring). Rerunning the same "
        "command skips finished runs.",
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--data_dir", default="", help="TFDS data dir holding cifar10")
    parser.add_argument("--src", default="", help="CIFAR-10 JPEG folder to prepare if needed")
    parser.add_argument(
        "--students",
        default=",".join(STUDENT_FAMILIES),
        help="comma-separated student families of the five-student stage "
        "(shufflenetv2 takes the scale's width)",
    )
    parser.add_argument("--no_plots", action="store_true")
    args = parser.parse_args(argv)
    families = tuple(s for s in args.students.split(",") if s)
    unknown = [s for s in families if s not in STUDENT_FAMILIES]
    if unknown:
        raise SystemExit(
            f"FATAL: unknown student(s) {unknown}; use some of {','.join(STUDENT_FAMILIES)}"
        )
    logging_lib.setup_console()
    _ensure_dataset(SCALES[args.scale], args.data_dir, args.src)
    os.makedirs(args.workdir, exist_ok=True)
    run(args.scale, args.workdir, args.data_dir, families=families, plots=not args.no_plots)


if __name__ == "__main__":
    sys.exit(errors.run_cli(main, debug=False))
