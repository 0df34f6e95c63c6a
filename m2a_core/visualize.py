"""Pictures people look at: colour heatmaps, label colours and overlays (uint8 RGB arrays)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from m2a_core.classes import IGNORE_ID, UNKNOWN_ID, ClassSet

UNKNOWN_COLOR = (255, 255, 255)


@lru_cache(maxsize=8)
def colormap_lut(name: str = "inferno") -> np.ndarray:
    """A [256, 3] uint8 lookup table of a matplotlib colour map."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(f"unknown colour map {name!r}") from None
    return (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)


def colorize_scores(scores: np.ndarray, vmin: float = 0.0, vmax: float = 1.0, cmap: str = "inferno") -> np.ndarray:
    """Float [H, W] scores -> uint8 RGB [H, W, 3]; scores are clipped to [vmin, vmax] (NaN -> vmin)."""
    if vmax <= vmin:
        raise ValueError(f"vmax ({vmax}) must be greater than vmin ({vmin})")
    scaled = (np.nan_to_num(scores, nan=vmin) - vmin) * (255.0 / (vmax - vmin))
    index = np.clip(scaled, 0, 255).astype(np.uint8)
    return colormap_lut(cmap)[index]


def label_palette(class_set: ClassSet) -> np.ndarray:
    """[256, 3] uint8: class colours, white for unknown, black for ignore and unused ids."""
    palette = np.zeros((256, 3), np.uint8)
    palette[: class_set.num_classes] = np.asarray(class_set.colors, np.uint8)
    palette[UNKNOWN_ID] = UNKNOWN_COLOR
    palette[IGNORE_ID] = (0, 0, 0)
    return palette


def colorize_labels(labels: np.ndarray, class_set: ClassSet) -> np.ndarray:
    return label_palette(class_set)[labels.astype(np.uint8)]


def blend(image: np.ndarray, color: np.ndarray, alpha: float = 0.5, where: np.ndarray | None = None) -> np.ndarray:
    """Alpha-blend ``color`` over ``image`` (both uint8 RGB), optionally only where ``where`` is True."""
    mixed = (image.astype(np.float32) * (1.0 - alpha) + color.astype(np.float32) * alpha + 0.5).astype(np.uint8)
    if where is None:
        return mixed
    out = image.copy()
    out[where] = mixed[where]
    return out


def anomaly_overlay(image: np.ndarray, scores: np.ndarray, vmin: float = 0.0, vmax: float = 1.0,
                    alpha: float = 0.6, cmap: str = "inferno", min_score: float | None = None) -> np.ndarray:
    """The camera image with the heatmap blended on; with ``min_score`` only where the score reaches it."""
    heat = colorize_scores(scores, vmin, vmax, cmap)
    where = None if min_score is None else scores >= min_score
    return blend(image, heat, alpha, where)
