"""Small shared test helpers (importable from test modules, unlike conftest)."""
from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from m2a_core.config import ModelConfig

REPO = Path(__file__).resolve().parents[1]

# Each ROS test module draws its private DDS domain from its own range, so that two modules run in parallel
# (pytest-xdist, two worktrees on one machine) never share a domain and hear each other's nodes.
NODE_TEST_DOMAINS = range(1, 101)
BAG_TEST_DOMAINS = range(101, 201)

# A compact model that shares every line of code with the official R50 one.
TINY = ModelConfig(
    backbone_depth=18, conv_dim=32, mask_dim=32, hidden_dim=32, encoder_layers=1, decoder_layers=3,
    decoder_ffn_dim=64, encoder_ffn_dim=64, num_queries=10, norm_groups=8, encoder_heads=4, decoder_heads=4,
)


def random_image(seed: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def scipy_opening(mask: np.ndarray, size: int = 3) -> np.ndarray:
    """Binary opening by scipy, the independent reference for m2a's: outside the image set for the erosion
    (objects at the border keep their edge), unset for the dilation."""
    from scipy import ndimage

    square = np.ones((size, size), bool)
    return ndimage.binary_dilation(ndimage.binary_erosion(mask, square, border_value=1), square, border_value=0)


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


@contextlib.contextmanager
def ros_domain(domain_ids: range, discovery_range: str = "LOCALHOST") -> Iterator:
    """A private DDS domain (random id from ``domain_ids``) and an rclpy context in it.

    Node processes started inside inherit the domain, the discovery range, the transports the launch file
    ships (Fast DDS LARGE_DATA) and this checkout on PYTHONPATH. The environment is restored on exit.
    """
    import rclpy

    saved = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "AMENT_PREFIX_PATH",
                                             "FASTDDS_BUILTIN_TRANSPORTS", "PYTHONPATH")}
    os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().choice(domain_ids))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = discovery_range
    os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = "LARGE_DATA"  # what launch/anomaly.launch.py ships
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), saved["PYTHONPATH"]]))
    context = rclpy.context.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.shutdown(context=context)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
