"""One dataclass describes every model size, from the official R50 to compact test variants.

The config travels inside our safetensors weights files (metadata key ``m2a_config``), so a
weights file alone is enough to rebuild its model.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from m2a_core.errors import CheckpointError

BACKBONE_DEPTHS = (18, 34, 50)
# "global": Mask2Anomaly's global masked attention (two branches, foreground and background);
# "masked": Mask2Former's masked attention (foreground only), the baseline of the paper's ablation.
CROSS_ATTENTION_KINDS = ("global", "masked")


@dataclass(frozen=True)
class ModelConfig:
    # Backbone (ResNet, detectron2 layout, frozen BatchNorm).
    backbone_depth: int = 50
    # Pixel decoder (multi-scale deformable attention encoder + FPN to stride 4).
    conv_dim: int = 256
    mask_dim: int = 256
    encoder_layers: int = 6
    encoder_heads: int = 8
    encoder_points: int = 4
    encoder_ffn_dim: int = 1024
    norm_groups: int = 32
    # Transformer decoder: global masked attention, or plain masked attention (see CROSS_ATTENTION_KINDS).
    # Weights files written before this field existed describe "global" models and still load as such.
    cross_attention: str = "global"
    hidden_dim: int = 256
    decoder_layers: int = 9
    decoder_heads: int = 8
    decoder_ffn_dim: int = 2048
    num_queries: int = 100
    # Classes (without the no-object class) and the vocabulary they come from.
    num_classes: int = 19
    classes: str = "cityscapes"
    # Input normalisation (RGB, 0..255 scale) and padding.
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    size_divisibility: int = 32
    # Refinement mask: queries whose best class is one of these ids with probability above
    # refine_score_threshold cancel the anomaly score where p * mask >= refine_mask_threshold.
    refine_class_ids: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, 9, 10)
    refine_score_threshold: float = 0.95
    refine_mask_threshold: float = 0.5

    def __post_init__(self) -> None:
        problems = []
        if self.backbone_depth not in BACKBONE_DEPTHS:
            problems.append(f"backbone_depth must be one of {BACKBONE_DEPTHS}, got {self.backbone_depth}")
        for name in ("conv_dim", "hidden_dim"):
            value = getattr(self, name)
            if value % self.norm_groups:
                problems.append(f"{name}={value} is not divisible by norm_groups={self.norm_groups}")
        if self.conv_dim % self.encoder_heads:
            problems.append(f"conv_dim={self.conv_dim} is not divisible by encoder_heads={self.encoder_heads}")
        if self.hidden_dim % self.decoder_heads:
            problems.append(f"hidden_dim={self.hidden_dim} is not divisible by decoder_heads={self.decoder_heads}")
        if self.cross_attention not in CROSS_ATTENTION_KINDS:
            problems.append(f"cross_attention must be one of {CROSS_ATTENTION_KINDS}, got {self.cross_attention!r}")
        if self.hidden_dim != self.conv_dim:
            # The official decoder has no input projection when the two match; we keep that layout.
            problems.append(f"hidden_dim ({self.hidden_dim}) must equal conv_dim ({self.conv_dim})")
        for name in ("decoder_layers", "num_queries", "num_classes", "encoder_layers"):
            if getattr(self, name) < (0 if name == "encoder_layers" else 1):
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"model config metadata is not valid JSON: {exc}") from None
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise CheckpointError(f"model config has unknown fields {unknown}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(str(exc)) from None


# The official Cityscapes ResNet-50 model: 46,557,112 parameters in its state_dict.
OFFICIAL_R50_CITYSCAPES = ModelConfig()
