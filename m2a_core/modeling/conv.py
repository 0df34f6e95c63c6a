"""A convolution that owns its normalisation, named as detectron2 names it (``conv.weight``, ``conv.norm.*``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NormedConv2d(nn.Conv2d):
    """``Conv2d`` followed by an optional ``norm`` child module and an optional ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        bias: bool = False,
        norm: nn.Module | None = None,
        relu: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias)
        self.norm = norm
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.relu else x
