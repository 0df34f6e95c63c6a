"""Pictures people look at: colour heatmaps, label colours and overlays (uint8 RGB arrays).

These run on every frame of the ROS node at camera resolution, so they avoid numpy's slow paths (measured on
1024x2048 frames, ``m2a bench node``): colour look-ups use Pillow's palette expansion (one C pass, ~3 ms instead of
~30 ms for ``table[index]``), blending is integer arithmetic on uint16 (~4 ms instead of ~25 ms in float32), and
score-to-index scaling works in place. The results equal the straightforward formulas (``test_visualize.py``);
blending rounds ``alpha`` to a multiple of 1/256, so a blended value may differ from the float formula by one.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from m2a_core.classes import IGNORE_ID, UNKNOWN_ID, ClassSet

UNKNOWN_COLOR = (255, 255, 255)
ALPHA_ONE = 256   # integer blending weight of alpha = 1


@lru_cache(maxsize=8)
def colormap_lut(name: str = "inferno") -> np.ndarray:
    """A [256, 3] uint8 lookup table of a matplotlib colour map."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(f"unknown colour map {name!r}") from None
    lut = (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)
    lut.setflags(write=False)  # cached and shared between callers
    return lut


def lookup_colors(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``table[index]``: a [256, 3] uint8 table looked up with uint8 indices -> [..., 3] uint8.

    2-D indices go through Pillow's palette expansion (the fast path); the result is then read-only (it views
    Pillow's output buffer): copy it before drawing on it.
    """
    table = np.asarray(table, np.uint8)
    if table.shape != (256, 3):
        raise ValueError(f"colour table must be [256, 3], got {list(table.shape)}")
    index = np.asarray(index)
    if index.dtype != np.uint8:
        raise ValueError(f"colour indices must be uint8, got {index.dtype}")
    if index.ndim != 2 or index.size == 0:
        return np.take(table, index, axis=0)
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(index))  # mode L, shares the array's memory
    picture.putpalette(table.tobytes())                      # L -> P with this palette
    return np.asarray(picture.convert("RGB"))


def score_indices(scores: np.ndarray, vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """Float [H, W] scores -> uint8 colour-map indices: (score - vmin) * 255 / (vmax - vmin), truncated and
    clipped to [0, 255]; NaN -> 0 (vmin), +inf -> 255."""
    if vmax <= vmin:
        raise ValueError(f"vmax ({vmax}) must be greater than vmin ({vmin})")
    scores = np.asarray(scores)
    # In the scores' own float type (float32 for predictions), in place on one temporary.
    scale = 255.0 / (vmax - vmin)
    if vmin != 0.0:
        scaled = np.subtract(scores, vmin)
        np.multiply(scaled, scale, out=scaled)
    else:  # score - 0.0 is the score: skip that pass
        scaled = np.multiply(scores, scale)
    np.fmax(scaled, 0.0, out=scaled)   # fmax: NaN -> 0
    np.fmin(scaled, 255.0, out=scaled)
    return scaled.astype(np.uint8)


def colorize_scores(scores: np.ndarray, vmin: float = 0.0, vmax: float = 1.0, cmap: str = "inferno") -> np.ndarray:
    """Float [H, W] scores -> uint8 RGB [H, W, 3] (read-only); scores are clipped to [vmin, vmax] (NaN -> vmin)."""
    return lookup_colors(colormap_lut(cmap), score_indices(scores, vmin, vmax))


def label_palette(class_set: ClassSet) -> np.ndarray:
    """[256, 3] uint8: class colours, white for unknown, black for ignore and unused ids."""
    palette = np.zeros((256, 3), np.uint8)
    palette[: class_set.num_classes] = np.asarray(class_set.colors, np.uint8)
    palette[UNKNOWN_ID] = UNKNOWN_COLOR
    palette[IGNORE_ID] = (0, 0, 0)
    return palette


def colorize_labels(labels: np.ndarray, class_set: ClassSet) -> np.ndarray:
    """Label ids [H, W] -> class colours uint8 RGB [H, W, 3] (read-only)."""
    return lookup_colors(label_palette(class_set), np.asarray(labels).astype(np.uint8, copy=False))


def alpha_weight(alpha: float) -> int:
    """``alpha`` in [0, 1] as an integer weight out of ``ALPHA_ONE`` (the blending precision)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return int(round(alpha * ALPHA_ONE))


def blend(image: np.ndarray, color: np.ndarray, alpha: float = 0.5, where: np.ndarray | None = None) -> np.ndarray:
    """Alpha-blend ``color`` over ``image`` (both uint8 RGB), optionally only where ``where`` is True.

    round(image * (1 - a) + color * a) with a = ``alpha`` rounded to a multiple of 1/256, in uint16 (exact for
    alpha 0, 0.25, 0.5, 0.75, 1; otherwise within one of the float formula).
    """
    weight = alpha_weight(alpha)
    # 255 * 256 + 128 < 2**16: uint16 holds every intermediate value.
    mixed = np.multiply(image, np.uint16(ALPHA_ONE - weight), dtype=np.uint16)
    mixed += np.multiply(color, np.uint16(weight), dtype=np.uint16)
    mixed += np.uint16(ALPHA_ONE // 2)
    mixed >>= 8                                   # / ALPHA_ONE
    mixed = mixed.astype(np.uint8)
    if where is None:
        return mixed
    out = np.array(image, np.uint8)
    out[where] = mixed[where]
    return out


def anomaly_overlay(image: np.ndarray, scores: np.ndarray, vmin: float = 0.0, vmax: float = 1.0,
                    alpha: float = 0.6, cmap: str = "inferno", min_score: float | None = None) -> np.ndarray:
    """The camera image with the heatmap blended on; with ``min_score`` only where the score reaches it."""
    heat = colorize_scores(scores, vmin, vmax, cmap)
    where = None if min_score is None else scores >= min_score
    return blend(image, heat, alpha, where)
