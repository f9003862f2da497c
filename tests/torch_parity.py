"""Helpers for the model tests, most of them comparing with PyTorch (a plain module on sys.path
via tests/conftest.py's folder, not a conftest)."""

import functools

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")  # requirements-dev.txt; skipped without PyTorch
tnn = torch.nn

TOL = 1e-4


def rel_err(actual, expected) -> float:
    """max|a - b| / max|b|."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def randomize_bn(module: tnn.Module, seed: int) -> tnn.Module:
    """Non-default BatchNorm affine parameters and running statistics; returns it in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (tnn.BatchNorm1d, tnn.BatchNorm2d)):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=generator) + 0.5
            m.bias.data = torch.randn(n, generator=generator) * 0.1
            m.running_mean.data = torch.randn(n, generator=generator) * 0.1
            m.running_var.data = torch.rand(n, generator=generator) + 0.5
    return module.eval()


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randn(n, size, size, 3).astype(np.float32)


def torch_apply(module: tnn.Module, x_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2))).numpy()


def random_variables(module, *inputs, seed: int = 0):
    """Variables with the module's shapes filled by numpy (Flax init compiles slowly on CPU):
    He-scaled kernels, positive BN scales and variances, small biases and means."""
    shapes = jax.eval_shape(functools.partial(module.init, train=False), jax.random.key(0), *inputs)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name, shape = path[-1].key, leaf.shape
        if name == "kernel":
            return (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[:-1]))).astype(
                np.float32
            )
        if name in ("scale", "var"):
            return rng.uniform(0.5, 1.5, shape).astype(np.float32)
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)
