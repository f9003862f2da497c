"""evaluate() end to end on a tiny saved encoder and rekd_shapes/tiny (200 train / 100 test):
results JSON, values recomputed from the cached features, resume, validation messages."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rekd_jax.core.checkpoint import Checkpointer
from rekd_jax.data import pipeline
from rekd_jax.evaluation import config as eval_config
from rekd_jax.evaluation import linear, run, semi_supervised
from rekd_jax.models import heads, io
from rekd_jax.recipes import evaluation as eval_recipes
from rekd_jax.variants import apply_variants


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """(encoder directory, data_dir) shared by the tests of this module."""
    root = tmp_path_factory.mktemp("eval_e2e")
    spec = {
        "arch": "resnet18",
        "overrides": {"cifar_stem": True, "width_multiplier": 0.125, "num_classes": 0},
        "projector": {"hidden": 32, "dim": 16, "bn": False},
        "source": "test",
    }
    encoder = heads.build_encoder(spec)
    variables = encoder.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
    io.save_encoder(str(root / "encoder"), spec, variables)
    return str(root / "encoder"), str(root / "data")


def tiny_config(assets, mode):
    checkpoint, data_dir = assets
    config = apply_variants(
        eval_config.default_eval_config(), "tiny,runlocal", eval_recipes.VARIANTS, "test"
    )
    config.mode = mode
    config.checkpoint = checkpoint
    config.data.data_dir = data_dir
    config.tensorboard = "off"
    return config


def read_results(workdir, mode):
    with open(os.path.join(workdir, f"results_{mode}.json")) as f:
        return json.load(f)


def brute_force_knn_top1(train, train_y, test, test_y, num_classes, k, tau):
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    sims = test @ train.T
    correct = 0
    for row, label in zip(sims, test_y):
        top = np.argsort(-row, kind="stable")[:k]
        scores = np.zeros(num_classes)
        np.add.at(scores, train_y[top], np.exp(row[top] / tau))
        correct += int(np.argmax(scores) == label)
    return 100.0 * correct / len(test_y)


def test_knn_end_to_end(assets, tmp_path):
    config = tiny_config(assets, "knn")
    config.knn.k = 20
    result = run.evaluate(config, str(tmp_path))
    saved = read_results(str(tmp_path), "knn")
    assert saved["count"] == 100 and result["count"] == 100  # the whole test split
    assert saved["train_examples"] == 200
    train = np.load(tmp_path / "features" / "pooled_train.npz")
    test = np.load(tmp_path / "features" / "pooled_test.npz")
    assert train["features"].shape == (200, 64) and test["features"].shape == (100, 64)
    expected = brute_force_knn_top1(
        train["features"], train["label"], test["features"], test["label"], 10, 20, 0.1
    )
    assert saved["top1"] == pytest.approx(expected, abs=1e-6)
    # The cached features are what a fresh extraction gives: labels in split order.
    meta = pipeline.split_metadata(config.data, "test")
    np.testing.assert_array_equal(test["label"], meta["labels"])


def probe_params(workdir, block, feature_dim=64, num_classes=10):
    """The probe params of the latest checkpoint in WORKDIR/ckpt_linear."""
    target = linear.init_state(
        linear.init_heads(jax.random.PRNGKey(0), {"features": feature_dim}, num_classes),
        linear.sgd(block, 1),
    )
    ckpt = Checkpointer(os.path.join(workdir, "ckpt_linear"), async_save=False)
    state, extra = ckpt.restore(jax.device_get(target))
    ckpt.close()
    return state.params, extra


def test_linear_fast_end_to_end_matches_cached_features_and_resumes(assets, tmp_path):
    config = tiny_config(assets, "linear")
    config.linear.fast = True
    config.linear.learning_rate = 0.05
    workdir = str(tmp_path / "run")
    run.evaluate(config, workdir)
    saved = read_results(workdir, "linear")
    assert saved["count"] == 100 and saved["fast"] is True and saved["epochs"] == 2
    params, extra = probe_params(workdir, config.linear)
    assert extra["epoch"] == 2
    val = np.load(os.path.join(workdir, "features", "pooled_test.npz"))
    logits = val["features"] @ params["features"]["kernel"] + params["features"]["bias"]
    top = np.argsort(-logits, axis=1, kind="stable")
    assert saved["top1"] == pytest.approx(100 * np.mean(top[:, 0] == val["label"]))
    assert saved["top5"] == pytest.approx(
        100 * np.mean((top[:, :5] == val["label"][:, None]).any(axis=1))
    )

    # Simulate a job killed after epoch 1: drop checkpoint 2; the rerun resumes from epoch 1
    # and ends with exactly the same probe.
    shutil.rmtree(os.path.join(workdir, "ckpt_linear", "2"))
    run.evaluate(config, workdir)
    resumed, extra = probe_params(workdir, config.linear)
    assert extra["epoch"] == 2
    np.testing.assert_allclose(
        resumed["features"]["kernel"], params["features"]["kernel"], rtol=1e-6, atol=1e-7
    )
    assert read_results(workdir, "linear")["top1"] == saved["top1"]

    # A rerun with other settings does not silently continue that checkpoint.
    config.linear.learning_rate = 0.5
    with pytest.raises(ValueError, match="linear.learning_rate: saved 0.05, now 0.5"):
        run.evaluate(config, workdir)


def test_linear_with_augmentation_end_to_end(assets, tmp_path):
    config = tiny_config(assets, "linear")
    config.linear.epochs = 1
    config.linear.milestones = ()
    config.linear.learning_rate = 0.05
    config.data.resident = "off"  # host mode: uint8 images in every batch (knn/fast: resident)
    result = run.evaluate(config, str(tmp_path))
    saved = read_results(str(tmp_path), "linear")
    assert saved["count"] == 100 and saved["fast"] is False
    assert saved["top1"] == result["top1"] and 0 <= saved["top1"] <= saved["top5"] <= 100
    with open(tmp_path / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    losses = [r["linear/train_loss"] for r in records if "linear/train_loss" in r]
    assert len(losses) == 1 and np.isfinite(losses[0]) and losses[0] > 0


def test_semi_supervised_subsets_are_class_balanced_and_seeded(assets, tmp_path):
    config = tiny_config(assets, "semi_supervised")
    labels = pipeline.split_metadata(config.data, "train")["labels"]
    block = config.semi_supervised
    block.fraction = 0.1
    first = semi_supervised.select_subset(config.data, block, seed=0)
    again = semi_supervised.select_subset(config.data, block, seed=0)
    other = semi_supervised.select_subset(config.data, block, seed=1)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    per_class = np.bincount(labels[first], minlength=10)
    expected = [max(1, round(0.1 * n)) for n in np.bincount(labels, minlength=10)]
    np.testing.assert_array_equal(per_class, expected)
    # A subset file (one file name per line) selects exactly the listed images.
    names = pipeline.split_metadata(config.data, "train")["file_names"]
    chosen = [7, 3, 150]
    listing = tmp_path / "subset.txt"
    listing.write_text("\n".join(names[i] for i in chosen) + "\n")
    block.subset_file = str(listing)
    np.testing.assert_array_equal(
        semi_supervised.select_subset(config.data, block, seed=0), sorted(chosen)
    )


def test_validation_names_the_field_and_the_fix(assets, tmp_path):
    config = tiny_config(assets, "linear")
    config.checkpoint = ""
    with pytest.raises(ValueError, match="config.checkpoint.*import_torch"):
        eval_config.validate(config)
    config.checkpoint = str(tmp_path / "nothing")
    with pytest.raises(ValueError, match="no encoder checkpoint there.*main.py"):
        eval_config.validate(config)
    config = tiny_config(assets, "conv_probe")
    with pytest.raises(ValueError, match="holds a 'resnet18' encoder"):
        eval_config.validate(config)
    config = tiny_config(assets, "linear")
    config.linear.schedule = "poly"
    with pytest.raises(ValueError, match=r"config.linear.schedule='poly'"):
        eval_config.validate(config)
    config = tiny_config(assets, "linear")
    config.linear.milestones = (5,)
    with pytest.raises(ValueError, match="config.linear.milestones"):
        eval_config.validate(config)
    config = tiny_config(assets, "semi_supervised")
    config.semi_supervised.fraction = 0.0
    with pytest.raises(ValueError, match="config.semi_supervised.fraction"):
        eval_config.validate(config)
    config = tiny_config(assets, "knn")
    config.mode = "lineaer"
    with pytest.raises(ValueError, match="config.mode='lineaer'"):
        eval_config.validate(config)
    with pytest.raises(ValueError, match="unknown variant 'imagenet2'"):
        apply_variants(
            eval_config.default_eval_config(), "imagenet2", eval_recipes.VARIANTS, "x.py"
        )


def test_eval_configs_load_and_validate(assets):
    import importlib.util

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for name, mode in (
        ("linear_eval", "linear"),
        ("conv_probe", "conv_probe"),
        ("knn_eval", "knn"),
        ("semi_supervised", "semi_supervised"),
    ):
        spec = importlib.util.spec_from_file_location(
            f"eval_cfg_{name}", os.path.join(repo, "configs", f"{name}.py")
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for variant in (None, "cifar10", "runlocal"):
            config = module.get_config(variant)
            assert config.mode == mode
            config.checkpoint = assets[0]
            if mode != "conv_probe":
                eval_config.validate(config)
    assert module.get_config("imagenet,pct10").semi_supervised.fraction == 0.1


def test_conv_probe_fast_end_to_end(tmp_path_factory, assets):
    root = tmp_path_factory.mktemp("alexnet")
    spec = {
        "arch": "alexnet",
        "overrides": {"cifar_stem": True, "num_classes": 0},
        "projector": None,
        "source": "test",
    }
    variables = heads.build_encoder(spec).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False
    )
    io.save_encoder(str(root / "encoder"), spec, variables)
    config = tiny_config(assets, "conv_probe")
    config.checkpoint = str(root / "encoder")
    config.conv_probe.fast = True
    config.conv_probe.epochs = 1
    config.conv_probe.milestones = ()
    config.conv_probe.pool_sizes = (4, 3, 2, 2, 2)
    workdir = str(tmp_path_factory.mktemp("conv_run"))
    run.evaluate(config, workdir)
    saved = read_results(workdir, "conv_probe")
    assert saved["headline_layer"] == "conv5" and saved["top1"] == saved["layers"]["conv5"]["top1"]
    assert {k: v["features"] for k, v in saved["layers"].items()} == {
        "conv1": 64 * 16,
        "conv2": 192 * 9,
        "conv3": 384 * 4,
        "conv4": 256 * 4,
        "conv5": 256 * 4,
    }
    assert all(v["count"] == 100 for v in saved["layers"].values())
    cached = np.load(os.path.join(workdir, "features", "conv_probe_test.npz"))
    assert sorted(k for k in cached.files if k.startswith("conv")) == [
        "conv1",
        "conv2",
        "conv3",
        "conv4",
        "conv5",
    ]


def test_untrained_encoder_is_scored_from_an_init_checkpoint(assets, tmp_path):
    """checkpoint='init:ARCH:fields,seed=N' scores a random-init backbone (the baseline row):
    the features are those of model.init(PRNGKey(N)) (under jit: models.init_variables),
    deterministic per seed."""
    from rekd_jax import models
    from rekd_jax.models import get_model
    from rekd_jax.readout import features

    config = tiny_config(assets, "knn")
    config.checkpoint = "init:resnet18:cifar_stem=true,width_multiplier=0.125,seed=3"
    eval_config.validate(config)
    result = run.evaluate(config, str(tmp_path / "a"))
    assert result["count"] == 100 and result["arch"] == "resnet18"
    assert result["checkpoint"] == config.checkpoint
    cached = np.load(tmp_path / "a" / "features" / "pooled_test.npz")["features"]
    model = get_model("resnet18", cifar_stem=True, width_multiplier=0.125, num_classes=0)
    variables = models.init_variables(model, jax.random.PRNGKey(3), jnp.zeros((2, 32, 32, 3)))
    backbone = features.load_backbone(config.checkpoint)
    jax.tree.map(np.testing.assert_array_equal, backbone.variables, dict(variables))
    other = features.load_backbone("init:resnet18:cifar_stem=true,width_multiplier=0.125,seed=4")
    assert not np.array_equal(
        other.variables["params"]["conv1"]["kernel"],
        backbone.variables["params"]["conv1"]["kernel"],
    )
    assert cached.shape == (100, 64)
    # Rerunning re-uses the cache keyed on the init text; another seed is another cache key.
    again = run.evaluate(config, str(tmp_path / "a"))
    assert again["top1"] == result["top1"]


@pytest.mark.parametrize(
    "text,match",
    [
        ("init:resnet18:cifar_stem", "is not field=value"),
        ("init:resnet18:seed=abc", "seed must be an integer"),
        ("init:nosuchnet", "is not a model"),
    ],
)
def test_bad_init_checkpoints_name_the_syntax(assets, text, match):
    config = tiny_config(assets, "knn")
    config.checkpoint = text
    with pytest.raises(ValueError, match=match):
        eval_config.validate(config)


def test_knn_and_fast_linear_sharing_features_dir_extract_once(assets, tmp_path):
    shared = str(tmp_path / "features")
    knn_config = tiny_config(assets, "knn")
    knn_config.features_dir = shared
    run.evaluate(knn_config, str(tmp_path / "knn"))
    files = sorted(os.listdir(shared))
    assert files == ["pooled_test.npz", "pooled_train.npz"]
    stamps = {f: os.stat(os.path.join(shared, f)).st_mtime_ns for f in files}
    linear_config = tiny_config(assets, "linear")
    linear_config.linear.fast = True
    linear_config.features_dir = shared
    run.evaluate(linear_config, str(tmp_path / "linear"))
    assert {f: os.stat(os.path.join(shared, f)).st_mtime_ns for f in files} == stamps
    assert not os.path.exists(tmp_path / "linear" / "features")
    assert read_results(str(tmp_path / "linear"), "linear")["count"] == 100
