"""Pre-training protocol constants follow the released code of the peers: SEED's temperatures
(jacobswan1/SEED tools/opts.py), MoCo's per-epoch cosine (facebookresearch/moco main_moco.py)
and MoCo/SEED's BatchNorm over 32 images per GPU (student_bn), on real steps."""

import math

import jax
import numpy as np
import pytest

from configs import default
from rekd_jax import methods, recipes
from rekd_jax.methods import seed
from rekd_jax.training import config as config_lib
from rekd_jax.training import optim
from rekd_jax.training import state as state_lib
from rekd_jax.training import step as step_lib


def test_seed_defaults_are_the_released_codes():
    cfg = seed.default_config()
    assert cfg.tau_s == 0.2 and cfg.tau_t == 1e-4 and cfg.queue_size == 65536
    assert seed.TAU_T_PAPER == 0.01
    config = default.get_config()
    recipes.seed_tau_paper(config)
    assert config.seed.tau_t == 0.01


def test_imagenet_recipe_follows_moco():
    config = recipes.imagenet(recipes.base_config())
    assert config.optimizer.cosine_unit == "epoch"
    assert config.student_bn == "split:8" and config.global_batch_size == 256  # 32 per group
    assert config.data.train_crop == "host"
    assert default.get_config().student_bn == "global"
    assert default.get_config().optimizer.cosine_unit == "step"


def test_per_epoch_cosine_is_mocos_adjust_learning_rate():
    config = default.get_config()
    config.optimizer.cosine_unit = "epoch"
    epochs, per_epoch, batch = 5, 7, 512
    schedule = optim.learning_rate_schedule(
        config.optimizer, batch, epochs * per_epoch, 0, per_epoch
    )
    lr0 = 0.03 * batch / 256
    for step in range(epochs * per_epoch):
        epoch = step // per_epoch
        expected = lr0 * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-6), step
    smooth = optim.learning_rate_schedule(
        default.get_config().optimizer, batch, epochs * per_epoch, 0
    )
    assert float(smooth(3)) < float(schedule(3)) == pytest.approx(lr0)  # per step moves at once
    with pytest.raises(ValueError, match="steps_per_epoch"):
        optim.learning_rate_schedule(config.optimizer, batch, 10, 0)


@pytest.mark.parametrize(
    "value,devices,batch,groups",
    [
        ("global", 4, 256, 0),
        ("per_device", 4, 256, 4),
        ("split:8", 1, 256, 8),
        ("split:8", 8, 256, 8),
    ],
)
def test_student_bn_groups(value, devices, batch, groups):
    assert step_lib.student_bn_groups(value, devices, batch) == groups


@pytest.mark.parametrize(
    "value,match",
    [
        ("sync", "unknown"),
        ("split:0", "unknown"),
        ("split:3", "do not tile"),
        ("split:6", "do not tile"),
    ],
)
def test_bad_student_bn_is_named(value, match):
    config = default.get_config("runlocal")
    config.student_bn = value
    with pytest.raises(ValueError, match=f"student_bn.*{match}"):
        config_lib.check_devices(config, 2)
        config_lib.validate_pretrain(config)


def _forward(student_bn, num_devices, images):
    """The student forward of the training step (train mode, BN as student_bn asks) on the
    global batch `images` laid out over `num_devices`: (embeddings, new batch_stats)."""
    config = default.get_config("runlocal")
    config.global_batch_size = 8
    config.student_bn = student_bn
    config.student.arch = "alexnet"  # small to compile; its BatchNorms are what is tested
    config.student.overrides = {"cifar_stem": True}
    config.student.projector.dim = 16
    modules = state_lib.build_modules(config)
    variables = modules.student.init(jax.random.PRNGKey(0), images[:1], train=False)
    cfg = step_lib.make_step_config(config, modules, None, None, 8, num_devices)

    def forward(x):
        out, mutated = step_lib.student_forward(cfg, variables, x, jax.random.PRNGKey(1))
        return out["embedding"], jax.lax.pmean(mutated["batch_stats"], "batch")

    emb, stats = jax.pmap(forward, axis_name="batch", devices=jax.devices()[:num_devices])(
        images.reshape((num_devices, -1) + images.shape[1:])
    )
    return np.asarray(emb).reshape(8, -1), jax.tree_util.tree_map(lambda v: np.asarray(v[0]), stats)


def test_per_device_student_bn_equals_split_bn_on_one_device():
    """'per_device' on 4 devices (2 images each) == 'split:4' on 1 device; 'global' differs."""
    if jax.device_count() < 4:
        pytest.skip("needs 4 (fake) devices: tests/conftest.py sets XLA_FLAGS")
    images = np.random.RandomState(0).normal(size=(8, 16, 16, 3)).astype(np.float32)
    four, stats4 = _forward("per_device", 4, images)
    one, stats1 = _forward("split:4", 1, images)
    glob, _ = _forward("global", 4, images)
    whole, _ = _forward("split:1", 1, images)
    np.testing.assert_allclose(four, one, rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(stats4), jax.tree_util.tree_leaves(stats1)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(glob, whole, rtol=1e-4, atol=1e-5)  # cross-replica = 1 group
    assert np.abs(glob - four).max() > 1e-3  # the BN choice matters


def test_step_views_of_host_crops_are_the_crops_augmented():
    """The training step's two_views takes the host's two crops per image as they are (crop
    box = the whole crop), one per view, with per-example randomness."""
    config = default.get_config("runlocal")
    aug = config.data.augment
    aug.update(
        jitter_prob=0.0,
        gray_prob=0.0,
        blur_prob=0.0,
        flip_prob=0.0,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    )
    cfg = step_lib.StepConfig(
        method="mocov2",
        teacher=methods.TeacherPlan(),
        modules=None,
        method_cfg=None,
        teacher_method_cfg=None,
        augment_cfg=aug,
        image_size=16,
        dtype=np.float32,
        tx=None,
        schedule=None,
        ema_momentum=0.99,
        global_batch_size=4,
        num_devices=1,
        splits_per_device=1,
    )
    crops = np.random.RandomState(0).randint(0, 256, (4, 2, 16, 16, 3)).astype(np.uint8)
    v1, v2 = jax.pmap(
        lambda x: step_lib.two_views(cfg, jax.random.PRNGKey(0), x),
        axis_name="batch",
        devices=jax.devices()[:1],
    )(crops[None])
    np.testing.assert_allclose(np.asarray(v1[0]), crops[:, 0] / 255.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(v2[0]), crops[:, 1] / 255.0, atol=1e-6)
