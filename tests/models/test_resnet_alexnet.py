"""ResNet and AlexNet against torchvision: parameter counts, outputs, intermediates, variants."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from torch_parity import (
    TOL,
    images,
    random_variables,
    randomize_bn,
    rel_err,
    tnn,
    torch,
    torch_apply,
)

from rekd_jax import models
from rekd_jax.tools.import_torch import convert

torchvision = pytest.importorskip("torchvision")


def nchw_to_nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def backbone_variables(variables):
    return {
        "params": variables["params"]["backbone"],
        "batch_stats": variables["batch_stats"].get("backbone", {}),
    }


def hook_outputs(modules: dict[str, tnn.Module]) -> dict[str, torch.Tensor]:
    """Record each module's output on the next forward pass."""
    store = {}
    for name, module in modules.items():
        module.register_forward_hook(
            lambda _m, _i, out, name=name: store.__setitem__(name, out.clone())
        )
    return store


def param_count(name: str, **overrides) -> int:
    model = models.get_model(name, **overrides)
    size = 32 if overrides.get("cifar_stem") else 224
    shapes = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, train=False),
        jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32),
    )
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes["params"]))


@pytest.mark.parametrize(
    "name, overrides, expected",
    [
        ("resnet18", {}, 11_689_512),
        ("resnet34", {}, 21_797_672),
        ("resnet50", {}, 25_557_032),
        ("resnet101", {}, 44_549_160),
        ("alexnet", {"use_bn": False}, 61_100_840),
    ],
)
def test_parameter_counts_equal_torchvision(name, overrides, expected):
    assert param_count(name, **overrides) == expected


def test_alexnet_bn_variant_parameter_count():
    # Conv biases are replaced by BN (gamma, beta): +64+192+384+256+256 parameters.
    assert param_count("alexnet", use_bn=True) == 61_100_840 + 1152


@pytest.mark.parametrize("name, size", [("resnet18", 64), ("resnet50", 64)])
def test_resnet_matches_torchvision(name, size):
    torch.manual_seed(0)
    reference = randomize_bn(getattr(torchvision.models, name)(weights=None), seed=1)
    stages = hook_outputs(
        {
            "stem": reference.maxpool,
            **{f"layer{i}": getattr(reference, f"layer{i}") for i in range(1, 5)},
        }
    )
    variables = convert(reference.state_dict(), name)
    x = images(2, size)

    logits, state = models.get_model(name).apply(
        backbone_variables(variables), x, train=False, mutable=["intermediates"]
    )
    expected_logits = torch_apply(reference, x)
    assert logits.shape == (2, 1000)
    assert rel_err(logits, expected_logits) <= TOL
    for stage, expected in stages.items():
        (sown,) = state["intermediates"][stage]
        assert rel_err(sown, nchw_to_nhwc(expected)) <= TOL, stage

    features = models.get_model(name, num_classes=0).apply(
        backbone_variables(variables), x, train=False
    )
    reference.fc = tnn.Identity()
    assert features.shape == (2, models.feature_dim(name))
    assert rel_err(features, torch_apply(reference, x)) <= TOL


def test_resnet_cifar_stem_matches_torch_cifar_variant():
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None, num_classes=10)
    reference.conv1 = tnn.Conv2d(3, 64, 3, 1, 1, bias=False)
    reference.maxpool = tnn.Identity()
    randomize_bn(reference, seed=2)
    variables = convert(reference.state_dict(), "resnet18", cifar_stem=True)
    x = images(2, 32)
    model = models.get_model("resnet18", cifar_stem=True, num_classes=10)
    logits, state = model.apply(
        backbone_variables(variables), x, train=False, mutable=["intermediates"]
    )
    assert rel_err(logits, torch_apply(reference, x)) <= TOL
    shapes = {k: v[0].shape for k, v in state["intermediates"].items()}
    assert shapes == {
        "stem": (2, 32, 32, 64),
        "layer1": (2, 32, 32, 64),
        "layer2": (2, 16, 16, 128),
        "layer3": (2, 8, 8, 256),
        "layer4": (2, 4, 4, 512),
    }


def test_resnet_train_mode_matches_torch_and_updates_running_mean():
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None, num_classes=10)
    reference.conv1 = tnn.Conv2d(3, 64, 3, 1, 1, bias=False)
    reference.maxpool = tnn.Identity()
    randomize_bn(reference, seed=3)
    variables = backbone_variables(convert(reference.state_dict(), "resnet18", cifar_stem=True))
    x = images(4, 32, seed=1)
    model = models.get_model("resnet18", cifar_stem=True, num_classes=10)
    logits, updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
    expected = torch_apply(reference.train(), x)
    assert rel_err(logits, expected) <= TOL
    # torch's momentum 0.1 == Flax momentum 0.9 (running variance differs: torch uses the
    # unbiased one).
    torch_mean = reference.layer3[0].bn2.running_mean.numpy()
    assert rel_err(updated["batch_stats"]["layer3_0"]["bn2"]["mean"], torch_mean) <= TOL
    assert not np.allclose(
        updated["batch_stats"]["layer3_0"]["bn2"]["mean"],
        variables["batch_stats"]["layer3_0"]["bn2"]["mean"],
    )


def torchvision_alexnet_bn() -> tnn.Module:
    """torchvision AlexNet with BN inserted after every conv (bias-free convs), like vgg*_bn."""
    model = torchvision.models.alexnet(weights=None)
    layers, in_channels = [], 3
    for out_channels, kernel, stride, padding, pool in models.alexnet.CONV_LAYOUT:
        layers += [
            tnn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=False),
            tnn.BatchNorm2d(out_channels),
            tnn.ReLU(),
        ]
        if pool:
            layers.append(tnn.MaxPool2d(3, 2))
        in_channels = out_channels
    model.features = tnn.Sequential(*layers)
    return model


@pytest.mark.parametrize("use_bn", [False, True])
def test_alexnet_matches_torch(use_bn):
    torch.manual_seed(0)
    reference = randomize_bn(
        torchvision_alexnet_bn() if use_bn else torchvision.models.alexnet(weights=None), seed=4
    )
    relu_indices = [i for i, m in enumerate(reference.features) if isinstance(m, tnn.ReLU)]
    activations = hook_outputs(
        {f"conv{n}": reference.features[i] for n, i in enumerate(relu_indices, start=1)}
    )
    variables = backbone_variables(convert(reference.state_dict(), "alexnet", use_bn=use_bn))
    x = images(2, 96)

    model = models.get_model("alexnet", use_bn=use_bn)
    logits, state = model.apply(variables, x, train=False, mutable=["intermediates"])
    assert logits.shape == (2, 1000)
    assert rel_err(logits, torch_apply(reference, x)) <= TOL
    assert sorted(state["intermediates"]) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    for name, expected in activations.items():
        assert rel_err(state["intermediates"][name][0], nchw_to_nhwc(expected)) <= TOL, name

    # Dropout (p=0.5 before fc6 and fc7) acts only when training, with a 'dropout' rng.
    train = jax.jit(
        lambda v, key: model.apply(
            v, x, train=True, mutable=["batch_stats"], rngs={"dropout": key}
        )[0]
    )
    first, second = train(variables, jax.random.key(1)), train(variables, jax.random.key(2))
    assert first.shape == (2, 1000) and not np.allclose(first, second)

    features = models.get_model("alexnet", use_bn=use_bn, num_classes=0).apply(
        variables, x, train=False
    )
    expected_features = torch_apply(reference.features, x).mean(axis=(2, 3))
    assert features.shape == (2, 256) and models.feature_dim("alexnet") == 256
    assert rel_err(features, expected_features) <= TOL


def test_alexnet_cifar_stem_shapes():
    model = models.get_model("alexnet", cifar_stem=True, num_classes=10)
    x = images(2, 32)
    variables = random_variables(model, x)
    logits, state = jax.jit(functools.partial(model.apply, train=False, mutable=["intermediates"]))(
        variables, x
    )
    assert logits.shape == (2, 10) and np.all(np.isfinite(logits)) and np.std(logits) > 0
    shapes = {k: v[0].shape[1:] for k, v in state["intermediates"].items()}
    assert shapes == {
        "conv1": (32, 32, 64),
        "conv2": (15, 15, 192),
        "conv3": (7, 7, 384),
        "conv4": (7, 7, 256),
        "conv5": (7, 7, 256),
    }
    assert variables["params"]["features_0"]["kernel"].shape == (3, 3, 3, 64)
    assert models.feature_dim("alexnet", cifar_stem=True) == 256


def test_alexnet_rejects_too_small_inputs():
    model = models.get_model("alexnet")
    with pytest.raises(ValueError, match="63x63"):
        jax.eval_shape(
            lambda x: model.init(jax.random.key(0), x, train=False),
            jax.ShapeDtypeStruct((1, 62, 62, 3), jnp.float32),
        )


def test_bfloat16_compute_with_float32_params():
    x = images(2, 32)
    f32 = models.get_model("resnet18", cifar_stem=True, width_multiplier=0.25, num_classes=0)
    bf16 = models.get_model(
        "resnet18", cifar_stem=True, width_multiplier=0.25, num_classes=0, dtype="bfloat16"
    )
    variables = random_variables(f32, x)
    bf16_shapes = jax.eval_shape(functools.partial(bf16.init, train=False), jax.random.key(0), x)
    assert {leaf.dtype for leaf in jax.tree.leaves(bf16_shapes)} == {np.dtype(np.float32)}
    out, state = jax.jit(functools.partial(bf16.apply, train=False, mutable=["intermediates"]))(
        variables, x
    )
    assert out.dtype == jnp.bfloat16
    assert {v[0].dtype for v in state["intermediates"].values()} == {np.dtype(jnp.bfloat16)}
    assert (
        rel_err(
            out.astype(jnp.float32),
            jax.jit(functools.partial(f32.apply, train=False))(variables, x),
        )
        < 5e-2
    )


def test_cross_replica_batch_norm_equals_full_batch():
    devices = jax.local_device_count()
    assert devices == 4, "tests/conftest.py provides four CPU devices"
    local = models.get_model("resnet18", cifar_stem=True, width_multiplier=0.25, num_classes=0)
    synced = local.clone(bn_axis_name="batch")
    x = images(8, 32)
    variables = random_variables(local, x)
    full, full_stats = jax.jit(functools.partial(local.apply, train=True, mutable=["batch_stats"]))(
        variables, x
    )
    step = jax.pmap(
        lambda v, xs: synced.apply(v, xs, train=True, mutable=["batch_stats"]),
        axis_name="batch",
        in_axes=(None, 0),
    )
    sharded, sharded_stats = step(variables, x.reshape(devices, 2, 32, 32, 3))
    assert rel_err(np.asarray(sharded).reshape(8, -1), full) <= TOL
    one_device_stats = jax.tree.map(lambda a: a[0], sharded_stats)
    for got, want in zip(jax.tree.leaves(one_device_stats), jax.tree.leaves(full_stats)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_resnet_initialisation_is_torchvisions():
    # kaiming_normal_(fan_out) convs, BN gamma 1 / beta 0, or gamma 0 with zero_init_residual.
    block = models.resnet.Bottleneck(32, zero_init_residual=True)
    variables = jax.jit(functools.partial(block.init, train=False))(
        jax.random.key(0), images(2, 8)[..., :1].repeat(128, -1)
    )
    params = variables["params"]
    conv2 = np.asarray(params["conv2"]["kernel"])
    assert conv2.shape == (3, 3, 32, 32)
    assert abs(conv2.std() / np.sqrt(2.0 / (9 * 32)) - 1) < 0.05
    assert (
        np.all(params["bn3"]["scale"] == 0)
        and np.all(params["bn1"]["scale"] == 1)
        and np.all(params["bn1"]["bias"] == 0)
    )
    assert "downsample_0" not in params  # 128 -> 32 * 4 channels at stride 1: identity shortcut


def test_alexnet_initialisation_is_torch_default():
    # Plain nn.Conv2d init: kernel and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    model = models.get_model("alexnet", use_bn=False, num_classes=0, cifar_stem=True)
    params = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), images(1, 32))[
        "params"
    ]
    for name, fan_in in [("features_0", 3 * 3 * 3), ("features_3", 64 * 5 * 5)]:
        bound = 1 / np.sqrt(fan_in)
        kernel, bias = np.asarray(params[name]["kernel"]), np.asarray(params[name]["bias"])
        assert np.abs(kernel).max() <= bound and abs(kernel.std() / (bound / np.sqrt(3)) - 1) < 0.1
        assert np.abs(bias).max() <= bound and bias.std() > bound / 4


def test_width_multiplier_names():
    assert models.get_model("resnet50x2") == models.get_model("resnet50", width_multiplier=2.0)
    assert models.feature_dim("resnet50x2") == 4096
    assert models.feature_dim("resnet18", width_multiplier=0.25) == 128
    shapes = jax.eval_shape(
        functools.partial(models.get_model("resnet50", width_multiplier=0.25).init, train=False),
        jax.random.key(0),
        jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32),
    )["params"]
    assert shapes["conv1"]["kernel"].shape == (7, 7, 3, 16)
    assert shapes["layer4_0"]["conv3"]["kernel"].shape == (1, 1, 128, 512)
    assert shapes["fc"]["kernel"].shape == (512, 1000)


def test_alexnet_width_multiplier_scales_every_conv():
    model = models.get_model("alexnet", cifar_stem=True, width_multiplier=0.25, num_classes=0)
    x = images(2, 32)
    variables = random_variables(model, x)
    kernels = [variables["params"][f"features_{i}"]["kernel"].shape for i in (0, 4, 8, 11, 14)]
    assert kernels == [
        (3, 3, 3, 16),
        (5, 5, 16, 48),
        (3, 3, 48, 96),
        (3, 3, 96, 64),
        (3, 3, 64, 64),
    ]
    assert model.apply(variables, x, train=False).shape == (2, 64)
    assert models.feature_dim("alexnet", cifar_stem=True, width_multiplier=0.25) == 64
    assert models.get_model("alexnet", width_multiplier=1.0) == models.get_model("alexnet")
    with pytest.raises(ValueError, match="width_multiplier must be positive"):
        models.feature_dim("alexnet", width_multiplier=0.0)
