"""Every recipe as functions, in one place: the pre-training base config and what each
pre-training recipe changes (here), the evaluation configs and their dataset variants
(rekd_jax.recipes.evaluation), and the quick start's plan (rekd_jax.recipes.quickstart).

The files in configs/ are thin: each calls these functions (inheritance by calling, as in the
Flax ImageNet example) and applies its variants (rekd_jax.variants). The library builds its
configs here too (the CIFAR-10 study, the benchmarks), so nothing under rekd_jax/ imports the
configs.

The pre-training base, base_config() with every field, is training's own
(rekd_jax.defaults, whose docstring describes each field); the recipes change it.
"""

from __future__ import annotations

import ml_collections

from rekd_jax.defaults import base_config, set_queue_size
from rekd_jax.methods import seed
from rekd_jax.variants import apply_variants, set_dataset


def imagenet(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """ImageNet-1k at 224 px with the MoCo v2 recipe of method.md (200 epochs, batch 256,
    lr 0.03 x batch/256 cosine, wd 1e-4, K 65536, m 0.999, blur on).

    As facebookresearch/moco main_moco.py (and jacobswan1/SEED main.py) have it: the host
    draws RandomResizedCrop over the full decoded image (data.train_crop='host'; 'device' is
    the faster 256 x 256 centre pre-crop), the cosine steps once per epoch
    (optimizer.cosine_unit='epoch'), and the query/student BatchNorm sees 32 images per group
    (student_bn='split:8': MoCo's per-GPU BN of 8 GPUs x 32 images, on any device count
    dividing 8).
    """
    set_dataset(config.data, "imagenet")
    config.data.augment.blur_prob = 0.5
    config.global_batch_size = 256
    config.num_epochs = 200
    config.student_bn = "split:8"
    config.optimizer.cosine_unit = "epoch"
    config.optimizer.base_learning_rate = 0.03
    config.optimizer.weight_decay = 1e-4
    config.ema_momentum = 0.999
    set_queue_size(config, 65536)
    config.rekd.num_prototypes = 1000
    config.dtype = "bfloat16"
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2500
    config.knn_monitor.update(every_epochs=10, train_examples=50000, test_examples=10000)
    config.student.overrides = {}
    config.teacher.overrides = {}
    return config


def cifar10(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """CIFAR-10 recipe of the MoCo CIFAR-10 demo, followed exactly where our config has the field.

    Source: facebookresearch/moco, branch colab-notebook, colab/moco_cifar10_demo.ipynb
    (arguments cell and ModelMoCo): ResNet-18 with a CIFAR stem (3x3 stride-1 conv1, no
    max-pool), a linear 128-d head (`projector.layers=1`), SGD lr 0.06 at batch 512 (the demo:
    "0.06 for batch 512 (or 0.03 for batch 256)", i.e. linear scaling), momentum 0.9, wd 5e-4,
    cosine over 200 epochs, K 4096, m 0.99, tau 0.1, SplitBN with 8 groups (key encoder with
    shuffling), asymmetric loss; augmentation RandomResizedCrop(32) (scale 0.08-1), flip,
    ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2, no blur; CIFAR mean/std.
    Published result: weighted kNN (k 200, tau 0.1) 82.6% after 200 epochs (85.3% symmetric).
    The demo's per-epoch cosine is optimizer.cosine_unit='epoch'; its SplitBN of 8 groups on
    the query is student_bn='split:8' and on the keys key_bn_splits=8.
    Departures: the kNN monitor scores the pooled backbone features (the demo scores the 128-d
    head output; evaluation protocols read the backbone, as MoCo's linear probe does); ReKD's
    100 prototypes are ours (method.md). The CPU scale of the CIFAR-10 study departs further,
    each a field of its Scale (rekd_jax/experiments/cifar10/scales.py).
    """
    set_dataset(config.data, "cifar10")
    config.data.augment.update(
        crop_scale=(0.08, 1.0),
        blur_prob=0.0,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2023, 0.1994, 0.2010),
    )
    config.global_batch_size = 512
    config.num_epochs = 200
    config.optimizer.base_learning_rate = 0.06
    config.optimizer.lr_scaling_batch = 512
    config.optimizer.weight_decay = 5e-4
    config.ema_momentum = 0.99
    set_queue_size(config, 4096)
    for block in ("mocov2", "rekd"):
        config[block].temperature = 0.1
    config.key_bn_splits = 8
    config.student_bn = "split:8"
    config.optimizer.cosine_unit = "epoch"
    config.rekd.num_prototypes = 100
    config.knn_monitor.update(every_epochs=10, train_examples=0, test_examples=0)
    config.student.overrides = {"cifar_stem": True}
    config.teacher.overrides = {"cifar_stem": True}
    config.student.projector.layers = 1
    config.teacher.projector.layers = 1
    return config


def _cifar_stems(config: ml_collections.ConfigDict) -> None:
    """Small images (32 px and less) need the CIFAR stems of the student and the teacher."""
    for part in (config.student, config.teacher):
        part.overrides = {**part.overrides.to_dict(), "cifar_stem": True}


def shapes(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The embedded rekd_shapes dataset (10,000 train / 2,000 test, 32 px, built on first use;
    no download), with CIFAR stems and no blur; the recipe's other fields stay."""
    set_dataset(config.data, "shapes")
    config.data.augment.blur_prob = 0.0
    _cifar_stems(config)
    return config


def tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The embedded toy data rekd_shapes/tiny (200 train / 100 test images, 32 px), with CIFAR
    stems and no blur: with runlocal, the laptop smoke run of any recipe."""
    shapes(config)
    set_dataset(config.data, "tiny")
    return config


def runlocal(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks steps and sizes for a laptop CPU but keeps the dataset (add `tiny` for the toy
    data): 16 px views, CIFAR stems, 1/8-width ResNets, batch 32, queue 128, 8 steps."""
    config.data.update(image_size=16, eval_resize=16, num_workers=2)
    if config.data.host_size:
        config.data.host_size = 32  # the host resize feeds the 16 px crops
    config.data.augment.blur_prob = 0.0
    _cifar_stems(config)
    for part in (config.student, config.teacher):
        if part.arch.startswith("resnet"):
            part.overrides = {**part.overrides.to_dict(), "width_multiplier": 0.125}
    config.global_batch_size = 32
    set_queue_size(config, 128)
    config.rekd.num_prototypes = 10
    config.num_train_steps = 8
    config.optimizer.warmup_epochs = 0
    config.log_every_steps = 4
    config.checkpoint_every_steps = 4
    config.knn_monitor.update(every_epochs=0)
    config.key_bn_splits = 0
    config.dtype = "float32"
    return config


def offline_teacher(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """ReKD with a frozen teacher: pass --config.teacher.checkpoint=DIR (the encoders/student of
    a teacher run, or an import_torch output)."""
    config.rekd.teacher = "offline"
    return config


def online_teacher(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """ReKD with the teacher trained alongside the student (by the loss of the method
    config.teacher.method names: MoCo v2 by default)."""
    config.rekd.teacher = "online"
    return config


def mocov2_baseline(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The same student trained alone with plain MoCo v2 (the baseline of the comparison)."""
    config.method = "mocov2"
    return config


def seed_baseline(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """SEED (response distillation) from a frozen teacher (needs --config.teacher.checkpoint)."""
    config.method = "seed"
    return config


def seed_tau_paper(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """SEED with the paper's teacher temperature tau_t = 0.01 instead of the released code's
    1e-4 (the default; see rekd_jax.methods.seed.default_config)."""
    config.seed.tau_t = seed.TAU_T_PAPER
    return config


# The variants of every config (`--config=configs/NAME.py:VARIANT,...`): the base's, and the
# students' (every ReKD student recipe).
BASE_VARIANTS = {"tiny": tiny, "runlocal": runlocal}
STUDENT_VARIANTS = {
    "offline": offline_teacher,
    "online": online_teacher,
    "mocov2": mocov2_baseline,
    "seed": seed_baseline,
    "seed_tau_paper": seed_tau_paper,
    "shapes": shapes,
    "tiny": tiny,
    "runlocal": runlocal,
}


def imagenet_student(arch: str) -> ml_collections.ConfigDict:
    """ReKD on ImageNet: an `arch` student and an online ResNet-50 teacher (the paper's
    setting); the STUDENT_VARIANTS change the teacher mode or the method."""
    config = imagenet(base_config())
    config.method = "rekd"
    config.student.arch = arch
    config.teacher.arch = "resnet50"
    config.rekd.teacher = "online"
    return config


def imagenet_teacher() -> ml_collections.ConfigDict:
    """MoCo v2 ResNet-50 on ImageNet: the offline teacher of the ReKD / SEED recipes
    (configs/teacher_resnet50.py)."""
    config = imagenet(base_config())
    config.method = "mocov2"
    config.student.arch = "resnet50"
    return config


def ep800(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """800 epochs instead of 200."""
    config.num_epochs = 800
    return config


IMAGENET_TEACHER_VARIANTS = {"ep800": ep800, "shapes": shapes, "tiny": tiny, "runlocal": runlocal}


def cifar10_teacher() -> ml_collections.ConfigDict:
    """MoCo v2 CIFAR-stem ResNet-50 on CIFAR-10 (configs/cifar10_teacher.py)."""
    config = cifar10(base_config())
    config.method = "mocov2"
    config.student.arch = "resnet50"
    return config


def resnet18_teacher(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A CIFAR-stem ResNet-18 teacher instead of the ResNet-50."""
    config.student.arch = "resnet18"
    return config


def ep400(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """400 epochs (teachers may train longer, method.md)."""
    config.num_epochs = 400
    return config


CIFAR10_TEACHER_VARIANTS = {
    "resnet18": resnet18_teacher,
    "ep400": ep400,
    "shapes": shapes,
    "tiny": tiny,
    "runlocal": runlocal,
}


def cifar10_student(arg: str | None, config_file: str) -> ml_collections.ConfigDict:
    """ReKD on CIFAR-10 from an offline ResNet-50 teacher (configs/cifar10_student.py): the
    first name of `arg` is the student architecture (default alexnet), the rest are
    STUDENT_VARIANTS."""
    names = [a for a in (arg or "alexnet").split(",") if a]
    arch, variants = names[0], ",".join(names[1:])
    config = cifar10(base_config())
    config.method = "rekd"
    config.rekd.teacher = "offline"
    config.student.arch = arch
    config.teacher.arch = "resnet50"
    return apply_variants(config, variants, STUDENT_VARIANTS, config_file)
