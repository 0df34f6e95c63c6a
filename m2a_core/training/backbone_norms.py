"""Trainable backbone BatchNorm for training from scratch, and back to the model's frozen layout.

The model's backbone always uses ``FrozenBatchNorm2d`` (as the official model: pretrained statistics, never
updated). A backbone trained from scratch needs real BatchNorm, or its activations are never normalised and it
learns slowly. Both layers hold the same four tensors under the same names (weight, bias, running_mean,
running_var), so training swaps the frozen layers for ``nn.BatchNorm2d`` initialised with their values, and the
exported weights swap them back: the saved file loads into the inference model unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

from m2a_core.modeling.backbone import FrozenBatchNorm2d


def _swap(module: nn.Module, convert) -> int:
    count = 0
    for name, child in module.named_children():
        replacement = convert(child)
        if replacement is not None:
            setattr(module, name, replacement)
            count += 1
        else:
            count += _swap(child, convert)
    return count


def thaw_batch_norms(module: nn.Module) -> int:
    """Replace every FrozenBatchNorm2d under ``module`` by a trainable BatchNorm2d with the same values."""

    def convert(child: nn.Module) -> nn.Module | None:
        if not isinstance(child, FrozenBatchNorm2d):
            return None
        norm = nn.BatchNorm2d(child.weight.shape[0], eps=child.eps).to(child.weight.device)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(norm, name).copy_(getattr(child, name))
        return norm.train(child.training)  # a new module starts in training mode; keep the model's mode

    return _swap(module, convert)


def freeze_batch_norms(module: nn.Module) -> int:
    """Replace every BatchNorm2d under ``module`` by a FrozenBatchNorm2d holding its learned values."""

    def convert(child: nn.Module) -> nn.Module | None:
        if not isinstance(child, nn.BatchNorm2d):
            return None
        frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps).to(child.weight.device)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, name).copy_(getattr(child, name).detach())
        return frozen.train(child.training)

    return _swap(module, convert)
