"""Config validation: every recipe config loads and validates; bad fields fail early and say
which field and how to fix it."""

import importlib
import json

import pytest

from rekd_jax.training import config as config_lib

RECIPES = (
    "default",
    "alexnet",
    "mobilenetv3_large",
    "shufflenetv2",
    "efficientnet_b0",
    "resnet18",
    "teacher_resnet50",
    "cifar10_teacher",
)


def _config(name="default", arg="tiny,runlocal"):
    return importlib.import_module(f"configs.{name}").get_config(arg)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_configs_validate(name):
    full = _config(name, None)
    assert full.mode == "pretrain"
    assert importlib.import_module(f"configs.{name}").__doc__.count("python main.py") >= 1
    config_lib.validate(_config(name))  # the laptop variant validates on 4 fake devices


def test_imagenet_recipe_values():
    config = _config("alexnet", None)
    assert (config.method, config.rekd.teacher, config.teacher.arch) == (
        "rekd",
        "online",
        "resnet50",
    )
    assert config.data.image_size == 224 and config.global_batch_size == 256
    assert config.rekd.queue_size == 65536 and config.ema_momentum == 0.999
    student = _config("cifar10_student", "mobilenetv3_large")
    assert student.student.arch == "mobilenetv3_large" and student.rekd.teacher == "offline"
    assert student.global_batch_size == 512 and student.rekd.queue_size == 4096


def test_quickstart_config_validates():
    config_lib.validate(importlib.import_module("configs.quickstart").get_config("tiny"))


@pytest.mark.parametrize(
    "change, field, hint",
    [
        (lambda c: setattr(c, "method", "byol"), "config.method", "mocov2"),
        (lambda c: setattr(c.student, "arch", "resnet7"), "config.student.arch", "alexnet"),
        (
            lambda c: setattr(c, "global_batch_size", 18),
            "config.global_batch_size",
            "multiple of 4",
        ),
        (lambda c: setattr(c.mocov2, "queue_size", 100), "config.mocov2", "queue_size"),
        (lambda c: setattr(c, "dtype", "float16"), "config.dtype", "bfloat16"),
        (lambda c: setattr(c, "ema_momentum", 1.0), "config.ema_momentum", "0.999"),
        (lambda c: setattr(c, "key_bn_splits", 6), "config.key_bn_splits", "multiple of 4"),
        (lambda c: setattr(c.data, "image_size", 0), "config.data.image_size", "positive"),
    ],
)
def test_bad_fields_are_named(change, field, hint):
    config = _config()
    change(config)
    with pytest.raises(ValueError) as err:
        config_lib.validate(config)
    assert field in str(err.value) and hint in str(err.value)


@pytest.mark.parametrize("method", ["seed", "rekd"])
def test_missing_offline_teacher_says_how_to_get_one(method, tmp_path):
    config = _config()
    config.method = method
    config.rekd.teacher = "offline"
    config.teacher.checkpoint = str(tmp_path / "nothing_here")
    with pytest.raises(ValueError) as err:
        config_lib.validate(config)
    text = str(err.value)
    assert "config.teacher.checkpoint" in text
    assert "configs/teacher_resnet50.py" in text and "rekd_jax.tools.import_torch" in text


def test_unknown_variant_is_rejected():
    with pytest.raises(ValueError, match="unknown variant"):
        _config("alexnet", "runlokal")


def test_resume_accepts_a_field_added_since_the_run_started_at_its_default(tmp_path):
    from configs import default
    from rekd_jax.training import resume

    config = default.get_config("tiny,runlocal")
    resume.check_signature(config, str(tmp_path), resuming=False)
    path = tmp_path / resume.SIGNATURE_FILE
    old = json.loads(path.read_text())
    del old["key_shuffle"]  # as a run started before the field existed wrote it
    path.write_text(json.dumps(old))
    resume.check_signature(config, str(tmp_path), resuming=True)  # default value: no change
    path.write_text(json.dumps(old))
    config.key_shuffle = "ppermute"
    with pytest.raises(resume.ConfigChangedError, match="key_shuffle: '<absent>' -> 'ppermute'"):
        resume.check_signature(config, str(tmp_path), resuming=True)


@pytest.mark.parametrize(
    "field, value, problem",
    [
        ("num_train_steps", 99999999999999999999, "exceeds 2147483647"),
        ("num_train_steps", 2**31, "exceeds 2147483647"),
        ("num_train_steps", -5, "must be a whole number >= 0, got -5"),
        ("num_epochs", 3_000_000_000, "exceeds 2147483647"),
    ],
)
def test_step_counts_the_step_counter_cannot_hold_are_refused(field, value, problem):
    config = _config()
    if field == "num_epochs":
        config.num_train_steps = 0
    config[field] = value
    with pytest.raises(ValueError) as err:
        config_lib.validate(config)
    assert str(err.value).startswith(f"config.{field}: ") and problem in str(err.value)
    config[field] = 2**31 - 1 if field == "num_train_steps" else 1  # the limit itself is fine
    config_lib.validate(config)


def test_epochs_that_add_up_past_the_step_counter_are_refused():
    config = _config()
    config.num_train_steps, config.num_epochs = 0, 400_000_000
    config_lib.validate(config)  # the steps per epoch are known once the data is open
    with pytest.raises(ValueError, match=r"config\.num_epochs: 400000000 epochs of 6 steps exceed"):
        config_lib.check_total_steps(config, 6)
    config_lib.check_total_steps(config, 5)


def test_an_unrepresentable_step_count_is_one_line_on_the_command_line(tmp_path):
    from commands import fatal_line, run

    shared = {"tfds": str(tmp_path / "tfds"), "cache": str(tmp_path / "cache")}
    line = fatal_line(
        run(
            shared,
            "main.py",
            "--config=default:tiny,runlocal",
            f"--workdir={tmp_path / 'w'}",
            "--config.num_train_steps=99999999999999999999",
        )
    )
    assert line == (
        "FATAL: ConfigError: config.num_train_steps: 99999999999999999999 exceeds 2147483647, the "
        "most steps a run can count (its step counter is an int32); set num_train_steps to at "
        "most 2147483647."
    )
    assert not (tmp_path / "w").exists()
