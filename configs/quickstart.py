"""Quick start: a MoCo v2 teacher, then ReKD, SEED and MoCo v2 students, on a CPU.

Command (the README's main command):
  python main.py --config=configs/quickstart.py --workdir=/tmp/qs
What it does, on the embedded rekd_shapes dataset (built on first use, no download):
  0. random init: the untrained teacher and student architectures, scored like the rest
  1. teacher:  MoCo v2, CIFAR-stem ResNet-18 at width 0.125, 1,700 steps on 12 px views
  2. student:  ReKD (offline, from the teacher just trained), CIFAR-stem AlexNet (with BN) at
               width 0.25, 700 steps
  3. seed:     SEED from the same teacher, the same AlexNet, steps and recipe
  4. baseline: the same AlexNet with plain MoCo v2, the same steps and recipe
  5. kNN (k 200, tau 0.1) and a fast linear probe of every encoder (rekd_jax.evaluation) at
     16 px, a table with each row's gain over its random init and the label precision of
     ReKD's mined positives, the checks of rekd_jax.experiments.quickstart (each with its value
     and whether it holds; ReKD's margins over SEED and MoCo v2 beside them), and
     WORKDIR/results.json.
Variants: `:seeds` runs the quick start once per seed of SEEDS (WORKDIR/seed_<N>) and prints
each row's mean and [min, max]; `:lr_grid` chooses the students' peak lr (LR) from LR_GRID on a
validation split (train[:9000] as the bank and probe training set, train[9000:] scored; the
best validation kNN per method); `:x4` trains the students four times longer (2,800 steps, each
cosine over its own length; the teacher as it is), the quick start's budget probe (with
`:seeds`: docs/results.md#quick-start); `:tiny` (rekd_shapes/tiny, a few steps per stage) is
what the tests run.
Recipe (every value a field; departures from configs/default.py): 16 px views of the 32 px
images, batch 128, queue 8 batches (1,024 keys, at most 8 steps old), warmup-free cosine, wd
5e-4, m 0.99, tau 0.2, no blur, SimCLR's colour distortion of strength 1 (jitter
0.8/0.8/0.8/0.2, p 0.8; grayscale p 0.2; Chen et al. 2020, Appendix A), because object colour
is the embedded data's main nuisance; ReKD's prototype reading (relation 'prototype', 100
prototypes; the library default is 'topk'). Peak lr at batch 128, not scaled: teacher
0.06; students from the validation grid: ReKD 0.02, SEED 0.04, MoCo v2 0.08 (MoCo v2 collapses
at 0.16). The teacher trains on 12 px views (0.56x the compute of 16 px) and is evaluated, and
mines the students' relations, at 16 px. The students train 700 steps: a MoCo v2 AlexNet first
lowers kNN below its random init's before raising it.
Hardware / time and expected result: 2-core x86 CPU, Python 3.11, jax 0.10.2: 5 min 14 s wall
(508 CPU-s) with the dataset build and an empty compilation cache, 4 min 46 s (460 CPU-s) with a
warm cache. kNN / linear, mean [min, max] over seeds 0-2: teacher 53.6 [49.4, 58.6] / 61.8
[55.6, 66.8], ReKD 54.3 [52.8, 55.2] / 64.2 [62.8, 66.8], SEED 55.7 [52.1, 58.0] / 68.1 [63.1,
71.1], MoCo v2 35.9 [24.4, 47.5] / 48.5 [40.6, 57.2]; the README's table, docs/results.md.
"""

import ml_collections

from rekd_jax import recipes
from rekd_jax.evaluation import config as eval_config


def _base(steps: int, batch: int, dataset: str, peak_lr: float) -> ml_collections.ConfigDict:
    config = recipes.base_config()
    config.data.update(dataset=dataset, image_size=16, eval_resize=16, num_workers=2)
    config.data.augment.update(blur_prob=0.0, jitter=(0.8, 0.8, 0.8, 0.2))
    config.global_batch_size = batch
    config.num_train_steps = steps
    recipes.set_queue_size(config, 8 * batch)
    config.rekd.num_prototypes = 100
    config.rekd.relation = "prototype"  # the reading of LR and of docs/results.md's seeds
    config.optimizer.base_learning_rate = peak_lr
    config.optimizer.lr_scaling_batch = batch
    config.optimizer.weight_decay = 5e-4
    config.ema_momentum = 0.99
    config.log_every_steps = max(1, steps // 10)
    config.checkpoint_every_steps = steps
    config.knn_monitor.every_epochs = 0
    return config


# Peak lr of each student method at batch 128: the best validation kNN of LR_GRID
# (configs/quickstart.py:lr_grid; the grid is in docs/results.md).
LR = {"rekd": 0.02, "seed": 0.04, "mocov2": 0.08}


LR_GRID = (0.01, 0.02, 0.04, 0.08, 0.16)
SEEDS = (0, 1, 2)
VARIANT_NAMES = ("tiny", "lr_grid", "seeds", "x4")  # parsed here: each builds another plan
STUDENT_BUDGET_FACTOR = {"x4": 4}  # the students' steps, times the quick start's


def get_config(arg=None):
    variants = [v for v in (arg or "").split(",") if v]
    unknown = [v for v in variants if v not in VARIANT_NAMES]
    if unknown:
        raise ValueError(
            f"configs/quickstart.py: unknown variant {unknown[0]!r}; use "
            f"{', '.join(repr(v) for v in VARIANT_NAMES)} or several ('tiny,seeds')"
        )
    tiny = "tiny" in variants
    # The teacher gets more steps than the students: ReKD can only pass on what it has learnt.
    teacher_steps, steps, batch = (6, 6, 16) if tiny else (1700, 700, 128)
    for variant, factor in STUDENT_BUDGET_FACTOR.items():
        steps *= factor if variant in variants else 1
    dataset = "rekd_shapes/tiny" if tiny else "rekd_shapes"
    teacher = _base(teacher_steps, batch, dataset, peak_lr=0.06)
    teacher.method = "mocov2"
    teacher.student.arch = "resnet18"
    teacher.student.overrides = {"cifar_stem": True, "width_multiplier": 0.125}
    teacher.data.image_size = 12  # its views only; it is evaluated (and mines) at 16 px
    students = {}
    for name, method, peak_lr in (
        ("student", "rekd", LR["rekd"]),
        ("seed", "seed", LR["seed"]),
        ("baseline", "mocov2", LR["mocov2"]),
    ):
        run = _base(steps, batch, dataset, peak_lr=peak_lr)
        run.method = method
        run.rekd.teacher = "offline"
        run.student.arch = "alexnet"
        run.student.overrides = {"cifar_stem": True, "width_multiplier": 0.25}
        run.teacher.arch = teacher.student.arch  # the offline teacher's (its checkpoint's)
        run.teacher.overrides = dict(teacher.student.overrides)
        students[name] = run
    seed = ml_collections.FieldReference(0)  # --config.seed=N reseeds every stage
    for run in (teacher, *students.values()):
        run.rng_seed = seed

    evaluation = eval_config.default_eval_config()
    evaluation.data = students["student"].data.copy_and_resolve_references()  # 16 px
    evaluation.eval_batch_size = 64 if not tiny else 16
    evaluation.linear.update(
        fast=True,
        epochs=30 if not tiny else 2,
        batch_size=64,
        learning_rate=1.0,
        schedule="cosine",
        milestones=(),
    )
    evaluation.knn.chunk_size = 128

    config = ml_collections.ConfigDict()
    config.mode = "quickstart"
    config.seed = seed
    config.seeds = SEEDS if "seeds" in variants else ()  # non-empty: one run per seed
    config.runs = ml_collections.ConfigDict({"teacher": teacher, **students})
    config.evaluation = evaluation
    config.eval_modes = ("knn", "linear")
    if "lr_grid" in variants:  # the students' lr chosen on validation (quickstart_grid)
        config.mode = "quickstart_grid"
        config.lr_grid = LR_GRID[:2] if tiny else LR_GRID
    return config
