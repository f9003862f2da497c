"""AlexNet conv-layer probe features: about 9k per layer at 224, values are the pooled maps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rekd_jax.evaluation import conv_probe
from rekd_jax.models import get_model
from rekd_jax.readout import features

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")


def test_feature_counts_per_layer_at_224():
    model = get_model("alexnet", num_classes=0)
    variables = jax.eval_shape(
        lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
        jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32),
    )
    fn = conv_probe.conv_features(model, LAYERS, (12, 7, 5, 6, 6))
    dims = features.feature_dims(fn, variables, 224)
    assert dims == {
        "conv1": 64 * 12 * 12,
        "conv2": 192 * 7 * 7,
        "conv3": 384 * 5 * 5,
        "conv4": 256 * 6 * 6,
        "conv5": 256 * 6 * 6,
    }
    assert dims == {"conv1": 9216, "conv2": 9408, "conv3": 9600, "conv4": 9216, "conv5": 9216}


def test_pooled_values_are_bin_maxima_of_the_sown_maps():
    model = get_model("alexnet", num_classes=0, cifar_stem=True)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    out = conv_probe.conv_features(model, ("conv2", "conv5"), (5, 2))(variables, x)
    _, state = model.apply(variables, x, train=False, mutable=["intermediates"])
    conv2 = np.asarray(state["intermediates"]["conv2"][0])  # 15x15 map for 32x32 inputs
    conv5 = np.asarray(state["intermediates"]["conv5"][0])  # 7x7
    ref2 = conv2.reshape(2, 5, 3, 5, 3, -1).max(axis=(2, 4)).reshape(2, -1)
    # torch adaptive bins for 7 -> 2: [0, 4) and [3, 7) (they overlap)
    ref5 = np.stack(
        [
            np.stack(
                [conv5[:, r0:r1, c0:c1].max(axis=(1, 2)) for c0, c1 in ((0, 4), (3, 7))], axis=1
            )
            for r0, r1 in ((0, 4), (3, 7))
        ],
        axis=1,
    ).reshape(2, -1)
    np.testing.assert_allclose(np.asarray(out["conv2"]).reshape(2, -1), ref2, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out["conv5"]).reshape(2, -1), ref5, rtol=1e-6)
    assert out["conv2"].shape == (2, 5, 5, 192)  # NHWC: the head's BatchNorm2d is per channel


def test_layer_pool_size_mismatch_and_unknown_layer_are_refused():
    model = get_model("alexnet", num_classes=0, cifar_stem=True)
    with pytest.raises(ValueError, match="same length"):
        conv_probe.conv_features(model, ("conv1", "conv2"), (12,))
    x = jnp.zeros((1, 32, 32, 3))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    with pytest.raises(ValueError, match="does not sow 'conv6'"):
        conv_probe.conv_features(model, ("conv6",), (2,))(variables, x)
