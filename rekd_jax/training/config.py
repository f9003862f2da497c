"""Validation of pre-training and quick-start configs: runs before anything compiles.

`validate(config)` raises ValueError naming the bad field and the fix. It checks the method and
its block (rekd_jax.methods.<method>.validate_config), the teacher it needs (an online teacher's
architecture and own method, config.teacher.method; an offline teacher's checkpoint), the
architectures, the batch / device / queue arithmetic, the optimiser and schedule fields, the kNN
monitor and the distributed block. Device counts are only queried when jax.distributed is off
(querying devices first would make jax.distributed.initialize fail); with it on, the same checks
run in `check_devices` right after initialisation.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np

from rekd_jax import methods, models
from rekd_jax.data import pipeline
from rekd_jax.models import io as model_io
from rekd_jax.training import optim
from rekd_jax.training import state as state_lib
from rekd_jax.training import step as step_lib

DTYPES = ("float32", "bfloat16")
# The most steps a run can take: TrainState.step (and so every step number) is an int32.
MAX_STEPS = int(np.iinfo(np.int32).max)

TEACHER_HOWTO = (
    "get a teacher encoder with `python main.py --config=configs/teacher_resnet50.py "
    "--workdir=WD` (it writes WD/encoders/student; for CIFAR-10 use configs/cifar10_teacher.py) "
    "or import a PyTorch checkpoint with `python -m rekd_jax.tools.import_torch`, then set "
    "--config.teacher.checkpoint to that encoder directory"
)


def _fail(field: str, problem: str, fix: str) -> None:
    raise ValueError(f"config.{field}: {problem}; {fix}.")


def _require(config, fields) -> None:
    for field in fields:
        if field not in config:
            _fail(field, "missing", "start from rekd_jax.recipes.base_config()")


def _check_arch(field: str, part) -> None:
    overrides = state_lib.backbone_overrides(part.overrides)
    try:
        models.get_model(part.arch, **dict(overrides, num_classes=0))
    except (ValueError, TypeError) as e:
        _fail(
            f"{field}.arch",
            f"{part.arch!r} with overrides {overrides} is not a valid model ({e})",
            f"choose one of {models.list_models()}",
        )
    for name in ("dim",):
        if int(part.projector[name]) < 1:
            _fail(
                f"{field}.projector.{name}",
                f"must be >= 1, got {part.projector[name]}",
                "use e.g. 128",
            )
    if int(part.projector.get("layers", 2)) not in (1, 2):
        _fail(
            f"{field}.projector.layers",
            f"must be 1 (linear) or 2 (MLP), got {part.projector.layers}",
            "use 2 (MoCo v2) or 1 (MoCo CIFAR-10 demo)",
        )
    if int(part.projector.hidden) < 0:
        _fail(
            f"{field}.projector.hidden",
            f"must be >= 0, got {part.projector.hidden}",
            "use 0 for the backbone's feature width",
        )


def check_teacher_checkpoint(config) -> None:
    """The offline teacher's encoder directory must exist."""
    path = config.teacher.checkpoint
    if not path:
        _fail(
            "teacher.checkpoint",
            f"is empty but method {config.method!r} needs an offline teacher",
            TEACHER_HOWTO,
        )
    if not os.path.isfile(os.path.join(path, model_io.SPEC_FILE)):
        _fail(
            "teacher.checkpoint",
            f"{path!r} holds no encoder checkpoint (no {model_io.SPEC_FILE})",
            TEACHER_HOWTO,
        )


def check_devices(config, num_devices: int) -> None:
    """Batch and shuffle-BN arithmetic for `num_devices` devices in total."""
    batch = config.global_batch_size
    if batch % num_devices:
        lower = max(num_devices, batch // num_devices * num_devices)
        _fail(
            "global_batch_size",
            f"{batch} is not divisible by the {num_devices} devices",
            f"use a multiple of {num_devices}, e.g. {lower}",
        )
    splits = step_lib.key_bn_splits(config, num_devices)
    if splits % num_devices:
        _fail(
            "key_bn_splits",
            f"{splits} is not a multiple of the {num_devices} devices",
            f"use 0 (auto) or a multiple of {num_devices}",
        )
    if batch % splits:
        _fail(
            "key_bn_splits",
            f"the global batch {batch} does not split into {splits} shuffle-BN groups",
            f"use 0 (auto) or a divisor of {batch}",
        )
    step_lib.student_bn_groups(config.student_bn, num_devices, batch)
    step_lib.key_shuffle_devices(config, num_devices, batch)


def check_step_count(field: str, value) -> None:
    """A step count the step counter (int32) cannot hold is refused before anything runs."""
    if value > MAX_STEPS:
        _fail(
            field,
            f"{value} exceeds {MAX_STEPS}, the most steps a run can count (its step counter "
            "is an int32)",
            f"set {field} to at most {MAX_STEPS}",
        )


def check_total_steps(config, steps_per_epoch: int) -> None:
    """num_epochs x the data's steps per epoch must fit the step counter too."""
    if not config.num_train_steps and config.num_epochs * steps_per_epoch > MAX_STEPS:
        _fail(
            "num_epochs",
            f"{config.num_epochs} epochs of {steps_per_epoch} steps exceed {MAX_STEPS}, the "
            "most steps a run can count (its step counter is an int32)",
            f"set at most {MAX_STEPS // steps_per_epoch} epochs",
        )


REQUIRED_FIELDS = (
    "method",
    "student",
    "teacher",
    "data",
    "global_batch_size",
    "num_epochs",
    "num_train_steps",
    "optimizer",
    "ema_momentum",
    "key_bn_splits",
    "student_bn",
    "dtype",
    "rng_seed",
    "log_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "knn_monitor",
    "distributed",
    "tensorboard",
    "key_shuffle",
    "key_shuffle_devices",
)


def validate_pretrain(
    config: ml_collections.ConfigDict, *, teacher_checkpoint: bool = True, devices: bool = True
) -> None:
    """Checks one pre-training config. `teacher_checkpoint=False` skips the existence check of
    an offline teacher that an earlier stage (the quick start's teacher run) will produce."""
    _require(config, REQUIRED_FIELDS)
    if config.method not in methods.METHODS:
        _fail("method", f"{config.method!r} is unknown", f"choose one of {tuple(methods.METHODS)}")
    _require(config, (config.method,))
    batch = config.global_batch_size
    if not isinstance(batch, int) or batch < 1:
        _fail("global_batch_size", f"must be a positive integer, got {batch!r}", "use e.g. 256")
    if config.key_bn_splits < 0:
        _fail("key_bn_splits", f"must be >= 0, got {config.key_bn_splits}", "use 0 (auto)")
    if devices and not config.distributed.enabled:
        check_devices(config, jax.device_count())
    step_lib.student_bn_groups(config.student_bn, 1, batch)  # the spelling (devices: above)
    step_lib.check_key_shuffle(config)  # the spelling (devices: check_devices)
    try:
        methods.get_method(config.method).validate_config(config[config.method], batch)
    except ValueError as e:
        raise ValueError(f"config.{config.method}: {e}") from None
    pipeline.validate_data_config(config.data)
    _check_arch("student", config.student)
    _check_teacher(config, batch, teacher_checkpoint)
    _check_steps(config)
    _check_optimizer(config.optimizer)
    _check_run_fields(config)


def _check_teacher(config, batch: int, teacher_checkpoint: bool) -> None:
    """The teacher the method needs: an online teacher's architecture and own method, an
    offline teacher's checkpoint (unless `teacher_checkpoint` is False)."""
    if "method" not in config.teacher:
        _fail(
            "teacher.method",
            "missing",
            "set it to the method whose loss trains an online teacher, one of "
            f"{methods.online_teacher_methods()} (rekd_jax.recipes.base_config() has it)",
        )
    mode = methods.teacher_plan(config).mode
    if mode == "online":
        _check_arch("teacher", config.teacher)
        check_teacher_method(config, batch)
    if mode == "offline" and teacher_checkpoint:
        check_teacher_checkpoint(config)


def check_teacher_method(config, batch: int) -> None:
    """config.teacher.method must name a method that can train an online teacher on its query
    and momentum key alone (no teacher, no parameters of its own), with a valid block."""
    name = config.teacher.method
    fix = f"use one of {methods.online_teacher_methods()}"
    if name not in methods.METHODS:
        _fail("teacher.method", f"{name!r} is unknown", fix)
    _require(config, (name,))
    teacher_method = methods.get_method(name)
    if not methods.can_train_online_teacher(teacher_method, config[name]):
        _fail(
            "teacher.method",
            f"{name!r} cannot train an online teacher (it learns from a teacher, or trains "
            "parameters of its own)",
            fix,
        )
    try:
        teacher_method.validate_config(config[name], batch)
    except ValueError as e:
        raise ValueError(
            f"config.{name} (the online teacher's own loss, config.teacher.method): {e}"
        ) from None


def _check_steps(config) -> None:
    """num_train_steps / num_epochs: some training, within the int32 step counter."""
    steps = config.num_train_steps
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 0:
        _fail(
            "num_train_steps",
            f"must be a whole number >= 0, got {steps!r}",
            "set the number of steps, or 0 to train for num_epochs",
        )
    check_step_count("num_train_steps", steps)
    if not steps:  # each epoch takes at least one step
        check_step_count("num_epochs", config.num_epochs)
    if steps == 0 and not config.num_epochs > 0:
        _fail(
            "num_epochs",
            f"num_epochs={config.num_epochs}, num_train_steps="
            f"{config.num_train_steps} give no training",
            "set num_epochs > 0 (or num_train_steps > 0, which takes precedence)",
        )


def _check_optimizer(opt) -> None:
    """The SGD and schedule fields of config.optimizer."""
    _require(opt, ("cosine_unit",))
    for field in ("base_learning_rate", "lr_scaling_batch"):
        if not opt[field] > 0:
            _fail(
                f"optimizer.{field}",
                f"must be > 0, got {opt[field]}",
                "see rekd_jax/defaults.py",
            )
    if not 0 <= opt.momentum < 1:
        _fail("optimizer.momentum", f"must be in [0, 1), got {opt.momentum}", "use 0.9")
    if opt.weight_decay < 0:
        _fail("optimizer.weight_decay", f"must be >= 0, got {opt.weight_decay}", "use 1e-4")
    if opt.warmup_epochs < 0:
        _fail("optimizer.warmup_epochs", f"must be >= 0, got {opt.warmup_epochs}", "use 0")
    if opt.cosine_unit not in optim.COSINE_UNITS:
        _fail(
            "optimizer.cosine_unit",
            f"{opt.cosine_unit!r} is unknown",
            f"use one of {optim.COSINE_UNITS} ('epoch' steps the cosine once per epoch, as "
            "MoCo's main_moco.py does)",
        )


def _check_run_fields(config) -> None:
    """EMA, dtype, logging and checkpoint cadence, the kNN monitor, encoder snapshots,
    TensorBoard and the distributed block."""
    if not 0 <= config.ema_momentum < 1:
        _fail(
            "ema_momentum",
            f"must be in [0, 1), got {config.ema_momentum}",
            "use 0.999 (ImageNet) or 0.99 (CIFAR)",
        )
    if config.dtype not in DTYPES:
        _fail("dtype", f"{config.dtype!r} is not supported", f"choose one of {DTYPES}")
    for field in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
        if not isinstance(config[field], int) or config[field] < 1:
            _fail(field, f"must be a positive integer, got {config[field]!r}", "see default.py")
    knn = config.knn_monitor
    if knn.every_epochs < 0:
        _fail("knn_monitor.every_epochs", f"must be >= 0, got {knn.every_epochs}", "0 disables")
    if knn.every_epochs and (knn.k < 1 or not knn.temperature > 0 or knn.batch_size < 1):
        _fail(
            "knn_monitor",
            f"k={knn.k}, temperature={knn.temperature}, batch_size={knn.batch_size} are invalid",
            "use k=200, temperature=0.1, batch_size=256",
        )
    steps = config.get("export_encoder_steps", ())
    if any(not isinstance(s, int) or s < 1 for s in steps):
        _fail(
            "export_encoder_steps",
            f"must hold positive step numbers, got {tuple(steps)}",
            "use e.g. (500, 1500) or () for none",
        )
    if config.tensorboard not in ("auto", "on", "off"):
        _fail("tensorboard", f"{config.tensorboard!r} is unknown", "use 'auto', 'on' or 'off'")
    dist = config.distributed
    if dist.enabled:
        if dist.num_processes < 1 or not 0 <= dist.process_id < dist.num_processes:
            _fail(
                "distributed",
                f"process_id={dist.process_id} of num_processes={dist.num_processes} is invalid",
                "give 0 <= process_id < num_processes "
                "(or leave coordinator_address empty to let JAX detect a cluster)",
            )


def validate_quickstart(config: ml_collections.ConfigDict) -> None:
    """Each stage of the quick start is a pre-training config; later stages get their teacher
    from the teacher stage, so its checkpoint is not required to exist yet."""
    _require(config, ("runs", "evaluation", "eval_modes"))
    if "teacher" not in config.runs:
        _fail("runs.teacher", "missing", "the quick start trains its teacher first")
    for name, run in config.runs.items():
        try:
            validate_pretrain(run, teacher_checkpoint=(name == "teacher"))
        except ValueError as e:
            raise ValueError(f"quick start run {name!r}: {e}") from None


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the field and the fix; dispatches on config.mode."""
    mode = config.get("mode")
    if mode == "pretrain":
        validate_pretrain(config)
    elif mode in ("quickstart", "quickstart_grid"):
        validate_quickstart(config)
    else:
        raise ValueError(
            f"config.mode={mode!r}: rekd_jax.training.config validates 'pretrain' "
            "and 'quickstart' configs"
        )
