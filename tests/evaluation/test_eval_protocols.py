"""The probe protocols' constants are the published ones, and the conv probe's head is RotNet's
classifier (AdaptiveMaxPool2d -> BatchNorm2d(affine=False) -> Linear) number for number."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import conv_probe as conv_probe_config
from configs import linear_eval as linear_config
from rekd_jax.data import augment, host_crop
from rekd_jax.evaluation import common, linear, run
from rekd_jax.evaluation import config as eval_config


def test_conv_probe_is_rotnets_imagenet_protocol():
    """gidariss/FeatureLearningRotNet config/ImageNet_LinearClassifiers_ImageNet_RotNet_AlexNet_
    Features.py, architectures/LinearClassifier.py, dataloader.py."""
    config = conv_probe_config.get_config()
    block = config.conv_probe
    assert block.batch_size == 192 and block.epochs == 35
    assert block.learning_rate == 0.01 and block.schedule == "step"
    assert tuple(block.milestones) == (5, 15, 25) and block.decay_factor == 0.2  # LUT_lr
    assert block.momentum == 0.9 and block.nesterov is True and block.weight_decay == 5e-4
    assert tuple(block.layers) == ("conv1", "conv2", "conv3", "conv4", "conv5")
    assert tuple(block.pool_sizes) == (12, 7, 5, 6, 6)
    assert block.head_bn is True and block.init == "fan_out"
    assert block.train_transform == augment.RESIZE_RANDOM_CROP
    assert config.data.eval_resize == 256 and config.data.image_size == 224
    assert config.data.train_crop == "host"  # Resize(256) + RandomCrop(224) of the full image
    schedule = linear.learning_rate_schedule(block, steps_per_epoch=10)
    for epoch, lr in (
        (0, 0.01),
        (4, 0.01),
        (5, 0.002),
        (14, 0.002),
        (15, 0.0004),
        (25, 0.00008),
        (34, 0.00008),
    ):
        assert float(schedule(epoch * 10)) == pytest.approx(lr, rel=1e-5), epoch


def test_linear_probe_keeps_mocos_main_lincls_protocol():
    block = linear_config.get_config().linear
    assert (block.epochs, block.batch_size, block.learning_rate) == (100, 256, 30.0)
    assert tuple(block.milestones) == (60, 80) and block.decay_factor == 0.1
    assert block.weight_decay == 0.0 and block.momentum == 0.9 and not block.nesterov
    assert block.head_bn is False and block.init == "normal" and block.init_std == 0.01
    assert block.train_transform == augment.RANDOM_RESIZED_CROP
    assert tuple(block.crop_scale) == (0.08, 1.0)


def test_probe_host_crop_follows_the_block():
    config = conv_probe_config.get_config()
    spec = common.training_host_crop(config, config.conv_probe)
    assert spec == host_crop.HostCrop(
        views=1,
        size=224,
        crop=augment.RESIZE_RANDOM_CROP,
        scale=(0.08, 1.0),
        ratio=(3 / 4, 4 / 3),
        resize=256,
    )


def test_fan_out_init_is_rotnets_std():
    heads = linear.init_heads(jax.random.PRNGKey(0), {"conv5": 9216}, 1000, init="fan_out")
    assert float(np.std(heads["conv5"]["kernel"])) == pytest.approx(np.sqrt(2 / 1000), rel=0.01)
    normal = linear.init_heads(jax.random.PRNGKey(0), {"x": 2048}, 1000, 0.01)
    assert float(np.std(normal["x"]["kernel"])) == pytest.approx(0.01, rel=0.01)
    assert float(np.abs(heads["conv5"]["bias"]).max()) == 0.0


def _torch_classifier(channels, pool, num_classes, kernel_nhwc, bias):
    """RotNet's LinearClassifier.Classifier with our weights (NHWC flattening -> NCHW)."""
    torch = pytest.importorskip("torch")
    clf = torch.nn.Sequential(
        torch.nn.AdaptiveMaxPool2d((pool, pool)),
        torch.nn.BatchNorm2d(channels, affine=False),
        torch.nn.Flatten(),
        torch.nn.Linear(channels * pool * pool, num_classes),
    )
    w = np.asarray(kernel_nhwc).reshape(pool, pool, channels, num_classes)
    clf[3].weight.data = torch.from_numpy(w.transpose(3, 2, 0, 1).reshape(num_classes, -1).copy())
    clf[3].bias.data = torch.from_numpy(np.asarray(bias).copy())
    return clf


def test_head_batchnorm_matches_torch_batchnorm2d_in_train_and_eval():
    torch = pytest.importorskip("torch")  # requirements-dev.txt; skipped without PyTorch
    from rekd_jax.models.layers import adaptive_max_pool

    rng = np.random.default_rng(0)
    maps = rng.normal(2.0, 3.0, (2, 12, 9, 9, 5)).astype(np.float32)  # 2 steps of batch 12
    labels = rng.integers(0, 4, (2, 12))
    block = ml_collections.ConfigDict(dict(init_std=0.01, init="fan_out", head_bn=True))
    tx = linear.sgd(
        ml_collections.ConfigDict(
            dict(
                learning_rate=0.1,
                epochs=1,
                schedule="constant",
                warmup_epochs=0,
                weight_decay=0.0,
                momentum=0.0,
                nesterov=False,
            )
        ),
        1,
    )
    state = linear.init_probe(jax.random.PRNGKey(0), {"c": (3, 3, 5)}, 4, block, tx)
    clf = _torch_classifier(5, 3, 4, state.params["c"]["kernel"], state.params["c"]["bias"])
    clf.train()
    opt = torch.optim.SGD(clf.parameters(), lr=0.1)
    mask = np.ones(12, bool)
    for step in range(2):
        pooled = adaptive_max_pool(jnp.asarray(maps[step]), (3, 3))
        (loss, (_, stats)), grads = jax.value_and_grad(linear.masked_loss, has_aux=True)(
            state.params,
            {"c": pooled},
            jnp.asarray(labels[step]),
            jnp.asarray(mask),
            12.0,
            state.stats,
        )
        state = linear.apply_gradients(state, grads, tx, stats)
        opt.zero_grad()
        torch_loss = torch.nn.functional.cross_entropy(
            clf(torch.from_numpy(maps[step].transpose(0, 3, 1, 2).copy())),
            torch.from_numpy(labels[step]),
        )
        torch_loss.backward()
        opt.step()
        assert float(loss) == pytest.approx(float(torch_loss.detach()), rel=1e-5)
    bn = clf[1]
    np.testing.assert_allclose(state.stats["c"]["mean"], bn.running_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(state.stats["c"]["var"], bn.running_var.numpy(), rtol=1e-5)
    # Scoring uses the running averages (torch eval mode).
    clf.eval()
    heads = {
        "c": dict(
            state.params["c"], bn_mean=state.stats["c"]["mean"], bn_var=state.stats["c"]["var"]
        )
    }
    test = rng.normal(1.0, 2.0, (6, 9, 9, 5)).astype(np.float32)
    ours = linear.head_logits(heads, {"c": adaptive_max_pool(jnp.asarray(test), (3, 3))})["c"]
    with torch.no_grad():
        theirs = clf(torch.from_numpy(test.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-4, atol=1e-5)


def test_head_batchnorm_ignores_padding_rows():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(8, 4)).astype(np.float32))
    stats = {"mean": jnp.zeros(4), "var": jnp.ones(4)}
    mask = jnp.asarray([True] * 5 + [False] * 3)
    padded = x.at[5:].set(1e6)
    y_masked, s_masked = linear.batch_norm_train(padded, mask, stats, None)
    y_real, s_real = linear.batch_norm_train(x[:5], jnp.ones(5, bool), stats, None)
    np.testing.assert_allclose(y_masked[:5], y_real, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s_masked["var"], s_real["var"], rtol=1e-5)


@pytest.mark.parametrize("field,value", [("train_transform", "ten_crop"), ("init", "xavier")])
def test_bad_probe_fields_are_named(field, value, tmp_path):
    config = conv_probe_config.get_config("runlocal")
    config.conv_probe[field] = value
    config.checkpoint = str(tmp_path)
    (tmp_path / "spec.json").write_text(
        '{"arch": "alexnet", "overrides": {}, "projector": null, "source": "test"}'
    )
    with pytest.raises(ValueError, match=f"conv_probe.{field}"):
        eval_config.validate(config)


def test_conv_probe_on_host_crops_of_variable_size_jpegs_end_to_end(tmp_path):
    """The ImageNet path in miniature: variable-size JPEGs, Resize + RandomCrop drawn over the
    full image on the host (train_crop='host'), frozen AlexNet, head BatchNorm, image mode."""
    import json
    import os

    from PIL import Image

    from rekd_jax.data import prepare
    from rekd_jax.models import heads, io

    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("val", 8)):
        for k in range(count):
            h, w = (int(v) for v in rng.integers(30, 60, 2))
            small = rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)
            path = tmp_path / "src" / split / f"c{k % 2}" / f"{k}.jpg"
            os.makedirs(path.parent, exist_ok=True)
            Image.fromarray(small).resize((w, h), Image.BILINEAR).save(path, quality=90)
    prepare.prepare(
        str(tmp_path / "src"), "varjpeg", str(tmp_path / "tfds"), num_workers=1, log=lambda m: None
    )
    spec = {
        "arch": "alexnet",
        "overrides": {"cifar_stem": True, "num_classes": 0},
        "projector": None,
        "source": "test",
    }
    variables = heads.build_encoder(spec).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 24, 24, 3)), train=False
    )
    io.save_encoder(str(tmp_path / "encoder"), spec, variables)
    config = conv_probe_config.get_config("runlocal")
    config.data.update(
        dict(
            dataset="varjpeg",
            data_dir=str(tmp_path / "tfds"),
            train_split="train",
            eval_split="validation",
            image_size=24,
            eval_resize=28,
            host_size=28,
            resident="off",
            train_crop="host",
        )
    )
    config.checkpoint = str(tmp_path / "encoder")
    config.tensorboard = "off"
    config.eval_batch_size = 8
    config.conv_probe.update(
        dict(epochs=1, batch_size=8, milestones=(), pool_sizes=(3, 2, 2, 2, 2))
    )
    assert config.conv_probe.head_bn and config.conv_probe.train_transform == "resize_random_crop"
    result = run.evaluate(config, str(tmp_path / "work"))
    assert set(result["layers"]) == {"conv1", "conv2", "conv3", "conv4", "conv5"}
    assert all(v["count"] == 8 for v in result["layers"].values())
    with open(tmp_path / "work" / "results_conv_probe.json") as f:
        assert json.load(f)["fast"] is False
