"""The evaluation recipes: the dataset variants of every evaluation config file and the
config each file returns (default_eval_config() of rekd_jax.evaluation.config for one protocol,
then its variants). Variants for configs/*.py:VARIANT (comma-separated; rekd_jax.variants
rules): imagenet, cifar10, shapes, tiny (datasets), runlocal, pct1, pct10 (see VARIANTS)."""

from __future__ import annotations

import ml_collections

from rekd_jax.evaluation import protocols
from rekd_jax.evaluation.config import default_eval_config
from rekd_jax.variants import apply_variants, set_dataset

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
    for name, protocol in protocols.PROTOCOLS.items():
        if name in config:
            protocol.runlocal(config[name])
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
