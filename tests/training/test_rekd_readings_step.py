"""ReKD's extension readings through the real pmapped training step on 4 (fake) devices: an
offline teacher's embedding or pooled features, of the key view or of the weak view, scored as
the student's or the teacher's candidates, and the 'oracle_topk' relation with and without a
teacher."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from rekd_jax import methods, recipes
from rekd_jax.data import augment
from rekd_jax.models import heads
from rekd_jax.models import io as model_io
from rekd_jax.training import optim
from rekd_jax.training import state as state_lib
from rekd_jax.training import step as step_lib

GLOBAL_BATCH, DEVICES, EMBEDDING, TEACHER_FEATURES = 8, 4, 16, 128


def _config(teacher_checkpoint, **rekd_fields):
    config = default.get_config("tiny,runlocal")
    config.method = "rekd"
    config.data.image_size = 16
    config.global_batch_size = GLOBAL_BATCH
    recipes.set_queue_size(config, 2 * GLOBAL_BATCH)
    config.rekd.num_prototypes = 4
    config.rekd.relation_topk = 2
    config.rekd.teacher = "offline"
    config.rekd.update(rekd_fields)
    config.key_bn_splits = 4
    config.student.arch = "resnet18"
    config.student.overrides = {"cifar_stem": True, "width_multiplier": 0.125}
    config.student.projector.dim = EMBEDDING
    config.teacher.checkpoint = teacher_checkpoint
    return config


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory):
    """A frozen ResNet-18 x0.25 teacher (128 pooled features, a 16-wide embedding)."""
    spec = {
        "arch": "resnet18",
        "overrides": {"cifar_stem": True, "width_multiplier": 0.25},
        "projector": {"hidden": 32, "dim": EMBEDDING, "bn": False, "layers": 2},
        "source": "test: random offline teacher",
    }
    variables = heads.build_encoder(spec).init(
        jax.random.key(5), jnp.zeros((2, 16, 16, 3)), train=False
    )
    path = tmp_path_factory.mktemp("teacher") / "encoder"
    model_io.save_encoder(path, spec, variables)
    return str(path)


READINGS = [
    {"candidates": "teacher", "beta": 0.5},
    {"miner_input": "backbone", "miner_view": "weak"},
    {"relation": "oracle_topk", "candidates": "teacher", "miner_view": "weak"},
    {"relation": "oracle_topk", "teacher": "none"},
]


@pytest.mark.parametrize("fields", READINGS)
def test_each_reading_trains_on_four_devices(fields, teacher_checkpoint):
    if jax.device_count() < DEVICES:
        pytest.skip("needs 4 (fake) devices: tests/conftest.py sets XLA_FLAGS")
    config = _config(teacher_checkpoint, **fields)
    plan = methods.teacher_plan(config)
    teacher_spec, teacher_variables = state_lib.load_offline_teacher(config, plan)
    modules = state_lib.build_modules(config, teacher_spec, plan)
    schedule = optim.learning_rate_schedule(config.optimizer, GLOBAL_BATCH, 10, 0)
    tx = optim.create_optimizer(config.optimizer, schedule)
    state = state_lib.create_train_state(config, modules, tx)
    queue = state.method_state["queue"]
    if config.rekd.miner_input == "backbone":  # the miner's vectors and bank: feature width
        assert queue["miner"].shape == (2 * GLOBAL_BATCH, TEACHER_FEATURES)
        assert state.method_state["prototypes"]["centers"].shape == (4, TEACHER_FEATURES)
    else:
        assert "miner" not in queue
    cfg = step_lib.make_step_config(config, modules, tx, schedule, GLOBAL_BATCH, DEVICES)
    devices = jax.devices()[:DEVICES]
    p_step = jax.pmap(
        lambda s, b, t: step_lib.train_step(cfg, s, b, t, None), axis_name="batch", devices=devices
    )
    p_state = flax.jax_utils.replicate(state, devices)
    p_teacher = flax.jax_utils.replicate(teacher_variables, devices)
    rng = np.random.RandomState(6)
    for _ in range(2):
        batch = {
            "image": rng.randint(0, 256, (DEVICES, 2, 20, 20, 3)).astype(np.uint8),
            "label": rng.randint(0, 3, (DEVICES, 2)).astype(np.int32),
        }
        p_state, metrics = p_step(p_state, batch, p_teacher)
        for name in ("loss", "loss_rel", "positive_label_precision", "positives_per_anchor"):
            assert np.all(np.isfinite(metrics[name])), name
    assert float(metrics["positives_per_anchor"][0]) > 1.0  # the second step found positives
    after = jax.tree_util.tree_map(lambda x: np.asarray(x[0]), p_state)
    assert int(after.step) == 2 and int(after.method_state["queue"]["valid"].sum()) == 16
    if config.rekd.relation == "oracle_topk":
        np.testing.assert_allclose(metrics["positive_label_precision"][0], 1.0)


def test_weak_view_crops_and_flips_without_colour():
    """The weak view keeps every pixel's colour (a constant image stays that colour, where the
    configured jitter / greyscale would change it), and each image's view depends on its global
    index only: 4 devices give the views of 1 device."""
    config = default.get_config("tiny,runlocal")
    config.data.image_size = 8
    colours = np.random.RandomState(7).randint(0, 256, (GLOBAL_BATCH, 1, 1, 3)).astype(np.uint8)
    images = np.broadcast_to(colours, (GLOBAL_BATCH, 12, 12, 3)).copy()
    images[:, :, :6] //= 2  # a left half, so the flip and crop show

    def views(num_devices):
        cfg = _view_config(config.data.augment, GLOBAL_BATCH, num_devices)
        run = jax.pmap(
            lambda x: step_lib.weak_view(cfg, jax.random.PRNGKey(3), x),
            axis_name="batch",
            devices=jax.devices()[:num_devices],
        )
        out = run(images.reshape((num_devices, -1) + images.shape[1:]))
        return np.asarray(out).reshape((GLOBAL_BATCH, 8, 8, 3))

    one = views(1)
    np.testing.assert_array_equal(views(DEVICES), one)
    aug = config.data.augment
    unnormalised = one * np.asarray(aug.std) + np.asarray(aug.mean)
    bright, dark = colours[:, 0, 0] / 255.0, (colours[:, 0, 0] // 2) / 255.0
    for i in range(GLOBAL_BATCH):  # every pixel between the two colours of its image
        low, high = np.minimum(bright[i], dark[i]), np.maximum(bright[i], dark[i])
        assert np.all(unnormalised[i] >= low - 1e-4) and np.all(unnormalised[i] <= high + 1e-4)
    assert len({one[i].tobytes() for i in range(GLOBAL_BATCH)}) == GLOBAL_BATCH
    with pytest.raises(ValueError, match="train_crop='device'"):
        step_lib.weak_view(
            _view_config(config.data.augment, 2, 1),
            jax.random.PRNGKey(0),
            np.zeros((2, 2, 8, 8, 3), np.uint8),  # host crops: two per image
        )


def _view_config(augment_cfg, global_batch, num_devices):
    """The fields of a StepConfig that the views read (8 x 8 views, float32)."""
    return step_lib.StepConfig(
        method="rekd",
        teacher=methods.TeacherPlan(mode="offline", view="weak"),
        modules=None,
        method_cfg=None,
        teacher_method_cfg=None,
        augment_cfg=augment_cfg,
        image_size=8,
        dtype=jnp.float32,
        tx=None,
        schedule=None,
        ema_momentum=0.0,
        global_batch_size=global_batch,
        num_devices=num_devices,
        splits_per_device=1,
    )


def test_the_configured_view_would_change_the_colours():
    """The control of the weak-view test: the MoCo v2 view of the same constant images leaves
    the colour range of some image (colour jitter / greyscale are on in the config)."""
    config = default.get_config("tiny,runlocal")
    colours = np.random.RandomState(7).randint(0, 256, (GLOBAL_BATCH, 1, 1, 3)).astype(np.uint8)
    images = np.broadcast_to(colours, (GLOBAL_BATCH, 12, 12, 3)).copy()
    images[:, :, :6] //= 2
    aug = config.data.augment
    view = augment.mocov2_view(jax.random.PRNGKey(3), images, aug, 8)
    unnormalised = np.asarray(view) * np.asarray(aug.std) + np.asarray(aug.mean)
    bright, dark = colours[:, 0, 0] / 255.0, (colours[:, 0, 0] // 2) / 255.0
    outside = [
        np.any(unnormalised[i] < np.minimum(bright[i], dark[i]) - 1e-3)
        or np.any(unnormalised[i] > np.maximum(bright[i], dark[i]) + 1e-3)
        for i in range(GLOBAL_BATCH)
    ]
    assert any(outside)
