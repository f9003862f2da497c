"""The pmapped step on 4 fake devices equals the same step on 1 device over the same global
batch (ReKD with an online teacher: student + teacher shuffle-BN key encoders, cross-replica BN,
online-teacher MoCo v2 loss, relation loss, queues, prototypes, SGD, EMA)."""

import flax
import jax
import numpy as np
import pytest

from configs import default
from rekd_jax import methods, recipes
from rekd_jax.training import optim
from rekd_jax.training import state as state_lib
from rekd_jax.training import step as step_lib

GLOBAL_BATCH = 8


def _config():
    config = default.get_config("tiny,runlocal")
    config.method = "rekd"
    config.rekd.teacher = "online"
    config.data.image_size = 16
    config.global_batch_size = GLOBAL_BATCH
    recipes.set_queue_size(config, 4 * GLOBAL_BATCH)
    config.rekd.num_prototypes = 4
    config.key_bn_splits = 4  # 4 devices x 1 split == 1 device x 4 splits (MoCo SplitBN)
    config.student.arch = "resnet18"
    config.student.overrides = {"cifar_stem": True, "width_multiplier": 0.125}
    config.teacher.arch = "resnet18"
    config.teacher.overrides = {"cifar_stem": True, "width_multiplier": 0.25}
    config.student.projector.dim = 16
    config.teacher.projector.dim = 16
    return config


def _run(config, num_devices, images, labels):
    modules = state_lib.build_modules(config)
    schedule = optim.learning_rate_schedule(config.optimizer, GLOBAL_BATCH, 10, 0)
    tx = optim.create_optimizer(config.optimizer, schedule)
    state = state_lib.create_train_state(config, modules, tx)
    cfg = step_lib.make_step_config(config, modules, tx, schedule, GLOBAL_BATCH, num_devices)
    devices = jax.devices()[:num_devices]
    p_step = jax.pmap(
        lambda s, b: step_lib.train_step(cfg, s, b, {}, None), axis_name="batch", devices=devices
    )
    batch = {
        "image": images.reshape((num_devices, -1) + images.shape[1:]),
        "label": labels.reshape(num_devices, -1),
    }
    p_state, metrics = p_step(flax.jax_utils.replicate(state, devices), batch)
    take = lambda tree: jax.tree_util.tree_map(lambda x: np.asarray(x[0]), tree)
    return state, take(p_state), take(metrics)


def test_four_devices_equal_one_device():
    if jax.device_count() < 4:
        pytest.skip("needs 4 (fake) devices: tests/conftest.py sets XLA_FLAGS")
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (GLOBAL_BATCH, 20, 20, 3)).astype(np.uint8)
    labels = rng.randint(0, 10, GLOBAL_BATCH).astype(np.int32)
    config = _config()
    init, four, m4 = _run(config, 4, images, labels)
    _, one, m1 = _run(config, 1, images, labels)

    assert set(m4) == set(m1) and {"loss", "student_loss", "teacher/loss"} <= set(m4)
    for name in m4:
        np.testing.assert_allclose(m4[name], m1[name], rtol=2e-4, atol=2e-5, err_msg=name)
    np.testing.assert_allclose(m4["loss"], m4["student_loss"] + m4["teacher/loss"], rtol=1e-5)
    flat4 = jax.tree_util.tree_flatten_with_path(flax.serialization.to_state_dict(four))[0]
    flat1 = jax.tree_util.tree_leaves(flax.serialization.to_state_dict(one))
    for (path, a), b in zip(flat4, flat1):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5, err_msg=jax.tree_util.keystr(path))
    # The step did something: params moved, both queues took the global batch of keys.
    assert int(four.step) == 1
    moved = jax.tree_util.tree_map(lambda a, b: np.abs(a - b).max(), init.params, four.params)
    assert (
        min(jax.tree_util.tree_leaves(moved)) >= 0 and max(jax.tree_util.tree_leaves(moved)) > 1e-6
    )
    for queue in (four.teacher_method_state["queue"],):
        assert int(queue["ptr"]) == GLOBAL_BATCH and queue["valid"].sum() == GLOBAL_BATCH
    # Teacher momentum encoder = EMA of the teacher weights before the update.
    m = config.ema_momentum
    expected = jax.tree_util.tree_map(
        lambda k, p: m * k + (1 - m) * p, init.ema_params["teacher"], init.params["teacher"]
    )
    for a, b in zip(
        jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(four.ema_params["teacher"])
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "arch,overrides",
    [
        ("efficientnet_b0", {"cifar_stem": True, "width_multiplier": 0.25}),  # stochastic depth
        ("mobilenetv3_small", {"cifar_stem": True, "width_multiplier": 0.25}),
        ("shufflenetv2_x0_5", {"cifar_stem": True}),
    ],
)
def test_lightweight_students_train_with_mocov2(arch, overrides):
    """Every student family runs the train step (EfficientNet needs its dropout rng) and
    moves its parameters with a finite loss."""
    config = _config()
    config.method = "mocov2"
    config.student.arch = arch
    config.student.overrides = overrides
    rng = np.random.RandomState(1)
    images = rng.randint(0, 256, (GLOBAL_BATCH, 16, 16, 3)).astype(np.uint8)
    labels = rng.randint(0, 10, GLOBAL_BATCH).astype(np.int32)
    init, after, metrics = _run(config, 1, images, labels)
    assert np.isfinite(metrics["loss"]) and metrics["loss"] > 0
    moved = jax.tree_util.tree_map(
        lambda a, b: np.abs(np.asarray(a) - b).max(),
        init.params["student"],
        after.params["student"],
    )
    assert max(jax.tree_util.tree_leaves(moved)) > 1e-6


def test_supervised_teacher_step_uses_labels_and_a_linear_head():
    """ReKD with teacher 'none' and oracle relations (the study's supervised teacher) trains
    without any teacher, with the MoCo CIFAR demo's linear projector; its queue keeps labels."""
    config = _config()
    config.rekd.update(teacher="none", relation="oracle")
    config.student.projector.layers = 1
    rng = np.random.RandomState(2)
    images = rng.randint(0, 256, (GLOBAL_BATCH, 16, 16, 3)).astype(np.uint8)
    labels = np.array([0, 1, 0, 1, 2, 2, 3, 0], np.int32)
    init, after, metrics = _run(config, 1, images, labels)
    assert "teacher" not in after.params and after.teacher_method_state == {}
    assert sorted(after.params["student"]["projector"]) == ["out"]  # one linear layer
    np.testing.assert_array_equal(after.method_state["queue"]["label"][:GLOBAL_BATCH], labels)
    assert np.isfinite(metrics["loss"]) and metrics["positives_per_anchor"] == 1.0


def test_offline_teacher_without_projector(tmp_path):
    """A teacher imported from a plain torchvision state_dict has no projector: ReKD relates its
    L2-normalised pooled features, so the prototype bank and the queue take their width."""
    import jax.numpy as jnp

    from rekd_jax.models import heads
    from rekd_jax.models import io as model_io

    config = _config()
    config.rekd.teacher = "offline"
    spec = {
        "arch": "resnet18",
        "overrides": {"cifar_stem": True, "width_multiplier": 0.25},
        "projector": None,
        "source": "test: no projector",
    }
    variables = heads.build_encoder(spec).init(
        jax.random.key(3), jnp.zeros((2, 16, 16, 3)), train=False
    )
    model_io.save_encoder(tmp_path / "teacher", spec, variables)
    config.teacher.checkpoint = str(tmp_path / "teacher")
    plan = methods.teacher_plan(config)
    teacher_spec, teacher_variables = state_lib.load_offline_teacher(config, plan)
    modules = state_lib.build_modules(config, teacher_spec, plan)
    schedule = optim.learning_rate_schedule(config.optimizer, GLOBAL_BATCH, 10, 0)
    tx = optim.create_optimizer(config.optimizer, schedule)
    state = state_lib.create_train_state(config, modules, tx)
    assert state.method_state["queue"]["teacher"].shape[-1] == 128  # resnet18 x 0.25 features
    cfg = step_lib.make_step_config(config, modules, tx, schedule, GLOBAL_BATCH, 1)
    p_step = jax.pmap(
        lambda s, b, t: step_lib.train_step(cfg, s, b, t, None),
        axis_name="batch",
        devices=jax.devices()[:1],
    )
    rng = np.random.RandomState(4)
    batch = {
        "image": rng.randint(0, 256, (1, GLOBAL_BATCH, 16, 16, 3)).astype(np.uint8),
        "label": rng.randint(0, 10, (1, GLOBAL_BATCH)).astype(np.int32),
    }
    _, metrics = p_step(
        flax.jax_utils.replicate(state, jax.devices()[:1]),
        batch,
        flax.jax_utils.replicate(teacher_variables, jax.devices()[:1]),
    )
    assert np.isfinite(float(metrics["loss"][0]))


def test_cross_entropy_teacher_step_trains_its_classifier_without_a_key_encoder():
    """method 'supervised' (the oracle teacher of the CIFAR-10 study): one view, no momentum
    encoder, a classifier of its own among the trained params."""
    config = _config()
    config.method = "supervised"
    config.supervised.num_classes = 4
    rng = np.random.RandomState(3)
    images = rng.randint(0, 256, (GLOBAL_BATCH, 16, 16, 3)).astype(np.uint8)
    labels = np.array([0, 1, 0, 1, 2, 2, 3, 0], np.int32)
    init, after, metrics = _run(config, 1, images, labels)
    assert after.ema_params == {} and after.method_state == {}
    assert after.params["method"]["classifier"].shape == (16, 4)
    moved = np.abs(
        np.asarray(init.params["method"]["classifier"]) - after.params["method"]["classifier"]
    ).max()
    assert moved > 1e-6 and np.isfinite(metrics["loss"]) and 0 <= metrics["train_top1"] <= 1
