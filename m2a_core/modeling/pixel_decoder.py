"""Multi-scale deformable-attention pixel decoder (Mask2Former's ``MSDeformAttnPixelDecoder``).

res5, res4, res3 are projected to ``conv_dim`` channels and refined jointly by a deformable-attention
encoder (level 0 is the coarsest); an FPN step adds res2 to reach stride 4, where ``mask_features`` are
taken. The official code runs this module in fp32 even under autocast (deformable sampling is not
half-precision safe); ``forward`` does the same.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from m2a_core.modeling.conv import NormedConv2d
from m2a_core.modeling.ms_deform_attn import MSDeformAttn
from m2a_core.modeling.position_encoding import sine_position_encoding

ENCODER_FEATURES = ("res3", "res4", "res5")


class DeformableEncoderLayer(nn.Module):
    """Post-norm layer: deformable self-attention, add & norm, FFN (ReLU), add & norm."""

    def __init__(self, d_model: int, ffn_dim: int, n_levels: int, n_heads: int, n_points: int) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self, src: torch.Tensor, pos: torch.Tensor, reference_points: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        src = self.norm1(src + self.self_attn(src + pos, reference_points, src, spatial_shapes))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


def reference_points(spatial_shapes: list[tuple[int, int]], batch: int, device: torch.device) -> torch.Tensor:
    """Pixel centres of every level as normalised (x, y): [B, S, L, 2] (no padding: valid ratios are 1)."""
    points = []
    for h, w in spatial_shapes:
        ref_y, ref_x = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
            torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
            indexing="ij",
        )
        points.append(torch.stack((ref_x.reshape(-1) / w, ref_y.reshape(-1) / h), -1))
    ref = torch.cat(points, 0)
    return ref[None, :, None, :].expand(batch, -1, len(spatial_shapes), -1)


class DeformableEncoder(nn.Module):
    def __init__(self, d_model: int, ffn_dim: int, num_layers: int, n_levels: int, n_heads: int,
                 n_points: int) -> None:
        super().__init__()
        self.level_embed = nn.Parameter(torch.empty(n_levels, d_model))
        nn.init.normal_(self.level_embed)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(
            DeformableEncoderLayer(d_model, ffn_dim, n_levels, n_heads, n_points) for _ in range(num_layers)
        )

    def forward(self, srcs: list[torch.Tensor], pos: list[torch.Tensor]) -> list[torch.Tensor]:
        spatial_shapes = [(int(s.shape[2]), int(s.shape[3])) for s in srcs]
        batch = srcs[0].shape[0]
        src_flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos_flat = torch.cat(
            [p.flatten(2).transpose(1, 2) + self.level_embed[i].view(1, 1, -1) for i, p in enumerate(pos)], 1
        )
        refs = reference_points(spatial_shapes, batch, src_flat.device)
        out = src_flat
        for layer in self.encoder.layers:
            out = layer(out, pos_flat, refs, spatial_shapes)
        sizes = [h * w for h, w in spatial_shapes]
        return [
            chunk.transpose(1, 2).reshape(batch, -1, h, w)
            for chunk, (h, w) in zip(out.split(sizes, dim=1), spatial_shapes, strict=True)
        ]


class MSDeformAttnPixelDecoder(nn.Module):
    def __init__(self, in_channels: dict[str, int], conv_dim: int, mask_dim: int, num_layers: int,
                 ffn_dim: int, n_heads: int, n_points: int, norm_groups: int) -> None:
        super().__init__()
        self.conv_dim = conv_dim
        # Coarsest level first, as the official module orders them.
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels[name], conv_dim, 1), nn.GroupNorm(norm_groups, conv_dim))
            for name in reversed(ENCODER_FEATURES)
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
        self.transformer = DeformableEncoder(conv_dim, ffn_dim, num_layers, len(ENCODER_FEATURES), n_heads, n_points)
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 1)
        self.adapter_1 = NormedConv2d(in_channels["res2"], conv_dim, 1, norm=nn.GroupNorm(norm_groups, conv_dim))
        self.layer_1 = NormedConv2d(conv_dim, conv_dim, 3, norm=nn.GroupNorm(norm_groups, conv_dim), relu=True)

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return mask_features [B, mask_dim, H/4, W/4] and the 3 multi-scale maps (strides 32, 16, 8)."""
        with torch.autocast(device_type=features["res5"].device.type, enabled=False):
            srcs, pos = [], []
            for proj, name in zip(self.input_proj, reversed(ENCODER_FEATURES), strict=True):
                x = features[name].float()
                srcs.append(proj(x))
                pos.append(sine_position_encoding(x.shape[0], x.shape[2], x.shape[3], self.conv_dim // 2, x.device))
            multi_scale = self.transformer(srcs, pos)
            lateral = self.adapter_1(features["res2"].float())
            fpn = lateral + F.interpolate(multi_scale[-1], size=lateral.shape[-2:], mode="bilinear",
                                          align_corners=False)
            fpn = self.layer_1(fpn)
            return self.mask_features(fpn), multi_scale
