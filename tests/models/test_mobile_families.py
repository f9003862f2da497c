"""MobileNetV3 / ShuffleNetV2 / EfficientNet-B0: exact torchvision parity and Flax contracts.

Parity: real torchvision modules (weights=None, seeded, BatchNorm affine params and running
stats randomised), eval mode, float32; the converted Flax model must agree to
max|a - b| / max|b| <= 1e-4 on pooled features, logits and sown intermediates.
"""

from __future__ import annotations

import collections
import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rekd_jax.models import efficientnet, mobilenetv3, shufflenetv2
from rekd_jax.tools.import_torch import convert

torch = pytest.importorskip("torch")  # requirements-dev.txt; skipped without PyTorch
torchvision = pytest.importorskip("torchvision")

FAMILIES = {
    **{name: mobilenetv3 for name in mobilenetv3.MODELS},
    **{name: shufflenetv2 for name in shufflenetv2.MODELS},
    **{name: efficientnet for name in efficientnet.MODELS},
}
TORCHVISION_NAMES = {
    "mobilenetv3_large": "mobilenet_v3_large",
    "mobilenetv3_small": "mobilenet_v3_small",
    "shufflenetv2_x0_5": "shufflenet_v2_x0_5",
    "shufflenetv2_x1_0": "shufflenet_v2_x1_0",
    "shufflenetv2_x1_5": "shufflenet_v2_x1_5",
    "shufflenetv2_x2_0": "shufflenet_v2_x2_0",
    "efficientnet_b0": "efficientnet_b0",
}
PARITY_TOLERANCE = 1e-4


def build(name: str, **overrides):
    return FAMILIES[name].MODELS[name](**overrides)


def relative_error(ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


def abstract_variables(model, size: int = 64):
    return jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)), train=False)
    )


def make_torch_model(name: str) -> torch.nn.Module:
    """A seeded torchvision model whose BatchNorms are not at their default state."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, TORCHVISION_NAMES[name])(weights=None)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(0.5 + torch.rand(c, generator=generator))
                module.bias.copy_(0.1 * torch.randn(c, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(c, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(c, generator=generator))
    return model.eval()


def load(name: str, torch_model, flax_model, size: int = 64):
    """Flax variables for ``flax_model`` converted from ``torch_model`` by the project's
    importer; a features-only model (num_classes=0) drops the converted classifier."""
    # Clone: convert's arrays may share memory with torch's (in-place updated) BN buffers.
    converted = convert({k: v.clone() for k, v in torch_model.state_dict().items()}, name)
    flat = flax.traverse_util.flatten_dict(
        {c: converted[c]["backbone"] for c in ("params", "batch_stats")}
    )
    wanted = flax.traverse_util.flatten_dict(
        flax.core.unfreeze(abstract_variables(flax_model, size))
    )
    assert set(wanted) <= set(flat), sorted(set(wanted) - set(flat))
    if flax_model.num_classes != 0:
        assert set(flat) == set(wanted), sorted(set(flat) - set(wanted))
    for path, leaf in wanted.items():
        assert flat[path].shape == leaf.shape, path
    return flax.traverse_util.unflatten_dict({path: jnp.asarray(flat[path]) for path in wanted})


def torch_pooled_features(name: str, model, x):
    """What feeds torchvision's classifier head."""
    if name.startswith("shufflenet"):
        stem = model.maxpool(model.conv1(x))
        return model.conv5(model.stage4(model.stage3(model.stage2(stem)))).mean([2, 3])
    return torch.flatten(model.avgpool(model.features(x)), 1)


def torch_stem_and_head(name: str, model, x):
    if name.startswith("shufflenet"):
        stem = model.conv1(x)
        head = model.conv5(model.stage4(model.stage3(model.stage2(model.maxpool(stem)))))
        return stem, head
    return model.features[0](x), model.features(x)


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_parameter_count_equals_torchvision(name):
    ours = sum(leaf.size for leaf in jax.tree.leaves(abstract_variables(build(name))["params"]))
    theirs = sum(
        p.numel() for p in getattr(torchvision.models, TORCHVISION_NAMES[name])().parameters()
    )
    expected = {
        "mobilenetv3_large": 5_483_032,
        "shufflenetv2_x1_0": 2_278_604,
        "efficientnet_b0": 5_288_548,
    }
    assert ours == theirs == expected.get(name, theirs)


def test_width_multiplier_matches_torchvision():
    ours = abstract_variables(build("mobilenetv3_large", width_multiplier=0.75))["params"]
    theirs = torchvision.models.mobilenet_v3_large(width_mult=0.75)
    assert sum(leaf.size for leaf in jax.tree.leaves(ours)) == sum(
        p.numel() for p in theirs.parameters()
    )


@pytest.mark.parametrize(
    "name", ["mobilenetv3_large", "mobilenetv3_small", "shufflenetv2_x0_5", "efficientnet_b0"]
)
def test_eval_parity_with_torchvision(name):
    torch_model = make_torch_model(name)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want_logits = torch_model(images).numpy()
        want_features = torch_pooled_features(name, torch_model, images).numpy()
        want_stem, want_head = torch_stem_and_head(name, torch_model, images)
    x = jnp.asarray(nhwc(images))

    classifier = build(name)
    logits = jax.jit(functools.partial(classifier.apply, train=False))(
        load(name, torch_model, classifier), x
    )
    assert logits.shape == (2, 1000)
    assert relative_error(logits, want_logits) <= PARITY_TOLERANCE

    backbone = build(name, num_classes=0)
    apply = jax.jit(functools.partial(backbone.apply, train=False, mutable=["intermediates"]))
    features, state = apply(load(name, torch_model, backbone), x)
    assert features.shape == want_features.shape
    assert relative_error(features, want_features) <= PARITY_TOLERANCE
    sown = state["intermediates"]
    stem_name, head_name = ("conv1", "conv5") if name.startswith("shufflenet") else ("stem", "head")
    assert relative_error(sown[stem_name][0], nhwc(want_stem)) <= PARITY_TOLERANCE
    assert relative_error(sown[head_name][0], nhwc(want_head)) <= PARITY_TOLERANCE


@pytest.mark.parametrize("name", ["mobilenetv3_small", "shufflenetv2_x0_5"])
def test_train_mode_matches_torch_and_updates_batch_stats(name):
    """Train-mode BN normalises with batch statistics and moves running means with torch's
    momentum (MobileNetV3 0.01, ShuffleNetV2 0.1)."""
    torch_model = make_torch_model(name)
    backbone = build(name, num_classes=0)
    variables = load(name, torch_model, backbone)
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    torch_model.train()
    with torch.no_grad():
        want = torch_pooled_features(name, torch_model, images).numpy()
    want_means = load(name, torch_model, backbone)["batch_stats"]

    apply = jax.jit(functools.partial(backbone.apply, train=True, mutable=["batch_stats"]))
    features, updated = apply(variables, jnp.asarray(nhwc(images)))
    assert relative_error(features, want) <= PARITY_TOLERANCE
    old = flax.traverse_util.flatten_dict(variables["batch_stats"])
    new = flax.traverse_util.flatten_dict(updated["batch_stats"])
    expected = flax.traverse_util.flatten_dict(want_means)
    assert set(new) == set(old)
    for path in new:
        assert not np.allclose(new[path], old[path]), path
        if path[-1] == "mean":  # torch's running_var uses the unbiased variance, Flax the biased
            np.testing.assert_allclose(
                new[path], expected[path], rtol=1e-4, atol=1e-5, err_msg=str(path)
            )


EXPECTED_CIFAR = {
    # name: (feature dim, {intermediate: spatial size} on 32x32 inputs)
    "mobilenetv3_large": (
        960,
        {"stem": 32, "stage1": 32, "stage2": 16, "stage3": 8, "stage4": 4, "stage5": 2, "head": 2},
    ),
    "mobilenetv3_small": (
        576,
        {"stem": 32, "stage1": 16, "stage2": 8, "stage3": 4, "stage4": 2, "head": 2},
    ),
    "shufflenetv2_x0_5": (1024, {"conv1": 32, "stage2": 16, "stage3": 8, "stage4": 4, "conv5": 4}),
    "shufflenetv2_x2_0": (2048, {"conv1": 32, "stage2": 16, "stage3": 8, "stage4": 4, "conv5": 4}),
    "efficientnet_b0": (
        1280,
        {
            "stem": 32,
            "stage1": 32,
            "stage2": 16,
            "stage3": 8,
            "stage4": 4,
            "stage5": 4,
            "stage6": 2,
            "stage7": 2,
            "head": 2,
        },
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_CIFAR))
def test_cifar_stem_shapes_and_intermediates(name):
    dim, spatial = EXPECTED_CIFAR[name]
    model = build(name, num_classes=0, cifar_stem=True)
    variables = abstract_variables(model, 32)
    features, state = jax.eval_shape(
        lambda v: model.apply(v, jnp.zeros((2, 32, 32, 3)), train=False, mutable=["intermediates"]),
        variables,
    )
    assert features.shape == (2, dim)
    sown = state["intermediates"]
    assert {k: v[0].shape[1:3] for k, v in sown.items()} == {k: (s, s) for k, s in spatial.items()}
    # The CIFAR stem changes strides only: same parameters as the ImageNet model.
    imagenet = abstract_variables(build(name, num_classes=0), 32)
    assert jax.tree.map(lambda a: a.shape, variables) == jax.tree.map(lambda a: a.shape, imagenet)


def test_imagenet_stem_downsamples_by_32():
    model = build("shufflenetv2_x0_5", num_classes=0)
    _, state = jax.eval_shape(
        lambda v: model.apply(
            v, jnp.zeros((1, 224, 224, 3)), train=False, mutable=["intermediates"]
        ),
        abstract_variables(model, 224),
    )
    sown = state["intermediates"]
    assert sown["conv1"][0].shape[1] == 112 and sown["conv5"][0].shape[1] == 7


def test_bfloat16_compute_keeps_float32_params():
    name = "mobilenetv3_small"
    torch_model = make_torch_model(name)
    images = jnp.asarray(
        nhwc(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4)))
    )
    reference_model = build(name, num_classes=0)
    variables = load(name, torch_model, reference_model)
    reference = jax.jit(functools.partial(reference_model.apply, train=False))(variables, images)
    model = build(name, num_classes=0, dtype=jnp.bfloat16)
    fresh = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images, train=False))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(fresh))
    out = jax.jit(functools.partial(model.apply, train=False))(variables, images)
    assert out.dtype == jnp.bfloat16
    assert relative_error(out, reference) < 0.05


def test_efficientnet_stochastic_depth_drops_whole_examples():
    """Train mode: each example's residual branch is either dropped or scaled by 1/(1-p)."""
    block = efficientnet.MBConv(8, 8, expand_ratio=6, kernel=3, stride=1, stochastic_depth_prob=0.5)
    x = jax.random.normal(jax.random.PRNGKey(0), (32, 4, 4, 8))
    variables = block.init(jax.random.PRNGKey(1), x, train=False)
    kept, _ = block.clone(stochastic_depth_prob=0.0).apply(
        variables, x, train=True, mutable=["batch_stats"]
    )
    out, _ = block.apply(
        variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(2)}
    )
    branch, got = np.asarray(kept - x), np.asarray(out - x)
    dropped = np.all(np.abs(got) < 1e-6, axis=(1, 2, 3))
    assert 0 < dropped.sum() < len(dropped)
    np.testing.assert_allclose(got[~dropped], 2.0 * branch[~dropped], rtol=1e-5, atol=1e-5)
    # Eval mode: no rng needed, branch kept at scale 1 (BN uses running stats here).
    np.testing.assert_allclose(
        block.apply(variables, x, train=False),
        block.clone(stochastic_depth_prob=0.0).apply(variables, x, train=False),
    )


def primitive_counts(jaxpr) -> collections.Counter:
    """How often each primitive occurs in ``jaxpr``, nested jaxprs included."""
    counts = collections.Counter()
    for eqn in jaxpr.eqns:
        counts[eqn.primitive.name] += 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    counts += primitive_counts(inner)
    return counts


@pytest.mark.parametrize("name", ["mobilenetv3_small", "shufflenetv2_x0_5", "efficientnet_b0"])
def test_bn_axis_name_reaches_every_batch_norm(name):
    """Cross-replica BN: in train mode each BatchNorm all-reduces its statistics over
    ``bn_axis_name`` (one psum per BN layer), and none does without it (traced, not compiled)."""
    x = jnp.zeros((2, 16, 16, 3))

    def psums(**overrides):
        model = build(name, num_classes=0, cifar_stem=True, **overrides)
        variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
        rngs = {"dropout": jax.random.PRNGKey(1)}  # EfficientNet's stochastic depth
        apply = functools.partial(model.apply, train=True, mutable=["batch_stats"], rngs=rngs)
        jaxpr = jax.make_jaxpr(apply, axis_env=[("batch", 4)])(variables, x).jaxpr
        return primitive_counts(jaxpr)["psum"], len(jax.tree.leaves(variables["batch_stats"])) // 2

    synced, num_batch_norms = psums(bn_axis_name="batch")
    assert num_batch_norms > 10 and synced == num_batch_norms
    assert psums()[0] == 0


@pytest.mark.parametrize("name", ["mobilenetv3_small", "shufflenetv2_x0_5", "efficientnet_b0"])
def test_rejects_nchw_input(name):
    model = build(name)
    with pytest.raises(ValueError, match="NHWC"):
        jax.eval_shape(
            lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 32, 32)), train=False)
        )


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown MobileNetV3 variant"):
        abstract_variables(mobilenetv3.MobileNetV3(variant="medium"))


def test_torch_module_names():
    assert mobilenetv3.torch_module_name(("features_1", "block_0")) == "features.1.block.0"
    assert (
        mobilenetv3.torch_module_name(("features_4", "block_2", "fc1")) == "features.4.block.2.fc1"
    )
    assert mobilenetv3.torch_module_name(("features_16", "bn")) == "features.16.1"
    assert (
        efficientnet.torch_module_name(("features_2_1", "block_3", "conv"))
        == "features.2.1.block.3.0"
    )
    assert shufflenetv2.torch_module_name(("stage2_0", "branch2_3")) == "stage2.0.branch2.3"


def test_channel_shuffle_matches_torchvision():
    from torchvision.models.shufflenetv2 import channel_shuffle as torch_shuffle

    x = torch.arange(2 * 6 * 2 * 3, dtype=torch.float32).reshape(2, 6, 2, 3)
    np.testing.assert_array_equal(
        shufflenetv2.channel_shuffle(jnp.asarray(nhwc(x)), 2), nhwc(torch_shuffle(x, 2))
    )
