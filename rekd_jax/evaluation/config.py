"""Evaluation config: every protocol's fields with defaults, and their validation.

`default_eval_config()` is the base of configs/linear_eval.py, conv_probe.py, knn_eval.py and
semi_supervised.py (each calls it and changes fields). Fields:

  mode              a protocol of rekd_jax.evaluation.protocols: 'linear' | 'conv_probe' |
                    'knn' | 'semi_supervised'
  checkpoint        encoder directory (WORKDIR/encoders/student of a pre-training run, or the
                    untrained baseline init:ARCH[:field=value,...,seed=N]; or the
                    output of `python -m rekd_jax.tools.import_torch`)
  rng_seed          probe initialisation, shuffling, augmentation, label subsets (`seed`
                    before; in pre-training configs `seed` is the SEED method's block)
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
Each protocol's block (its module's default_block()):
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

The training blocks (linear, conv_probe, semi_supervised) share epochs, batch_size,
learning_rate, momentum, nesterov, weight_decay, schedule, milestones, decay_factor,
warmup_epochs, train_transform ('random_resized_crop': RandomResizedCrop(crop_scale) + flip;
'resize_random_crop': Resize(data.eval_resize) + RandomCrop(data.image_size) + flip), crop_scale
and init_std (std of the new linear layer's normal init). The probe blocks (linear,
conv_probe) also have init ('normal': N(0, init_std^2); 'fan_out': N(0, 2 / num_classes)) and
head_bn (a non-affine BatchNorm on each head's input: BatchNorm1d on pooled features,
BatchNorm2d per channel on conv maps). With data.train_crop='host' the training crops are
drawn over the full image on the host (rekd_jax.data.host_crop), otherwise on the device.
The evaluation configs' variants (imagenet, cifar10, shapes, tiny, runlocal, pct1, pct10) and
the get_config of every evaluation config file are recipes: rekd_jax.recipes.evaluation.
"""

from __future__ import annotations

import os

import ml_collections

from rekd_jax.core import fileio
from rekd_jax.data import pipeline
from rekd_jax.evaluation import common, protocols
from rekd_jax.models import io as model_io
from rekd_jax.readout import features

DTYPES = ("float32", "bfloat16")
# The name the random seed had in evaluation configs before it became rng_seed.
OLD_SEED_FIELD = "seed"


def default_eval_config() -> ml_collections.ConfigDict:
    """All evaluation protocols' fields with their defaults (see the module docstring)."""
    config = ml_collections.ConfigDict()
    config.mode = "linear"
    config.checkpoint = ""
    config.rng_seed = 0
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
    for name, protocol in protocols.PROTOCOLS.items():
        config[name] = protocol.default_block()
    return config


def _validate_checkpoint(checkpoint: str) -> None:
    """An encoder directory with its spec, or the init:ARCH text of the untrained baseline."""
    if not checkpoint:
        common.fail(
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
        common.fail(
            "checkpoint",
            checkpoint,
            f"no encoder checkpoint there (no {model_io.SPEC_FILE}). "
            + model_io.HOW_TO_PRODUCE
            + " For the untrained (random-init) baseline use "
            + features.INIT_SYNTAX,
        )


def _validate_shared(config: ml_collections.ConfigDict) -> None:
    """The fields every protocol shares (the module docstring's list before the blocks)."""
    if config.dtype not in DTYPES:
        common.fail("dtype", config.dtype, "use 'float32' or 'bfloat16'")
    if int(config.eval_batch_size) < 1:
        common.fail(
            "eval_batch_size",
            config.eval_batch_size,
            "must be a positive multiple of the device count",
        )
    if int(config.checkpoint_every_epochs) < 1:
        common.fail("checkpoint_every_epochs", config.checkpoint_every_epochs, "must be >= 1")
    if int(config.keep_checkpoints) < 1:
        common.fail("keep_checkpoints", config.keep_checkpoints, "must be >= 1")
    if config.tensorboard not in ("auto", "on", "off"):
        common.fail("tensorboard", config.tensorboard, "use 'auto', 'on' or 'off'")
    pipeline.validate_data_config(config.data)


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the bad field and the fix (nothing is loaded or compiled)."""
    mode = config.get("mode")
    if mode not in protocols.PROTOCOLS:
        common.fail("mode", mode, f"use one of {tuple(protocols.PROTOCOLS)}")
    if OLD_SEED_FIELD in config:
        common.fail(
            OLD_SEED_FIELD,
            config[OLD_SEED_FIELD],
            "an evaluation's random seed is now config.rng_seed; set config.rng_seed instead",
        )
    _validate_checkpoint(config.get("checkpoint", ""))
    _validate_shared(config)
    protocols.PROTOCOLS[mode].validate(config)
