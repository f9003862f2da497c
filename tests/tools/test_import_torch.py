"""PyTorch -> encoder checkpoint import: formats, projector parity, errors and the CLI."""

import copy
import functools

import jax
import numpy as np
import pytest
from torch_parity import TOL, images, randomize_bn, rel_err, tnn, torch, torch_apply

from rekd_jax.models import heads, io
from rekd_jax.tools import import_torch

F = torch.nn.functional
torchvision = pytest.importorskip("torchvision")


def check_encoder_parity(spec, variables, torch_backbone, torch_head, x):
    """Encoder features/embedding against torch backbone (fc removed) and normalize(head)."""
    out = jax.jit(functools.partial(heads.build_encoder(spec).apply, train=False))(variables, x)
    features = torch_apply(torch_backbone, x)
    with torch.no_grad():
        embedding = F.normalize(torch_head(torch.from_numpy(features)), dim=1).numpy()
    assert rel_err(out["features"], features) <= TOL
    assert rel_err(out["embedding"], embedding) <= TOL


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    model = randomize_bn(torchvision.models.resnet18(weights=None), seed=1)
    model.fc = tnn.Identity()
    return model


def moco_checkpoint(backbone: tnn.Module, head: tnn.Module) -> dict:
    """The layout of MoCo's main_moco.py checkpoints (DataParallel 'module.' prefix)."""
    encoder = copy.deepcopy(backbone)
    encoder.fc = head
    state = {}
    for prefix in ("module.encoder_q.", "module.encoder_k."):
        state.update({prefix + k: v for k, v in encoder.state_dict().items()})
    state["module.queue"] = torch.randn(128, 64)
    state["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return {
        "epoch": 200,
        "arch": "resnet18",
        "state_dict": state,
        "optimizer": {"state": {}, "param_groups": []},
    }


def test_mocov2_checkpoint_gives_backbone_and_mlp_projector(resnet18):
    torch.manual_seed(2)
    head = tnn.Sequential(tnn.Linear(512, 512), tnn.ReLU(), tnn.Linear(512, 128)).eval()
    checkpoint = moco_checkpoint(resnet18, head)
    assert import_torch.detect_format(import_torch.unwrap(checkpoint)) == "mocov2"
    spec, variables = import_torch.convert_checkpoint(checkpoint, "resnet18")
    assert spec == {
        "arch": "resnet18",
        "overrides": {"num_classes": 0},
        "projector": {"hidden": 512, "dim": 128, "bn": False},
    }
    assert "fc" not in variables["params"]["backbone"]
    check_encoder_parity(spec, variables, resnet18, head, images(2, 64))


def test_mocov1_linear_head_is_dropped(resnet18):
    checkpoint = moco_checkpoint(resnet18, tnn.Linear(512, 128))
    spec, variables = import_torch.convert_checkpoint(checkpoint, "resnet18", fmt="mocov2")
    assert spec["projector"] is None and sorted(variables["params"]) == ["backbone"]


def test_swav_checkpoint_gives_projector_with_bn(resnet18):
    torch.manual_seed(3)
    head = randomize_bn(
        tnn.Sequential(tnn.Linear(512, 256), tnn.BatchNorm1d(256), tnn.ReLU(), tnn.Linear(256, 64)),
        seed=4,
    )
    state = {f"module.{k}": v for k, v in resnet18.state_dict().items()}
    state.update({f"module.projection_head.{k}": v for k, v in head.state_dict().items()})
    state["module.prototypes.weight"] = torch.randn(30, 64)
    checkpoint = {"epoch": 800, "state_dict": state}
    assert import_torch.detect_format(import_torch.unwrap(checkpoint)) == "swav"
    spec, variables = import_torch.convert_checkpoint(checkpoint, "resnet18")
    assert spec["projector"] == {"hidden": 256, "dim": 64, "bn": True}
    assert sorted(variables["batch_stats"]["projector"]["bn"]) == ["mean", "var"]
    check_encoder_parity(spec, variables, resnet18, head, images(2, 64, seed=1))


def test_torchvision_format_keeps_the_classifier_and_unwraps_model_key():
    torch.manual_seed(4)
    reference = torchvision.models.resnet18(weights=None, num_classes=7)
    checkpoint = {"model": {f"module.{k}": v for k, v in reference.state_dict().items()}}
    assert import_torch.detect_format(import_torch.unwrap(checkpoint)) == "torchvision"
    spec, variables = import_torch.convert_checkpoint(checkpoint, "resnet18")
    assert spec["overrides"] == {"num_classes": 7} and spec["projector"] is None
    np.testing.assert_array_equal(
        variables["params"]["backbone"]["fc"]["kernel"], reference.fc.weight.detach().numpy().T
    )
    np.testing.assert_array_equal(
        variables["params"]["backbone"]["layer2_0"]["downsample_0"]["kernel"],
        reference.layer2[0].downsample[0].weight.detach().numpy().transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        variables["batch_stats"]["backbone"]["bn1"]["var"], reference.bn1.running_var.numpy()
    )


def test_checkpoint_that_does_not_fit_lists_the_keys(resnet18):
    state = resnet18.state_dict()
    with pytest.raises(
        ValueError,
        match=(
            r"missing \['layer1\.2\.bn1\.bias', .*'layer1\.2\.conv1\.weight'\] "
            r"\(80 in all\).*Check --arch"
        ),
    ):
        import_torch.convert(state, "resnet34")
    with pytest.raises(ValueError, match=r"mis-shaped \['bn1\.bias: torch \(64,\), Flax \(32,\)'"):
        import_torch.convert(state, "resnet18", width_multiplier=0.5)
    with pytest.raises(ValueError, match=r"unexpected \['extra\.weight'\]"):
        import_torch.convert({**state, "extra.weight": torch.zeros(3)}, "resnet18")
    with pytest.raises(ValueError, match="Unknown model"):
        import_torch.convert(state, "resnet19")
    with pytest.raises(ValueError, match="encoder_q"):
        import_torch.convert(state, "resnet18", fmt="mocov2")


def test_cli_writes_a_checkpoint_that_load_encoder_reads(tmp_path, resnet18, capsys):
    torch.manual_seed(5)
    head = tnn.Sequential(tnn.Linear(512, 512), tnn.ReLU(), tnn.Linear(512, 128)).eval()
    source = tmp_path / "moco_v2.pth.tar"
    torch.save(moco_checkpoint(resnet18, head), source)
    import_torch.main(
        ["--arch", "resnet18", "--src", str(source), "--dst", str(tmp_path / "encoder")]
    )
    assert "Wrote encoder checkpoint" in capsys.readouterr().out
    spec, variables = io.load_encoder(tmp_path / "encoder")
    assert spec["source"] == f"import_torch:mocov2:{source}"
    assert spec["projector"] == {"hidden": 512, "dim": 128, "bn": False}
    check_encoder_parity(spec, variables, resnet18, head, images(2, 64, seed=2))

    # A CIFAR ResNet (plain state_dict with its classifier) through a --override.
    cifar = torchvision.models.resnet18(weights=None, num_classes=10)
    cifar.conv1 = tnn.Conv2d(3, 64, 3, 1, 1, bias=False)
    torch.save(cifar.state_dict(), tmp_path / "cifar.pth")
    import_torch.main(
        [
            "--arch",
            "resnet18",
            "--src",
            str(tmp_path / "cifar.pth"),
            "--dst",
            str(tmp_path / "cifar"),
            "--format",
            "torchvision",
            "--override",
            "cifar_stem=true",
        ]
    )
    spec, variables = io.load_encoder(tmp_path / "cifar")
    assert spec["overrides"] == {"cifar_stem": True, "num_classes": 10}
    assert variables["params"]["backbone"]["conv1"]["kernel"].shape == (3, 3, 3, 64)


def test_cli_errors_are_clear(tmp_path, capsys):
    code = import_torch.main(
        [
            "--arch",
            "resnet18",
            "--src",
            str(tmp_path / "missing.pth"),
            "--dst",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2
    assert (
        capsys.readouterr().err.strip()
        == f"FATAL: FileNotFoundError: No PyTorch checkpoint at {tmp_path / 'missing.pth'}."
    )
    with pytest.raises(FileNotFoundError, match="No PyTorch checkpoint"):  # --debug: the traceback
        import_torch.main(
            [
                "--arch",
                "resnet18",
                "--src",
                str(tmp_path / "missing.pth"),
                "--dst",
                str(tmp_path / "out"),
                "--debug",
            ]
        )
    with pytest.raises(SystemExit):
        import_torch.main(["--arch", "resnet18", "--src", "x", "--dst", "y", "--format", "simclr"])


def test_converted_arrays_do_not_alias_torch_memory(resnet18):
    """Torch updates BN running stats in place; the converted variables must not follow."""
    model = copy.deepcopy(resnet18)
    variables = import_torch.convert(model.state_dict(), "resnet18", num_classes=0)
    before = np.array(variables["batch_stats"]["backbone"]["bn1"]["mean"])
    model.bn1.running_mean.add_(1.0)
    np.testing.assert_array_equal(variables["batch_stats"]["backbone"]["bn1"]["mean"], before)
