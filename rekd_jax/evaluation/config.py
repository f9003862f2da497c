"""Evaluation config: every protocol's fields with defaults, and their validation.

`default_eval_config()` is the base of configs/linear_eval.py, conv_probe.py, knn_eval.py and
semi_supervised.py (each calls it and changes fields). Fields:

  mode              'linear' | 'conv_probe' | 'knn' | 'semi_supervised'
  checkpoint        encoder directory (WORKDIR/encoders/student of a pre-training run, or the
                    untrained baseline init:ARCH[:field=value,...,seed=N]; or the
                    output of `python -m rekd_jax.tools.import_torch`)
  seed              probe initialisation, shuffling, augmentation, label subsets
  data              rekd_jax.data.pipeline.default_data_config(): dataset, splits, image_size
                    (training crop and evaluation centre crop), eval_resize, augment (the
                    normalisation; probes zero its colour/blur probabilities)
  dtype             backbone compute dtype ('float32' | 'bfloat16'); heads stay float32
  eval_batch_size   global batch of feature extraction and scoring (the last batch is padded)
  cache_features    keep extracted features as npz under features_dir (reused on rerun)
  features_dir      where cached features live ('' = WORKDIR/features); the kNN and fast
                    linear protocols extract the same pooled features, so evaluations of one
                    encoder that share this folder extract them once
  checkpoint_every_epochs, keep_checkpoints   probe / fine-tuning checkpoints (WORKDIR/ckpt_*)
  tensorboard       'auto' | 'on' | 'off' (clu writers need TensorFlow)
  distributed       multi-host setup (rekd_jax.core.distributed): enabled,
                    coordinator_address, num_processes, process_id, cpu_collectives
  linear            MoCo linear protocol (facebookresearch/moco main_lincls.py): epochs 100,
                    batch_size 256, SGD learning_rate 30, momentum 0.9, no weight decay,
                    schedule 'step' at milestones (60, 80) x0.1 (or 'cosine' / 'constant'),
                    RandomResizedCrop(crop_scale) + flip, head init N(0, 0.01^2), no head
                    BatchNorm; fast=True extracts features once without augmentation and
                    trains on them (seconds)
  conv_probe        AlexNet conv1..conv5 probes, RotNet's ImageNet linear classifiers exactly
                    (gidariss/FeatureLearningRotNet, see configs/conv_probe.py): layers,
                    pool_sizes (adaptive max-pool 12, 7, 5, 6, 6 -> about 9k features each),
                    non-affine BatchNorm before each head (head_bn), init N(0, 2/classes)
                    ('fan_out'), batch 192, 35 epochs, SGD Nesterov 0.9, weight decay 5e-4,
                    lr 0.01 x0.2 at epochs 5, 15, 25, Resize(256) + RandomCrop(224) + flip
                    ('resize_random_crop'); fast as above (but it caches ~46k floats per
                    image: CIFAR-scale datasets only)
  knn               weighted kNN: k 200, temperature 0.1 (cosine, exp(sim / tau) votes),
                    chunk_size / train_chunk_size bound memory
  semi_supervised   fine-tune backbone + linear head on `fraction` of the training labels
                    (seeded class-balanced subset) or the images listed in `subset_file`
                    (one file name per line, e.g. the standard ImageNet 1% / 10% lists);
                    separate backbone / head learning rates, BatchNorm in train mode
                    (cross-device when sync_bn)

The three training blocks (linear, conv_probe, semi_supervised) share epochs, batch_size,
learning_rate, momentum, nesterov, weight_decay, schedule, milestones, decay_factor,
warmup_epochs, train_transform ('random_resized_crop': RandomResizedCrop(crop_scale) + flip;
'resize_random_crop': Resize(data.eval_resize) + RandomCrop(data.image_size) + flip), crop_scale
and init_std (std of the new linear layer's normal init). The probe blocks (linear,
conv_probe) also have init ('normal': N(0, init_std^2); 'fan_out': N(0, 2 / num_classes)) and
head_bn (a non-affine BatchNorm on each head's input: BatchNorm1d on pooled features,
BatchNorm2d per channel on conv maps). With data.train_crop='host' the training crops are
drawn over the full image on the host (rekd_jax.data.host_crop), otherwise on the device.
Variants for configs/*.py:VARIANT (comma-separated; rekd_jax.variants rules): imagenet,
cifar10, shapes, tiny (datasets), runlocal, pct1, pct10 (see VARIANTS).
"""

from __future__ import annotations

import os

import ml_collections

from rekd_jax.core import fileio
from rekd_jax.data import augment, pipeline
from rekd_jax.evaluation import linear
from rekd_jax.models import io as model_io
from rekd_jax.readout import features
from rekd_jax.variants import apply_variants, set_dataset

MODES = ("linear", "conv_probe", "knn", "semi_supervised")
SCHEDULES = ("step", "cosine", "constant")
ALEXNET_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")


def _optim_block(**fields) -> ml_collections.ConfigDict:
    base = dict(
        epochs=100,
        batch_size=256,
        learning_rate=0.1,
        momentum=0.9,
        nesterov=False,
        weight_decay=0.0,
        schedule="step",
        milestones=(),
        decay_factor=0.1,
        warmup_epochs=0,
        train_transform="random_resized_crop",
        crop_scale=(0.08, 1.0),
        init_std=0.01,
    )
    base.update(fields)
    return ml_collections.ConfigDict(base)


def default_eval_config() -> ml_collections.ConfigDict:
    """All evaluation protocols' fields with their defaults (see the module docstring)."""
    config = ml_collections.ConfigDict()
    config.mode = "linear"
    config.checkpoint = ""
    config.seed = 0
    config.data = pipeline.default_data_config()
    config.dtype = "float32"
    config.eval_batch_size = 256
    config.cache_features = True
    config.features_dir = ""
    config.checkpoint_every_epochs = 1
    config.keep_checkpoints = 2
    config.tensorboard = "auto"
    config.distributed = ml_collections.ConfigDict(
        dict(
            enabled=False,
            coordinator_address="",
            num_processes=1,
            process_id=0,
            cpu_collectives="gloo",
        )
    )
    # MoCo main_lincls.py: lr 30, x0.1 at 60 / 80, wd 0, normal_(0, 0.01) init, no head BN.
    config.linear = _optim_block(
        epochs=100,
        learning_rate=30.0,
        milestones=(60, 80),
        decay_factor=0.1,
        fast=False,
        init="normal",
        head_bn=False,
    )
    # RotNet (gidariss/FeatureLearningRotNet) config/ImageNet_LinearClassifiers_ImageNet_RotNet_
    # AlexNet_Features.py + architectures/LinearClassifier.py + dataloader.py (ImageNet train).
    config.conv_probe = _optim_block(
        epochs=35,
        batch_size=192,
        learning_rate=0.01,
        nesterov=True,
        weight_decay=5e-4,
        milestones=(5, 15, 25),
        decay_factor=0.2,
        fast=False,
        train_transform="resize_random_crop",
        init="fan_out",
        head_bn=True,
        layers=ALEXNET_LAYERS,
        pool_sizes=(12, 7, 5, 6, 6),
    )
    config.knn = ml_collections.ConfigDict(
        dict(k=200, temperature=0.1, chunk_size=256, train_chunk_size=65536)
    )
    config.semi_supervised = _optim_block(
        epochs=20,
        learning_rate=0.01,
        head_learning_rate=0.1,
        milestones=(12, 16),
        decay_factor=0.2,
        fraction=0.01,
        subset_file="",
        sync_bn=True,
    )
    return config


# Fine-tuning crops of 32 px datasets: RandomResizedCrop(0.08) keeps 9 x 9 px patches, from
# which 10% of the labels teach little (rekd_shapes 10%, 400-step ResNet-18 x0.125: top-1 16.5%
# with (0.08, 1) against 30.9% with (0.2, 1)); (0.2, 1) is the pre-training crop of method.md.
SMALL_IMAGE_CROP = (0.2, 1.0)


def imagenet(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """ImageNet-1k (TFDS imagenet2012, ArrayRecord): 224 crops, resize 256 for evaluation.

    The host resizes the shorter side to 256 and centre-crops 256 x 256 (data.host_size), so
    evaluation is exactly Resize(256) + CenterCrop(224). The probes' training crops are drawn
    over the full decoded image on the host (data.train_crop='host'), as main_lincls and
    RotNet do; data.train_crop='device' samples them from the 256 x 256 centre instead (faster,
    but the crops never see the sides of non-square images).
    """
    set_dataset(config.data, "imagenet")
    config.semi_supervised.crop_scale = (0.08, 1.0)
    return config


def cifar10(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """CIFAR-10 at 32 x 32 (prepare it with `python -m rekd_jax.data.prepare`)."""
    set_dataset(config.data, "cifar10")
    config.semi_supervised.crop_scale = SMALL_IMAGE_CROP
    return config


def shapes(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The embedded rekd_shapes dataset (32 x 32, 10 classes, 10,000 / 2,000; built on first
    use, no download)."""
    set_dataset(config.data, "shapes")
    config.semi_supervised.crop_scale = SMALL_IMAGE_CROP
    return config


def tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The embedded toy data rekd_shapes/tiny (200 train / 100 test images, 32 x 32)."""
    set_dataset(config.data, "tiny")
    config.semi_supervised.crop_scale = SMALL_IMAGE_CROP
    return config


def runlocal(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks epochs, batches and image sizes for a laptop CPU but keeps the dataset (add
    `tiny` for the toy data): 2 epochs, batch 32 (fine-tuning 8), images of at most 32 px."""
    data = config.data
    if data.image_size > 32:  # keep the resize / crop ratio (256 / 224 -> 37 / 32)
        data.eval_resize = max(32, round(32 * data.eval_resize / data.image_size))
        data.image_size = 32
        if data.host_size:
            data.host_size = data.eval_resize
    data.num_workers = 2
    config.eval_batch_size = 32
    for name in ("linear", "conv_probe", "semi_supervised"):
        block = config[name]
        block.epochs = 2
        block.batch_size = 32
        block.milestones = (1,)
        block.warmup_epochs = 0
    # 1% / 10% of the toy split are 10 / 20 labelled images: a batch of 8 fits both.
    config.semi_supervised.batch_size = 8
    config.knn.chunk_size = 64
    return config


def pct1(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Semi-supervised on 1% of the labels (ImageNet: also pass the 1percent.txt subset_file)."""
    config.semi_supervised.fraction = 0.01
    return config


def pct10(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Semi-supervised on 10% of the labels (ImageNet: also pass 10percent.txt)."""
    config.semi_supervised.fraction = 0.1
    return config


VARIANTS = {
    "imagenet": imagenet,
    "cifar10": cifar10,
    "shapes": shapes,
    "tiny": tiny,
    "runlocal": runlocal,
    "pct1": pct1,
    "pct10": pct10,
}


def get_protocol_config(
    mode: str, default_dataset: str, arg: str | None, config_file: str
) -> ml_collections.ConfigDict:
    """What each evaluation config file returns: default_eval_config() for `mode` on
    `default_dataset`, then the variants of `arg` (rekd_jax.variants rules: in the order given,
    runlocal last; a dataset variant replaces the default dataset)."""
    config = default_eval_config()
    config.mode = mode
    set_dataset(config.data, default_dataset)
    return apply_variants(config, arg, VARIANTS, config_file)


def _fail(field: str, value, fix: str):
    raise ValueError(f"config.{field}={value!r}: {fix}")


def _validate_optim(config, name: str) -> None:
    block = config[name]
    if int(block.epochs) < 1:
        _fail(f"{name}.epochs", block.epochs, "must be >= 1")
    if int(block.batch_size) < 1:
        _fail(
            f"{name}.batch_size",
            block.batch_size,
            "must be a positive multiple of the device count",
        )
    if not float(block.learning_rate) > 0:
        _fail(f"{name}.learning_rate", block.learning_rate, "must be > 0")
    if not 0.0 <= float(block.momentum) < 1.0:
        _fail(f"{name}.momentum", block.momentum, "must be in [0, 1)")
    if float(block.weight_decay) < 0:
        _fail(f"{name}.weight_decay", block.weight_decay, "must be >= 0")
    if block.schedule not in SCHEDULES:
        _fail(f"{name}.schedule", block.schedule, f"use one of {SCHEDULES}")
    milestones = [int(m) for m in block.milestones]
    if block.schedule == "step":
        if milestones != sorted(set(milestones)) or any(
            not 0 < m < int(block.epochs) for m in milestones
        ):
            _fail(
                f"{name}.milestones",
                tuple(block.milestones),
                f"must be increasing epochs strictly between 0 and epochs={block.epochs}",
            )
        if not 0.0 < float(block.decay_factor) <= 1.0:
            _fail(f"{name}.decay_factor", block.decay_factor, "must be in (0, 1]")
    if not 0 <= float(block.warmup_epochs) < int(block.epochs):
        _fail(f"{name}.warmup_epochs", block.warmup_epochs, "must be in [0, epochs)")
    lo, hi = (float(v) for v in block.crop_scale)
    if not 0.0 < lo <= hi <= 1.0:
        _fail(f"{name}.crop_scale", tuple(block.crop_scale), "must satisfy 0 < min <= max <= 1")
    if not float(block.init_std) > 0:
        _fail(f"{name}.init_std", block.init_std, "must be > 0")
    if block.train_transform not in augment.CROPS:
        _fail(f"{name}.train_transform", block.train_transform, f"use one of {augment.CROPS}")
    if "init" in block and block.init not in linear.HEAD_INITS:
        _fail(f"{name}.init", block.init, f"use one of {linear.HEAD_INITS}")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the bad field and the fix (nothing is loaded or compiled)."""
    if config.get("mode") not in MODES:
        _fail("mode", config.get("mode"), f"use one of {MODES}")
    checkpoint = config.get("checkpoint", "")
    if not checkpoint:
        _fail(
            "checkpoint",
            checkpoint,
            "set --config.checkpoint to an encoder directory. " + model_io.HOW_TO_PRODUCE,
        )
    try:
        untrained = features.parse_init_checkpoint(checkpoint) is not None
    except ValueError as e:
        raise ValueError(f"config.{e}") from None
    spec_path = os.path.join(checkpoint, model_io.SPEC_FILE)
    if not untrained and not fileio.exists(spec_path):
        _fail(
            "checkpoint",
            checkpoint,
            f"no encoder checkpoint there (no {model_io.SPEC_FILE}). "
            + model_io.HOW_TO_PRODUCE
            + " For the untrained (random-init) baseline use "
            + features.INIT_SYNTAX,
        )
    if config.dtype not in ("float32", "bfloat16"):
        _fail("dtype", config.dtype, "use 'float32' or 'bfloat16'")
    if int(config.eval_batch_size) < 1:
        _fail(
            "eval_batch_size",
            config.eval_batch_size,
            "must be a positive multiple of the device count",
        )
    if int(config.checkpoint_every_epochs) < 1:
        _fail("checkpoint_every_epochs", config.checkpoint_every_epochs, "must be >= 1")
    if int(config.keep_checkpoints) < 1:
        _fail("keep_checkpoints", config.keep_checkpoints, "must be >= 1")
    if config.tensorboard not in ("auto", "on", "off"):
        _fail("tensorboard", config.tensorboard, "use 'auto', 'on' or 'off'")
    pipeline.validate_data_config(config.data)

    mode = config.mode
    if mode == "linear":
        _validate_optim(config, "linear")
    elif mode == "conv_probe":
        _validate_optim(config, "conv_probe")
        block = config.conv_probe
        if len(block.layers) == 0 or len(block.layers) != len(block.pool_sizes):
            _fail(
                "conv_probe.pool_sizes",
                tuple(block.pool_sizes),
                f"give one pool size per layer of conv_probe.layers={tuple(block.layers)}",
            )
        if any(int(s) < 1 for s in block.pool_sizes):
            _fail("conv_probe.pool_sizes", tuple(block.pool_sizes), "sizes must be >= 1")
        arch = features.checkpoint_spec(checkpoint)["arch"]
        if arch != "alexnet":
            _fail(
                "checkpoint",
                checkpoint,
                f"holds a {arch!r} encoder; the conv probe reads the "
                "sown AlexNet maps conv1..conv5: use an alexnet checkpoint or mode='linear'",
            )
        unknown = [layer for layer in block.layers if layer not in ALEXNET_LAYERS]
        if unknown:
            _fail("conv_probe.layers", tuple(block.layers), f"choose from {ALEXNET_LAYERS}")
    elif mode == "knn":
        block = config.knn
        if int(block.k) < 1:
            _fail("knn.k", block.k, "must be >= 1")
        if not float(block.temperature) > 0:
            _fail("knn.temperature", block.temperature, "must be > 0")
        if int(block.chunk_size) < 1 or int(block.train_chunk_size) < 1:
            _fail("knn.chunk_size", (block.chunk_size, block.train_chunk_size), "must be >= 1")
    elif mode == "semi_supervised":
        _validate_optim(config, "semi_supervised")
        block = config.semi_supervised
        if not float(block.head_learning_rate) > 0:
            _fail("semi_supervised.head_learning_rate", block.head_learning_rate, "must be > 0")
        if block.subset_file:
            if not fileio.exists(block.subset_file):
                _fail(
                    "semi_supervised.subset_file",
                    block.subset_file,
                    "file not found; give a list of training file names (one per line) or "
                    "set it to '' to draw a class-balanced subset of `fraction`",
                )
        elif not 0.0 < float(block.fraction) <= 1.0:
            _fail(
                "semi_supervised.fraction",
                block.fraction,
                "must be in (0, 1], e.g. 0.01 or 0.1 (or set subset_file)",
            )
