"""Sine positional encoding of a feature map (DETR form, normalised coordinates, no padding mask)."""
from __future__ import annotations

import math

import torch


def sine_position_encoding(
    batch: int, height: int, width: int, num_pos_feats: int, device: torch.device,
    temperature: float = 10000.0, scale: float = 2 * math.pi,
) -> torch.Tensor:
    """Return [B, 2*num_pos_feats, H, W]: y features then x features, sin/cos interleaved.

    Coordinates are the 1-based pixel index divided by the extent (as the official code, which
    never passes a padding mask), times ``scale``.
    """
    eps = 1e-6
    y_embed = torch.arange(1, height + 1, dtype=torch.float32, device=device)
    x_embed = torch.arange(1, width + 1, dtype=torch.float32, device=device)
    y_embed = y_embed / (y_embed[-1:] + eps) * scale
    x_embed = x_embed / (x_embed[-1:] + eps) * scale

    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)

    pos_x = x_embed[:, None] / dim_t  # [W, F]
    pos_y = y_embed[:, None] / dim_t  # [H, F]
    pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
    pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
    shape = (height, width, num_pos_feats)
    pos = torch.cat((pos_y[:, None, :].expand(shape), pos_x[None, :, :].expand(shape)), dim=2)
    return pos.permute(2, 0, 1).unsqueeze(0).expand(batch, -1, -1, -1)
