"""The pre-training base config: every field with its default. The recipes
(rekd_jax.recipes) change it; the run signature reads its defaults (rekd_jax.training.resume).

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
