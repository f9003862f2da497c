"""Quick start: teacher -> ReKD student -> MoCo v2 baseline -> kNN + linear probe, on a CPU.

Command (the README's main command):
  python main.py --config=configs/quickstart.py --workdir=/tmp/qs
What it does, on the embedded rekd_shapes dataset (built on first use, no download):
  1. teacher:  MoCo v2, CIFAR-stem ResNet-18 at width 0.25
  2. student:  ReKD (offline, from the teacher just trained), CIFAR-stem AlexNet (with BN)
  3. baseline: the same AlexNet with plain MoCo v2, same steps as the student
  4. kNN (k 200, tau 0.1) and a fast linear probe of every encoder (rekd_jax.evaluation),
     then a results table on stdout and WORKDIR/results.json.
Views are 16 px crops of the 32 px images to fit a laptop CPU.
Hardware / time: a laptop-class CPU. Measured on this project's 2-core CPU (jax 0.10.2):
3 min 18 s in total (teacher 600 steps 70 s, ReKD student 300 steps 48 s, MoCo v2 baseline
300 steps 37 s; the rest is building rekd_shapes, compilation and the six evaluations).
Variant `:tiny` (rekd_shapes/tiny, 6 steps per stage) is what the end-to-end test runs.
Expected result (measured in that run; 2,000 test images, chance 10%):
  teacher  MoCo v2 ResNet-18 x0.25  kNN 17.8%  linear 17.4%
  student  ReKD AlexNet             kNN 16.8%  linear 24.6%
  baseline MoCo v2 AlexNet          kNN 18.1%  linear 25.5%
A few hundred CPU steps leave the teacher weak, and ReKD can only pass on what the teacher has
learnt: this run shows that the whole pipeline works end to end, not the method's gain (the
paper's claims are at ImageNet scale; see configs/alexnet.py and configs/cifar10_student.py).
"""
import ml_collections

from configs import default  # inheritance by calling (run from the repository root)
from rekd_jax.evaluation import config as eval_config


def _base(steps: int, batch: int, dataset: str) -> ml_collections.ConfigDict:
    config = default.get_config()
    config.data.update(dataset=dataset, image_size=16, eval_resize=16, num_workers=2)
    config.data.augment.blur_prob = 0.0
    config.global_batch_size = batch
    config.num_train_steps = steps
    default.set_queue_size(config, 8 * batch)
    config.rekd.num_prototypes = 10
    config.optimizer.base_learning_rate = 0.06
    config.optimizer.weight_decay = 5e-4
    config.ema_momentum = 0.99
    config.log_every_steps = max(1, steps // 5)
    config.checkpoint_every_steps = steps
    config.knn_monitor.every_epochs = 0
    return config


def get_config(arg=None):
    tiny = arg == "tiny"
    if arg not in (None, "", "tiny"):
        raise ValueError(f"configs/quickstart.py: unknown variant {arg!r}; use ':tiny' or none")
    # The teacher gets more steps than the students: ReKD can only pass on what it has learnt.
    teacher_steps, steps, batch = (6, 6, 16) if tiny else (600, 300, 64)
    dataset = "rekd_shapes/tiny" if tiny else "rekd_shapes"
    teacher = _base(teacher_steps, batch, dataset)
    teacher.method = "mocov2"
    teacher.student.arch = "resnet18"
    teacher.student.overrides = {"cifar_stem": True, "width_multiplier": 0.125 if tiny else 0.25}
    student = _base(steps, batch, dataset)
    student.method = "rekd"
    student.rekd.teacher = "offline"
    student.student.arch = "alexnet"
    student.student.overrides = {"cifar_stem": True}
    baseline = _base(steps, batch, dataset)
    baseline.method = "mocov2"
    baseline.student.arch = "alexnet"
    baseline.student.overrides = {"cifar_stem": True}

    evaluation = eval_config.default_eval_config()
    evaluation.data = teacher.data.copy_and_resolve_references()
    evaluation.eval_batch_size = 64 if not tiny else 16
    evaluation.linear.update(fast=True, epochs=30 if not tiny else 2, batch_size=64,
                             learning_rate=1.0, schedule="cosine", milestones=())
    evaluation.knn.chunk_size = 128

    config = ml_collections.ConfigDict()
    config.mode = "quickstart"
    config.runs = ml_collections.ConfigDict(
        {"teacher": teacher, "student": student, "baseline": baseline})
    config.evaluation = evaluation
    config.eval_modes = ("knn", "linear")
    return config
