"""ResNet backbone in detectron2's layout, with frozen BatchNorm.

Parameter names follow detectron2 (``stem.conv1``, ``res2.0.conv1.norm``, ``shortcut``) so the official
checkpoint maps onto it by prefix alone. Depth 50 uses bottleneck blocks (stride in the 3x3 conv, as
torchvision-style weights expect); depths 18 and 34 use basic blocks for compact variants.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from m2a_core.modeling.conv import NormedConv2d

# Blocks per stage (res2..res5) for each supported depth.
STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}
STEM_CHANNELS = 64


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters: y = (x - mean) / sqrt(var + eps) * w + b.

    Everything is a buffer, so no optimiser ever updates it and ``model.train()`` never switches it to
    batch statistics: the backbone behaves identically in training and inference, as in the official model.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, relu: bool = False) -> NormedConv2d:
    """Bias-free convolution + frozen BatchNorm (+ ReLU), detectron2's ``Conv2d(norm=BN)``."""
    return NormedConv2d(in_ch, out_ch, kernel, stride=stride, norm=FrozenBatchNorm2d(out_ch), relu=relu)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, bottleneck_ch: int, stride: int) -> None:
        super().__init__()
        out_ch = bottleneck_ch * self.expansion
        self.conv1 = conv_bn(in_ch, out_ch, 3, stride, relu=True)
        self.conv2 = conv_bn(out_ch, out_ch, 3)
        self.shortcut = conv_bn(in_ch, out_ch, 1, stride) if (stride != 1 or in_ch != out_ch) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


class BottleneckBlock(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, bottleneck_ch: int, stride: int) -> None:
        super().__init__()
        out_ch = bottleneck_ch * self.expansion
        self.conv1 = conv_bn(in_ch, bottleneck_ch, 1, relu=True)
        self.conv2 = conv_bn(bottleneck_ch, bottleneck_ch, 3, stride, relu=True)
        self.conv3 = conv_bn(bottleneck_ch, out_ch, 1)
        self.shortcut = conv_bn(in_ch, out_ch, 1, stride) if (stride != 1 or in_ch != out_ch) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.conv2(self.conv1(x)))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


class Stem(nn.Module):
    """7x7/2 convolution + frozen BN + ReLU + 3x3/2 max-pool: stride 4."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = conv_bn(3, STEM_CHANNELS, 7, stride=2, relu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class ResNet(nn.Module):
    """Returns ``{"res2": stride 4, "res3": 8, "res4": 16, "res5": 32}`` feature maps."""

    def __init__(self, depth: int = 50) -> None:
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ValueError(f"ResNet depth must be one of {sorted(STAGE_BLOCKS)}, got {depth}")
        block = BottleneckBlock if depth >= 50 else BasicBlock
        self.stem = Stem()
        in_ch = STEM_CHANNELS
        self.out_channels: dict[str, int] = {}
        for index, num_blocks in enumerate(STAGE_BLOCKS[depth]):
            name = f"res{index + 2}"
            bottleneck_ch = STEM_CHANNELS * 2**index
            blocks = []
            for block_index in range(num_blocks):
                stride = 2 if (block_index == 0 and index > 0) else 1
                blocks.append(block(in_ch, bottleneck_ch, stride))
                in_ch = bottleneck_ch * block.expansion
            self.add_module(name, nn.Sequential(*blocks))
            self.out_channels[name] = in_ch

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = {}
        x = self.stem(x)
        for name in ("res2", "res3", "res4", "res5"):
            x = getattr(self, name)(x)
            features[name] = x
        return features
