"""Config variants: one mechanism (rekd_jax.variants) with the same rules in pre-training and
evaluation, and every combination the docs list loads and validates (the smoke ones run). The
config files are thin: every recipe and variant lives in rekd_jax.recipes."""

import ast
import glob
import importlib
import os
import re

import jax
import jax.numpy as jnp
import pytest

from rekd_jax import cli_help, variants
from rekd_jax.evaluation import config as eval_config
from rekd_jax.models import heads, io
from rekd_jax.training import config as train_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    os.path.basename(p)[:-3]
    for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
    if not os.path.basename(p).startswith("_")
)


def _load(name):
    return importlib.import_module(f"configs.{name}")


# What a config file may import: the recipes, the variant mechanism, functools.partial.
THIN_IMPORTS = ("rekd_jax.recipes", "rekd_jax.variants", "functools")


def _thickness(name):
    """What makes a config file more than a docstring plus a get_config calling the recipes:
    a definition other than VARIANTS / get_config, a get_config of more than one return
    statement, an import from outside the recipes."""
    path = os.path.join(REPO, "configs", f"{name}.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = []
    for index, node in enumerate(tree.body):
        if isinstance(node, ast.Expr) and index == 0:
            continue  # the docstring
        if isinstance(node, ast.Import | ast.ImportFrom):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            else:
                modules = [f"{node.module}.{a.name}" for a in node.names]
            if not all(m.startswith(THIN_IMPORTS) for m in modules):
                found.append(f"line {node.lineno}: imports {modules}")
        elif isinstance(node, ast.FunctionDef) and node.name == "get_config":
            if len(node.body) != 1 or not isinstance(node.body[0], ast.Return):
                found.append(f"line {node.lineno}: get_config does more than call a recipe")
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            if not set(names) <= {"VARIANTS", "get_config"}:
                found.append(f"line {node.lineno}: defines {names}")
        else:
            found.append(f"line {node.lineno}: {type(node).__name__}")
    return found


@pytest.mark.parametrize("name", CONFIGS)
def test_config_files_are_thin(name):
    assert _thickness(name) == [], f"configs/{name}.py: move these into rekd_jax.recipes"
    assert "get_config" in vars(_load(name))


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """A tiny ResNet-18 and a tiny AlexNet encoder checkpoint."""
    root = tmp_path_factory.mktemp("variants")
    out = {}
    for arch, overrides in (("resnet18", {"width_multiplier": 0.125}), ("alexnet", {})):
        spec = {
            "arch": arch,
            "overrides": {"cifar_stem": True, "num_classes": 0, **overrides},
            "projector": {"hidden": 32, "dim": 16, "bn": False},
            "source": "test step 3",
        }
        encoder = heads.build_encoder(spec)
        variables = encoder.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
        io.save_encoder(str(root / arch), spec, variables)
        out[arch] = str(root / arch)
    return out


def _validate(config, encoders):
    """Validates a config the way app.run does, after pointing it at real encoders."""
    if config.mode == "pretrain":
        if (
            config.method in ("seed", "rekd")
            and config.rekd.teacher == "offline"
            or config.method == "seed"
        ):
            config.teacher.checkpoint = encoders["resnet18"]
        train_config.validate(config)
    elif config.mode in ("quickstart", "quickstart_grid"):
        train_config.validate(config)
    else:  # an evaluation protocol
        config.checkpoint = encoders["alexnet" if config.mode == "conv_probe" else "resnet18"]
        eval_config.validate(config)


def _documented_combinations():
    """Every `configs/NAME.py:VARIANTS` written in the configs, README.md, docs and --help."""
    texts = [
        open(p, encoding="utf-8").read()
        for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
        + [os.path.join(REPO, "README.md")]
        + glob.glob(os.path.join(REPO, "docs", "*.md"))
    ]
    texts.append(cli_help.help_text())
    found = set()
    for text in texts:
        found.update(re.findall(r"configs/([a-z0-9_]+)\.py:([a-z0-9_,]+)", text))
    return sorted(found)


def test_docs_list_combinations():
    assert ("semi_supervised", "tiny,runlocal") in _documented_combinations()


@pytest.mark.parametrize("name, arg", _documented_combinations())
def test_every_documented_combination_loads_and_validates(name, arg, encoders):
    _validate(_load(name).get_config(arg), encoders)


@pytest.mark.parametrize("name", [n for n in CONFIGS if hasattr(_load(n), "VARIANTS")])
def test_every_variant_alone_and_as_a_smoke_run_validates(name, encoders):
    module = _load(name)
    prefix = "alexnet," if name == "cifar10_student" else ""
    smoke_run = "tiny,runlocal" if "runlocal" in module.VARIANTS else "tiny"
    for variant in module.VARIANTS:
        _validate(module.get_config(prefix + variant), encoders)
        smoke = module.get_config(prefix + f"{variant},{smoke_run}")
        data = smoke.data if "data" in smoke else smoke.evaluation.data  # the quick start's
        assert data.dataset == "rekd_shapes/tiny"
        _validate(smoke, encoders)


@pytest.mark.parametrize("name", ["cifar10_teacher", "linear_eval", "knn_eval"])
def test_runlocal_keeps_the_dataset_and_applies_last(name):
    module = _load(name)
    for dataset in ("cifar10", "imagenet", "shapes"):
        if dataset not in module.VARIANTS:
            continue
        a = module.get_config(f"runlocal,{dataset}")
        b = module.get_config(f"{dataset},runlocal")
        assert a.to_dict() == b.to_dict()
        assert a.data.dataset == variants.DATASETS[dataset]["dataset"]
    assert module.get_config("runlocal").data.dataset == module.get_config().data.dataset


def test_pretraining_and_evaluation_share_the_rules():
    teacher = _load("cifar10_teacher")
    assert teacher.get_config("runlocal").data.dataset == "cifar10"  # not the toy data
    assert teacher.get_config("runlocal").num_train_steps == 8
    assert teacher.get_config("tiny").data.dataset == "rekd_shapes/tiny"
    assert teacher.get_config("tiny").num_train_steps == 0  # not shrunk
    linear = _load("linear_eval")
    assert linear.get_config("runlocal").data.dataset == "imagenet2012"
    assert linear.get_config("runlocal").data.image_size == 32
    assert linear.get_config("tiny").linear.epochs == 100  # not shrunk
    with pytest.raises(ValueError, match=r"unknown variant 'toy'.*runlocal"):
        teacher.get_config("toy,runlocal")
    with pytest.raises(ValueError, match=r"unknown variant 'toy'.*pct10"):
        linear.get_config("toy")


def test_a_repeated_variant_applies_once_at_its_last_place():
    assert variants.order(["tiny", "runlocal", "shapes", "tiny"]) == ["shapes", "tiny", "runlocal"]
    teacher = _load("cifar10_teacher")
    assert teacher.get_config("tiny,shapes,tiny").data.dataset == "rekd_shapes/tiny"
    assert teacher.get_config("shapes,tiny,shapes").data.dataset == "rekd_shapes"
    quickstart = _load("quickstart")
    assert quickstart.get_config("x4,x4").to_dict() == quickstart.get_config("x4").to_dict()


@pytest.mark.parametrize(
    "name, arch",
    [
        ("alexnet", "alexnet"),
        ("resnet18", "resnet18"),
        ("efficientnet_b0", "efficientnet_b0"),
        ("mobilenetv3_large", "mobilenetv3_large"),
        ("shufflenetv2", "shufflenetv2_x1_0"),
    ],
)
def test_the_imagenet_students_share_one_builder_and_differ_only_in_the_arch(name, arch):
    config = _load(name).get_config("offline")
    assert config.student.arch == arch
    assert config.rekd.teacher == "offline"
    config.student.arch = "alexnet"
    assert config.to_dict() == _load("alexnet").get_config("offline").to_dict()
    with pytest.raises(ValueError, match=rf"configs/{name}\.py: unknown variant 'toy'"):
        _load(name).get_config("toy")


@pytest.mark.parametrize("arg", ["tiny,runlocal,pct10", "runlocal,pct1,tiny"])
def test_semi_supervised_smoke_runs_at_1_and_10_percent(arg, encoders, tmp_path):
    """semi_supervised.py:runlocal,pct10 used to stop at batch 32 > 20 labelled images."""
    from rekd_jax import app

    config = _load("semi_supervised").get_config(arg)
    config.checkpoint = encoders["resnet18"]
    config.data.data_dir = str(tmp_path / "data")
    config.semi_supervised.epochs = 1
    config.semi_supervised.milestones = ()
    config.tensorboard = "off"
    result = app.run(config, str(tmp_path / "w"))
    assert result["labelled_examples"] == (20 if "pct10" in arg else 10)
    assert result["count"] == 100
