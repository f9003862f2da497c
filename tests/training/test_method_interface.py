"""The method interface seen from training: training/ names no method, a new method is one
module plus one METHODS entry (a toy method trains through the real entry point), the online
teacher's own method is the one config.teacher.method names, and a run signature written
before that field existed still resumes."""

import ast
import json
import os
import shutil
import types

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from checkpoint_compare import read_checkpoint

from configs import default
from rekd_jax import methods
from rekd_jax.core import logging as logging_lib
from rekd_jax.methods import common
from rekd_jax.training import config as config_lib
from rekd_jax.training import optim, pretrain, resume
from rekd_jax.training import state as state_lib

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINING = os.path.join(os.path.dirname(os.path.dirname(HERE)), "rekd_jax", "training")
OLD_ONLINE_SIGNATURE = os.path.join(HERE, "signature_without_teacher_method.json")


def _training_sources():
    for name in sorted(os.listdir(TRAINING)):
        if name.endswith(".py"):
            path = os.path.join(TRAINING, name)
            with open(path, encoding="utf-8") as f:
                yield name, f.read()


def test_training_imports_no_method_module_and_names_no_method():
    """Only the rekd_jax.methods package (its registry and interface) is imported, and no
    method's name appears in training/, as an import, a string or a word of a docstring."""
    for name, text in _training_sources():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("rekd_jax.methods"), (name, node.module)
                if node.module == "rekd_jax":
                    assert {a.name for a in node.names} & set(methods.METHODS) == set(), name
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("rekd_jax.methods."), (name, alias.name)
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in methods.METHODS, (name, node.value)
        assert "mocov2" not in text.lower(), name


# ---------------------------------------------------------------- a toy method, one module
def _toy_module() -> types.ModuleType:
    """A method written outside the package: it pulls the student's embeddings towards a fixed
    unit direction and counts its steps in its state."""
    toy = types.ModuleType("toy")
    toy.NAME = "toy"
    toy.KEY_ENCODER = False
    toy.default_config = lambda: ml_collections.ConfigDict({"weight": 1.0})

    def validate_config(cfg, global_batch_size):
        del global_batch_size
        common.check_fields(cfg, toy.default_config(), toy.NAME)
        common.check_positive(cfg, "weight", toy.NAME)

    toy.validate_config = validate_config
    toy.teacher_mode = lambda cfg: None
    toy.loss_inputs = lambda forward: {"z": forward["query"]}

    def init_state(rng, cfg, student_dim, teacher_dim=None):
        del rng, cfg, teacher_dim
        return {"steps": jnp.zeros((), jnp.int32), "direction": jnp.ones((student_dim,))}

    def loss_fn(embeddings, state, cfg, *, rng=None, axis_name=None):
        del rng
        direction = state["direction"] / jnp.linalg.norm(state["direction"])
        loss = cfg.weight * jnp.mean(1.0 - embeddings["z"] @ direction)
        metrics = {"loss": common.global_mean(loss, axis_name), "toy_loss": loss}
        return loss, (metrics, {**state, "steps": state["steps"] + 1})

    toy.init_state, toy.loss_fn = init_state, loss_fn
    return toy


def _tiny_config():
    config = default.get_config("tiny,runlocal")
    config.global_batch_size = 8
    config.num_train_steps = 2
    config.log_every_steps = 1
    config.checkpoint_every_steps = 2
    config.async_checkpointing = False
    return config


def test_a_new_method_is_one_module_and_one_registry_entry(tmp_path, monkeypatch):
    toy = _toy_module()
    monkeypatch.setitem(methods.METHODS, toy.NAME, toy)  # the one entry
    config = _tiny_config()
    config.method = toy.NAME
    config[toy.NAME] = toy.default_config()
    config_lib.validate(config)
    summary = pretrain.train_and_evaluate(config, str(tmp_path))
    assert summary["step"] == 2
    _, state, _ = read_checkpoint(tmp_path)
    assert int(state["method_state"]["steps"]) == 2  # the method's own state, stepped by it
    assert not state.get("ema_params") and not state.get("teacher_method_state")  # no encoders
    rows = logging_lib.read_jsonl(os.path.join(tmp_path, "metrics.jsonl"))
    losses = [r["train/toy_loss"] for r in rows if "train/toy_loss" in r]
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_the_online_teacher_is_trained_by_the_method_config_teacher_method_names(monkeypatch):
    toy = _toy_module()
    monkeypatch.setitem(methods.METHODS, toy.NAME, toy)
    config = _tiny_config()
    config.method, config.rekd.teacher = "rekd", "online"
    config.teacher.arch = "resnet18"  # the smallest teacher to initialise
    config[toy.NAME] = toy.default_config()
    default_plan = methods.teacher_plan(config)
    assert default_plan == methods.TeacherPlan(mode="online", method=config.teacher.method)
    config.teacher.method = toy.NAME
    config_lib.validate(config)
    plan = methods.teacher_plan(config)
    assert plan == methods.TeacherPlan(mode="online", method=toy.NAME)
    modules = state_lib.build_modules(config)
    assert modules.teacher_plan == plan
    tx = optim.create_optimizer(
        config.optimizer,
        optim.learning_rate_schedule(config.optimizer, config.global_batch_size, 2, 0),
    )
    state = state_lib.create_train_state(config, modules, tx)
    assert set(state.teacher_method_state) == {"steps", "direction"}  # the toy's own state
    signature = resume.signature(config, plan)
    assert signature["teacher.method"] == toy.NAME and "toy.weight" in signature
    assert not any(k.startswith(default_plan.method + ".") for k in signature)


@pytest.mark.parametrize("teacher_method", ["seed", "supervised", "byol"])
def test_a_method_that_cannot_train_an_online_teacher_is_refused(teacher_method):
    config = _tiny_config()
    config.method, config.rekd.teacher = "rekd", "online"
    config.teacher.method = teacher_method
    with pytest.raises(ValueError) as err:
        config_lib.validate(config)
    text = str(err.value)
    assert text.startswith(f"config.teacher.method: {teacher_method!r} ")
    assert f"use one of {methods.online_teacher_methods()}" in text


def test_a_run_signature_without_teacher_method_resumes(tmp_path):
    """The signature an online ReKD run wrote before config.teacher.method existed (kept as a
    file) resumes at the field's default and refuses another teacher method."""
    with open(OLD_ONLINE_SIGNATURE) as f:
        old = json.load(f)
    assert "teacher.method" not in old and old["rekd.teacher"] == "online"
    config = default.get_config("tiny,runlocal")
    config.method, config.rekd.teacher = "rekd", "online"
    shutil.copy(OLD_ONLINE_SIGNATURE, tmp_path / resume.SIGNATURE_FILE)
    recorded = resume.check_signature(config, str(tmp_path), resuming=True)
    assert recorded["teacher.method"] == config.teacher.method
    shutil.copy(OLD_ONLINE_SIGNATURE, tmp_path / resume.SIGNATURE_FILE)
    config.teacher.method = "rekd"
    config.rekd.teacher = "online"
    with pytest.raises(resume.ConfigChangedError, match="teacher.method: '<absent>' -> 'rekd'"):
        resume.check_signature(config, str(tmp_path), resuming=True)


def test_teacher_plans_of_the_registered_methods():
    config = _tiny_config()
    expected = {
        ("mocov2", "online"): methods.TeacherPlan(),
        ("seed", "online"): methods.TeacherPlan(mode="offline", view="v1"),
        ("rekd", "online"): methods.TeacherPlan(mode="online", method=config.teacher.method),
        ("rekd", "offline"): methods.TeacherPlan(mode="offline", view="v2"),
        ("rekd", "none"): methods.TeacherPlan(),
        ("supervised", "online"): methods.TeacherPlan(),
    }
    for (method, rekd_teacher), plan in expected.items():
        config.method, config.rekd.teacher = method, rekd_teacher
        assert methods.teacher_plan(config) == plan, (method, rekd_teacher)
