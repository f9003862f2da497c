"""Registry, adaptive pooling, projector/Encoder heads and the encoder checkpoint format."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from torch_parity import TOL, images, random_variables, rel_err, tnn, torch

from rekd_jax import models
from rekd_jax.models import heads, io, layers

TINY = {"width_multiplier": 0.25, "cifar_stem": True}


# ---------------------------------------------------------------- registry


def test_list_models_has_every_family():
    assert models.list_models() == sorted(
        [
            "alexnet",
            "resnet18",
            "resnet34",
            "resnet50",
            "resnet101",
            "resnet152",
            "mobilenetv3_large",
            "mobilenetv3_small",
            "shufflenetv2_x0_5",
            "shufflenetv2_x1_0",
            "shufflenetv2_x1_5",
            "shufflenetv2_x2_0",
            "efficientnet_b0",
        ]
    )
    assert models.model_family("resnet50x2") is models.resnet
    assert models.model_family("alexnet") is models.alexnet


@pytest.mark.parametrize(
    "name, overrides, expected",
    [
        ("resnet18", {}, 512),
        ("resnet34", {}, 512),
        ("resnet50", {}, 2048),
        ("resnet101", {}, 2048),
        ("resnet50x2", {}, 4096),
        ("resnet18", TINY, 128),
        ("alexnet", {"use_bn": False}, 256),
    ],
)
def test_feature_dim(name, overrides, expected):
    assert models.feature_dim(name, **overrides) == expected


def test_unknown_name_and_fields_are_rejected_with_the_valid_ones():
    with pytest.raises(
        ValueError, match=r"Unknown model 'resnet19'.*alexnet.*efficientnet_b0.*resnet50x2"
    ):
        models.get_model("resnet19")
    with pytest.raises(
        ValueError, match=r"Unknown override\(s\) \['use_bn'\].*num_classes.*width_multiplier"
    ):
        models.get_model("resnet18", use_bn=True)
    with pytest.raises(ValueError, match="already sets the width multiplier"):
        models.get_model("resnet50x2", width_multiplier=4)


def test_overrides_reach_the_module():
    model = models.get_model(
        "alexnet", num_classes=7, use_bn=False, dtype="bfloat16", bn_axis_name="batch"
    )
    assert (model.num_classes, model.use_bn, model.dtype, model.bn_axis_name) == (
        7,
        False,
        jnp.bfloat16,
        "batch",
    )


# ---------------------------------------------------------------- layers


@pytest.mark.parametrize(
    "in_hw, out_hw",
    [
        ((13, 13), 6),
        ((55, 55), 12),
        ((27, 27), 7),
        ((13, 13), 5),
        ((7, 9), (6, 4)),
        ((12, 12), 6),
        ((2, 3), 6),
        ((1, 1), 6),
        ((6, 6), 6),
    ],
)
def test_adaptive_pooling_matches_torch(in_hw, out_hw):
    x = np.random.RandomState(0).randn(2, *in_hw, 3).astype(np.float32)
    x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2))
    expected_avg = tnn.AdaptiveAvgPool2d(out_hw)(x_torch).numpy().transpose(0, 2, 3, 1)
    expected_max = tnn.AdaptiveMaxPool2d(out_hw)(x_torch).numpy().transpose(0, 2, 3, 1)
    avg = jax.jit(layers.adaptive_avg_pool, static_argnums=1)(x, out_hw)
    amax = layers.adaptive_max_pool(x, out_hw)
    assert avg.shape == expected_avg.shape
    np.testing.assert_allclose(avg, expected_avg, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(amax, expected_max)


def test_adaptive_pool_rejects_non_nhwc():
    with pytest.raises(ValueError, match="NHWC"):
        layers.adaptive_max_pool(np.zeros((4, 4, 3)), 2)


def test_default_torch_module_name():
    assert layers.default_torch_module_name(("layer1_0", "downsample_1")) == "layer1.0.downsample.1"
    assert models.alexnet.torch_module_name(("classifier_6",)) == "classifier.6"
    assert models.resnet.torch_module_name(("conv1",)) == "conv1"


# ---------------------------------------------------------------- heads


@pytest.mark.parametrize("use_bn", [False, True])
def test_projector_matches_torch_mlp(use_bn):
    torch.manual_seed(0)
    hidden = [tnn.Linear(16, 32), tnn.BatchNorm1d(32)] if use_bn else [tnn.Linear(16, 32)]
    reference = tnn.Sequential(*hidden, tnn.ReLU(), tnn.Linear(32, 8)).eval()
    if use_bn:
        reference[1].running_mean.normal_(0, 0.5)
        reference[1].running_var.uniform_(0.5, 2.0)
        reference[1].weight.data.uniform_(0.5, 1.5)
    linears = [m for m in reference if isinstance(m, tnn.Linear)]
    params = {
        name: {"kernel": m.weight.detach().numpy().T, "bias": m.bias.detach().numpy()}
        for name, m in zip(["hidden", "out"], linears)
    }
    variables = {"params": params}
    if use_bn:
        bn = reference[1]
        params["bn"] = {"scale": bn.weight.detach().numpy(), "bias": bn.bias.detach().numpy()}
        variables["batch_stats"] = {
            "bn": {"mean": bn.running_mean.numpy(), "var": bn.running_var.numpy()}
        }
    x = np.random.RandomState(1).randn(4, 16).astype(np.float32)
    projector = heads.Projector(32, 8, use_bn=use_bn)
    shapes = jax.eval_shape(functools.partial(projector.init, train=False), jax.random.key(0), x)
    assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(np.shape, variables)
    out = projector.apply(variables, x, train=False)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    assert rel_err(out, expected) <= TOL


def test_encoder_outputs_features_and_unit_embeddings_in_float32():
    backbone = models.get_model("resnet18", num_classes=0, dtype="bfloat16", **TINY)
    encoder = heads.Encoder(backbone, proj_hidden=128, proj_dim=16, proj_bn=True)
    x = images(3, 32)
    variables = random_variables(encoder, x)
    assert sorted(variables["params"]) == ["backbone", "projector"]
    assert sorted(variables["params"]["projector"]) == ["bn", "hidden", "out"]
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {np.dtype(np.float32)}
    out = jax.jit(functools.partial(encoder.apply, train=False))(variables, x)
    assert out["features"].dtype == jnp.float32 and out["embedding"].dtype == jnp.float32
    assert out["features"].shape == (3, 128) and out["embedding"].shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=-1), 1.0, rtol=1e-5)
    backbone_only = backbone.apply(
        {
            "params": variables["params"]["backbone"],
            "batch_stats": variables["batch_stats"]["backbone"],
        },
        x,
        train=False,
    )
    assert rel_err(out["features"], np.asarray(backbone_only, np.float32)) < 2e-2  # bf16 rounding


def test_encoder_without_projector_embeds_normalised_features():
    encoder = heads.Encoder(models.get_model("resnet18", num_classes=0, **TINY))
    x = images(2, 32)
    out = encoder.apply(random_variables(encoder, x), x, train=False)
    features = np.asarray(out["features"])
    np.testing.assert_allclose(
        out["embedding"], features / np.linalg.norm(features, axis=-1, keepdims=True), rtol=1e-5
    )


def test_encoder_requires_a_feature_backbone():
    encoder = heads.Encoder(models.get_model("resnet18", num_classes=10, **TINY), 16, 8)
    with pytest.raises(ValueError, match="num_classes=0"):
        jax.eval_shape(
            functools.partial(encoder.init, train=False), jax.random.key(0), images(1, 32)
        )


# ---------------------------------------------------------------- encoder checkpoints


def make_spec(**projector):
    return {
        "arch": "resnet18",
        "overrides": dict(TINY),
        "projector": projector or None,
        "source": "test",
    }


def test_save_and_load_round_trip(tmp_path):
    spec = make_spec(hidden=64, dim=16, bn=True)
    encoder = heads.build_encoder(spec)
    x = images(2, 32)
    variables = random_variables(encoder, x)
    io.save_encoder(tmp_path / "enc", spec, variables)
    assert json.loads((tmp_path / "enc" / "spec.json").read_text()) == spec
    loaded_spec, loaded = io.load_encoder(tmp_path / "enc")
    assert loaded_spec == spec
    assert jax.tree.structure(loaded) == jax.tree.structure(variables)
    for got, want in zip(jax.tree.leaves(loaded), jax.tree.leaves(variables)):
        assert isinstance(got, np.ndarray) and got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
    apply = functools.partial(encoder.apply, train=False)
    np.testing.assert_array_equal(apply(loaded, x)["embedding"], apply(variables, x)["embedding"])

    # Saving again overwrites (pre-training re-exports to the same directory).
    changed = jax.tree.map(lambda a: a + 1, variables)
    io.save_encoder(tmp_path / "enc", spec, changed)
    np.testing.assert_array_equal(
        io.load_encoder(tmp_path / "enc")[1]["params"]["projector"]["out"]["bias"],
        changed["params"]["projector"]["out"]["bias"],
    )


def test_backbone_only_checkpoint_with_classifier(tmp_path):
    # An imported supervised model keeps its classifier; build_encoder ignores it.
    spec = {
        "arch": "alexnet",
        "overrides": {"num_classes": 10, "cifar_stem": True, "use_bn": False},
        "projector": None,
        "source": "test",
    }
    classifier = models.get_model("alexnet", **spec["overrides"])
    x = images(2, 32)
    variables = {"params": {"backbone": random_variables(classifier, x)["params"]}}
    io.save_encoder(tmp_path / "enc", spec, variables)
    loaded_spec, loaded = io.load_encoder(tmp_path / "enc")
    assert loaded["batch_stats"] == {} and "classifier_6" in loaded["params"]["backbone"]
    out = heads.build_encoder(loaded_spec).apply(loaded, x, train=False)
    expected = models.get_model("alexnet", **{**spec["overrides"], "num_classes": 0}).apply(
        {"params": loaded["params"]["backbone"]}, x, train=False
    )
    np.testing.assert_allclose(out["features"], expected, rtol=1e-6)


def test_load_missing_or_malformed_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="rekd_jax.tools.import_torch"):
        io.load_encoder(tmp_path / "nothing")
    spec = make_spec()
    encoder = heads.build_encoder(spec)
    io.save_encoder(tmp_path / "enc", spec, random_variables(encoder, images(1, 32)))
    (tmp_path / "enc" / "spec.json").write_text(json.dumps({"arch": "resnet18"}))
    with pytest.raises(ValueError, match=r"Malformed.*lacks.*main.py"):
        io.load_encoder(tmp_path / "enc")


def test_save_rejects_variables_that_do_not_fit_the_spec(tmp_path):
    variables = random_variables(heads.build_encoder(make_spec()), images(1, 32))
    with pytest.raises(ValueError, match=r"do not fit.*missing \['params/projector"):
        io.save_encoder(tmp_path / "enc", make_spec(hidden=64, dim=16, bn=False), variables)
    with pytest.raises(ValueError, match="JSON-able"):
        io.save_encoder(
            tmp_path / "enc", {**make_spec(), "overrides": {"dtype": jnp.bfloat16}}, variables
        )


@pytest.mark.parametrize(
    "name", ["alexnet", "resnet18", "mobilenetv3_small", "shufflenetv2_x0_5", "efficientnet_b0"]
)
def test_nchw_input_is_refused_with_the_fix(name):
    model = models.get_model(name, num_classes=0)
    with pytest.raises(ValueError, match=r"expects NHWC RGB images.*transpose\(0, 2, 3, 1\)"):
        jax.eval_shape(
            functools.partial(model.init, train=False), jax.random.key(0), jnp.zeros((1, 3, 32, 32))
        )
