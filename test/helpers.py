"""Small shared test helpers (importable from test modules, unlike conftest)."""
from __future__ import annotations

import numpy as np

from m2a_core.config import ModelConfig

# A compact model that shares every line of code with the official R50 one.
TINY = ModelConfig(
    backbone_depth=18, conv_dim=32, mask_dim=32, hidden_dim=32, encoder_layers=1, decoder_layers=3,
    decoder_ffn_dim=64, encoder_ffn_dim=64, num_queries=10, norm_groups=8, encoder_heads=4, decoder_heads=4,
)


def random_image(seed: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def make_model(config: ModelConfig, seed: int, force_class: int | None = None):
    """A randomly initialised model with varied queries; ``force_class`` makes many queries confident in it."""
    import torch

    from m2a_core.modeling import Mask2Anomaly

    torch.manual_seed(seed)
    model = Mask2Anomaly(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # larger random weights so masks and classes are not all alike
            p.add_(torch.randn_like(p) * 0.05)
        if force_class is not None:
            model.predictor.class_embed.bias[force_class] += 6.0
    return model
