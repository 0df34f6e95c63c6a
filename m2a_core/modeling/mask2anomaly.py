"""Mask2Anomaly: ResNet backbone, deformable pixel decoder, transformer decoder with GMA (or plain masked attention)."""
from __future__ import annotations

import torch
from torch import nn

from m2a_core.config import ModelConfig
from m2a_core.modeling.backbone import ResNet
from m2a_core.modeling.pixel_decoder import MSDeformAttnPixelDecoder
from m2a_core.modeling.transformer_decoder import GMATransformerDecoder


class Mask2Anomaly(nn.Module):
    """Input: normalised RGB images [B, 3, H, W], zero-padded to a multiple of 32 (see ``m2a_core.preprocess``).

    Output: ``pred_logits`` [B, Q, K+1] and ``pred_masks`` [B, Q, H/4, W/4] (logits) of the last decoder
    layer; with ``aux`` (default: in training mode) also ``aux_outputs``, the L earlier predictions (before
    the first layer and after each but the last), as deep supervision needs them.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = ResNet(config.backbone_depth)
        self.pixel_decoder = MSDeformAttnPixelDecoder(
            self.backbone.out_channels, config.conv_dim, config.mask_dim, config.encoder_layers,
            config.encoder_ffn_dim, config.encoder_heads, config.encoder_points, config.norm_groups,
        )
        self.predictor = GMATransformerDecoder(
            config.hidden_dim, config.decoder_heads, config.decoder_ffn_dim, config.decoder_layers,
            config.num_queries, config.num_classes, config.mask_dim, config.cross_attention,
        )

    def forward(self, images: torch.Tensor, aux: bool | None = None) -> dict:
        if images.shape[-2] % 32 or images.shape[-1] % 32:
            raise ValueError(f"input size {tuple(images.shape[-2:])} is not padded to a multiple of 32")
        features = self.backbone(images)
        mask_features, multi_scale = self.pixel_decoder(features)
        classes, masks = self.predictor(multi_scale, mask_features)
        out = {"pred_logits": classes[-1], "pred_masks": masks[-1]}
        if self.training if aux is None else aux:
            out["aux_outputs"] = [
                {"pred_logits": c, "pred_masks": m} for c, m in zip(classes[:-1], masks[:-1], strict=True)
            ]
        return out
