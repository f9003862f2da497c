"""Pre-training recipes as functions: the base config and what each recipe changes.

The files in configs/ are thin: each calls these functions (inheritance by calling, as in the
Flax ImageNet example) and applies its variants (rekd_jax.variants). The library builds its
configs here too (the run signature's defaults, the CIFAR-10 study, the benchmarks), so nothing
under rekd_jax/ imports the configs.

Fields of `base_config()`:

  mode                 'pretrain' (rekd_jax.app dispatches on it)
  method               a key of rekd_jax.methods.METHODS: 'mocov2' | 'seed' | 'rekd' |
                       'supervised' (cross-entropy with labels: the teacher of the oracle
                       ablations only)
  rng_seed             seeds initialisation, augmentation and the data order
  data                 rekd_jax.data.pipeline.default_data_config()
  student / teacher    arch, overrides (backbone fields, e.g. cifar_stem, width_multiplier),
                       projector {hidden (0 = backbone width), dim, bn, layers (2 = MLP,
                       1 = linear head)}; teacher.checkpoint is the encoder directory of an
                       offline teacher (SEED, ReKD offline); teacher.method names the method
                       whose loss trains an online teacher (default 'mocov2')
  mocov2 / seed / rekd / supervised   the method blocks (rekd_jax.methods.<m>.default_config());
                       an online teacher's loss is configured by the block teacher.method
                       names
  global_batch_size, num_epochs, num_train_steps (> 0 overrides num_epochs)
  optimizer            SGD: lr = base_learning_rate * batch / lr_scaling_batch, momentum,
                       weight_decay, exclude_bn_and_bias_from_weight_decay, nesterov,
                       warmup_epochs, then cosine decay to 0, updated every step or once per
                       epoch (cosine_unit 'step' | 'epoch'; 'epoch' is MoCo's main_moco.py
                       adjust_learning_rate, used by the MoCo-reproducing recipes)
  ema_momentum         m of the momentum (key) encoders
  key_bn_splits        shuffle-BN groups of the key encoders over the global batch (0 = auto:
                       one per device, at least 8: MoCo's SplitBN on few devices)
  key_shuffle          how shuffle-BN moves the key encoders' images between devices:
                       'all_gather' (MoCo's shuffle exactly, the default) or 'ppermute' (fewer
                       bytes at pod scale); docs/scaling.md compares them
  key_shuffle_devices  P of 'ppermute' (0 = auto: the largest P <= min(D, 8) with P x key BN
                       splits per device dividing the per-device batch)
  student_bn           BatchNorm of the query/student forward: 'global' (cross-replica over
                       the global batch), 'per_device' (each device's images) or 'split:N' (N
                       groups over the global batch: MoCo's SplitBN); docs/scaling.md
  dtype                compute dtype 'float32' | 'bfloat16' (parameters stay float32)
  log_every_steps, checkpoint_every_steps, keep_checkpoints, async_checkpointing
  knn_monitor          every_epochs (0 = off), k, temperature, train_examples / test_examples
                       (0 = whole split), batch_size, bank_split / query_split (the labelled
                       bank and the scored split; '' = data.train_split / data.eval_split; a
                       validation split carved from the training set keeps the monitor off
                       the test split)
  export_encoder_steps steps at which to also write WORKDIR/encoders/student_step<N> (kept:
                       snapshots of one run, e.g. a teacher at 5%, 15% and 40% of training)
  distributed          enabled, coordinator_address, num_processes, process_id,
                       cpu_collectives ('gloo' for multi-process CPU runs)
  tensorboard          'auto' | 'on' | 'off' (clu writers need TensorFlow)
  allow_config_change  False: resuming a workdir with a config that changes the run stops and
                       lists the changes (rekd_jax.training.resume); True accepts them
"""

from __future__ import annotations

import ml_collections

from rekd_jax import methods
from rekd_jax.data import pipeline
from rekd_jax.methods import seed
from rekd_jax.variants import set_dataset


def encoder_block(arch: str, **overrides) -> ml_collections.ConfigDict:
    """A student / teacher block: architecture, backbone overrides, MoCo v2 projector."""
    return ml_collections.ConfigDict(
        {
            "arch": arch,
            "overrides": dict(overrides),
            "projector": {"hidden": 0, "dim": 128, "bn": False, "layers": 2},
        }
    )


def base_config() -> ml_collections.ConfigDict:
    """MoCo v2, CIFAR-stem ResNet-18, on the embedded rekd_shapes dataset: the base every recipe
    changes (the fields are described in the module docstring). teacher.method names the method
    whose loss trains an online teacher (its block is config[teacher.method]). The method blocks
    come from the registry, rekd_jax.methods.METHODS, in its order."""
    config = ml_collections.ConfigDict()
    config.mode = "pretrain"
    config.method = "mocov2"
    config.rng_seed = 0
    config.data = pipeline.default_data_config()
    config.student = encoder_block("resnet18", cifar_stem=True)
    config.teacher = encoder_block("resnet50")
    config.teacher.checkpoint = ""
    config.teacher.method = "mocov2"
    for name, method in methods.METHODS.items():
        config[name] = method.default_config()
    set_queue_size(config, 4096)
    config.global_batch_size = 256
    config.num_epochs = 200
    config.num_train_steps = 0
    config.optimizer = ml_collections.ConfigDict(
        {
            "base_learning_rate": 0.03,
            "lr_scaling_batch": 256,
            "momentum": 0.9,
            "nesterov": False,
            "weight_decay": 1e-4,
            "exclude_bn_and_bias_from_weight_decay": False,
            "warmup_epochs": 0,
            "cosine_unit": "step",
        }
    )
    config.ema_momentum = 0.99
    config.key_bn_splits = 0
    config.key_shuffle = "all_gather"
    config.key_shuffle_devices = 0
    config.student_bn = "global"
    config.dtype = "float32"
    config.log_every_steps = 50
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 3
    config.async_checkpointing = True
    config.knn_monitor = ml_collections.ConfigDict(
        {
            "every_epochs": 10,
            "k": 200,
            "temperature": 0.1,
            "train_examples": 0,
            "test_examples": 0,
            "batch_size": 256,
            "bank_split": "",
            "query_split": "",
        }
    )
    config.export_encoder_steps = ()
    config.distributed = ml_collections.ConfigDict(
        {
            "enabled": False,
            "coordinator_address": "",
            "num_processes": 1,
            "process_id": 0,
            "cpu_collectives": "gloo",
        }
    )
    config.tensorboard = "auto"
    config.allow_config_change = False
    return config


def set_queue_size(config: ml_collections.ConfigDict, size: int) -> None:
    """The same queue size K for every method block that has a queue (a queue_size field)."""
    for name in methods.METHODS:
        if name in config and "queue_size" in config[name]:
            config[name].queue_size = size


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
