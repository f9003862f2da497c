"""Helpers for the tests that compare our models with PyTorch (a plain module on sys.path via
tests/conftest.py's folder, not a conftest)."""
import numpy as np
import torch
from torch import nn as tnn

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
