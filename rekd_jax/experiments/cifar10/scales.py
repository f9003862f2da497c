"""The study's scales: everything a scale changes from the CIFAR-10 recipe, one row per scale
of one table (SCALES), each field a documented departure; and the alternatives the first search
chooses among (READINGS, SEED_TEMPERATURES), of which a scale may search a subset."""

from __future__ import annotations

import dataclasses

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


STUDENT_FAMILIES = ("alexnet", "mobilenetv3_large", "shufflenetv2", "efficientnet_b0", "resnet18")


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
    # The budget axis: the mechanism arms at these longer student budgets (each run's cosine
    # over its own length), with budget_seeds seeds at each.
    budget_steps: tuple = ()
    budget_seeds: tuple = ()
    # ReKD in the teacher's space (an extension, docs/method.md): the target's mix beta and k.
    space_betas: tuple = (0.25, 0.5, 0.75, 1.0)
    space_topks: tuple = (5, 10, 20)
    # The joint search of the chosen relation's temperature and k (SEED's search size: 3 x 3).
    joint_temperatures: tuple = (0.1, 0.2, 0.4)
    joint_topks: tuple = (5, 10, 20)
    # What the relation miner reads: the teacher's output, and the view it embeds.
    miner_inputs: tuple = ("embedding", "backbone")
    miner_views: tuple = ("key", "weak")

    def epochs(self, steps: int, train_size: int) -> float:
        """Passes over the training split that STEPS steps at the scale's batch make."""
        return steps * self.batch / train_size

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
        budget_steps=(6,),
        budget_seeds=(1,),
        space_betas=(0.5,),
        space_topks=(5,),
        joint_temperatures=(0.1,),
        joint_topks=(5,),
        miner_inputs=("backbone",),
        miner_views=("weak",),
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
        budget_steps=(6000, 15000),
        budget_seeds=(2, 1),
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
        mechanism_student="alexnet",  # a lightweight student, not the teacher's architecture
        eval_batch=1024,
        knn_monitor_every_epochs=10,
        budget_steps=(200 * 97, 500 * 97),
        budget_seeds=(2, 1),
    ),
}


# Training-split sizes of the study's datasets (epochs in the printed plan).
TRAIN_EXAMPLES = {"cifar10": 50000}
