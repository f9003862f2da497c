"""Every architecture that torchvision also has: parameter count and logits equal torchvision's.

Independent of the per-family tests: plain torchvision modules (random weights, randomised BN
running statistics, eval mode), imported with `convert`, compared at 96x96 in float32.
"""

import jax
import numpy as np
import pytest

from rekd_jax.models import get_model
from rekd_jax.tools.import_torch import convert

torch = pytest.importorskip("torch")  # requirements-dev.txt; skipped without PyTorch
torchvision = pytest.importorskip("torchvision")

TORCHVISION_NAMES = {
    "alexnet": "alexnet",
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
    "resnet101": "resnet101",
    "resnet152": "resnet152",
    "mobilenetv3_large": "mobilenet_v3_large",
    "mobilenetv3_small": "mobilenet_v3_small",
    "shufflenetv2_x0_5": "shufflenet_v2_x0_5",
    "shufflenetv2_x1_0": "shufflenet_v2_x1_0",
    "shufflenetv2_x1_5": "shufflenet_v2_x1_5",
    "shufflenetv2_x2_0": "shufflenet_v2_x2_0",
    "efficientnet_b0": "efficientnet_b0",
}


def _torchvision_model(name):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = torch.rand(n, generator=generator) + 0.5
            module.bias.data = torch.randn(n, generator=generator) * 0.1
            module.running_mean.data = torch.randn(n, generator=generator) * 0.1
            module.running_var.data = torch.rand(n, generator=generator) + 0.5
    return model.eval()


@pytest.mark.parametrize("arch", sorted(TORCHVISION_NAMES))
def test_imported_model_equals_torchvision(arch):
    reference = _torchvision_model(TORCHVISION_NAMES[arch])
    overrides = {"use_bn": False} if arch == "alexnet" else {}
    converted = convert(reference.state_dict(), arch, **overrides)
    variables = {c: tree["backbone"] for c, tree in converted.items() if "backbone" in tree}
    assert sum(a.size for a in jax.tree_util.tree_leaves(variables["params"])) == sum(
        p.numel() for p in reference.parameters()
    )

    x = np.random.RandomState(0).randn(2, 96, 96, 3).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    model = get_model(arch, **overrides)
    logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
    assert np.abs(logits - expected).max() / np.abs(expected).max() <= 1e-4
