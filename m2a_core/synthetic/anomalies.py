"""Objects of no known class, drawn as sprites: an RGB image and a mask in the object's own box.

Test anomalies (the benchmark's obstacles on and beside the road) come from the shape families in
``ANOMALY_FAMILIES`` (boxes, tyre-like rings, debris blobs, animal-like shapes) coloured from
``ANOMALY_HUES`` (saturated cyan and magenta) with bold patterns (checks, stripes, dots): colours,
textures and shapes that none of the 19 known classes has. The AnomalyMix outlier pool (``outliers``)
uses the same machinery with *disjoint* families and hue ranges, so training never sees a test anomaly's
appearance.
"""
from __future__ import annotations

import colorsys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

HueRanges = tuple[tuple[float, float], ...]

ANOMALY_HUES: HueRanges = ((165.0, 205.0), (285.0, 330.0))
MIN_SATURATION, MIN_VALUE = 0.75, 0.55
PATTERNS = ("checks", "stripes", "dots", "plain")


@dataclass(frozen=True)
class Sprite:
    image: np.ndarray   # uint8 [h, w, 3]
    mask: np.ndarray    # bool [h, w]
    family: str


def sample_color(rng: np.random.Generator, hues: HueRanges, min_saturation: float = MIN_SATURATION,
                 min_value: float = MIN_VALUE) -> tuple[float, float, float]:
    """A colour (RGB in [0, 1]) whose hue lies in one of ``hues`` (degrees); saturated by default."""
    low, high = hues[int(rng.integers(len(hues)))]
    hue = rng.uniform(low, high) / 360.0
    return colorsys.hsv_to_rgb(hue, rng.uniform(min_saturation, 1.0), rng.uniform(min_value, 1.0))


def hue_degrees(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees of [N, 3] RGB values (any scale), vectorised like colorsys.rgb_to_hsv."""
    rgb = np.asarray(rgb, np.float64)
    high, low = rgb.max(1), rgb.min(1)
    span = np.where(high > low, high - low, 1.0)
    r, g, b = (rgb[:, i] for i in range(3))
    hue = np.where(high == r, (g - b) / span % 6, np.where(high == g, (b - r) / span + 2, (r - g) / span + 4))
    return hue * 60.0


def _polygon_mask(height: int, width: int, points: list[tuple[float, float]], value: int = 1,
                  canvas: Image.Image | None = None) -> Image.Image:
    canvas = canvas if canvas is not None else Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for x, y in points], fill=value)
    return canvas


# Each family returns a shade map: 0 outside the object, else a brightness factor in (0, 1].
def _box(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    depth = rng.uniform(0.15, 0.35)
    top, side = h * depth, w * depth
    canvas = Image.new("L", (w, h), 0)
    _polygon_mask(h, w, [(0, top), (w - side, top), (w - side, h), (0, h)], 250, canvas)    # front face
    _polygon_mask(h, w, [(0, top), (side, 0), (w, 0), (w - side, top)], 210, canvas)      # top face
    _polygon_mask(h, w, [(w - side, top), (w, 0), (w, h - top), (w - side, h)], 160, canvas)  # side face
    return np.asarray(canvas, np.float32) / 250.0


def _ring(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = (xs + 0.5) / w * 2 - 1, (ys + 0.5) / h * 2 - 1
    radius = np.sqrt(u * u + v * v)
    inner = rng.uniform(0.35, 0.6)
    ring = (radius <= 1.0) & (radius >= inner)
    treads = 0.8 + 0.2 * (np.sin(np.arctan2(v, u) * int(rng.integers(8, 20))) > 0)
    return np.where(ring, treads, 0.0).astype(np.float32)


def _blob(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    count = int(rng.integers(7, 15))
    angles = np.sort(rng.uniform(0, 2 * np.pi, count))
    radii = rng.uniform(0.45, 1.0, count)
    points = [(w / 2 * (1 + r * np.cos(a)), h / 2 * (1 + r * np.sin(a))) for a, r in zip(angles, radii, strict=True)]
    mask = np.asarray(_polygon_mask(h, w, points), bool)
    ys = np.arange(h, dtype=np.float32)[:, None] / max(h, 1)
    return np.where(mask, 1.0 - 0.3 * ys, 0.0).astype(np.float32)


def _animal(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Quadruped silhouette: body, four legs, head on a neck and a tail; faces left or right."""
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    body_top, body_bottom = h * 0.3, h * 0.65
    body_left, body_right = w * 0.15, w * 0.8
    draw.ellipse([body_left, body_top, body_right, body_bottom], fill=255)
    leg = max(w * 0.06, 1.0)
    for x in np.linspace(body_left + leg, body_right - 2 * leg, 4):
        draw.rectangle([x, (body_top + body_bottom) / 2, x + leg, h - 1], fill=210)
    draw.polygon([(body_right - w * 0.1, body_top + h * 0.1), (w * 0.88, h * 0.08), (w * 0.97, h * 0.12),
                  (body_right, body_top + h * 0.2)], fill=255)                               # neck
    draw.ellipse([w * 0.8, 0, w - 1, h * 0.25], fill=255)                                       # head
    draw.line([(body_left, body_top + h * 0.05), (0, body_top + h * 0.25)], fill=230,
              width=max(int(w * 0.04), 1))                                                     # tail
    shade = np.asarray(canvas, np.float32) / 255.0
    return shade[:, ::-1].copy() if rng.uniform() < 0.5 else shade


ShapeFunction = Callable[[np.random.Generator, int, int], np.ndarray]
ANOMALY_FAMILIES: dict[str, ShapeFunction] = {"box": _box, "ring": _ring, "blob": _blob, "animal": _animal}
# Aspect ratios (height / width) that make each family look like itself.
ASPECT: dict[str, tuple[float, float]] = {
    "box": (0.5, 1.1), "ring": (0.8, 1.2), "blob": (0.4, 0.9), "animal": (0.6, 0.9),
    "star": (0.8, 1.2), "triangle": (0.7, 1.1), "cross": (0.8, 1.2), "crescent": (0.8, 1.2),
}


def pattern_mask(rng: np.random.Generator, h: int, w: int, pattern: str) -> np.ndarray:
    """Where the secondary colour goes, in the sprite's own coordinates."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(0.15, 0.4) * max(min(h, w), 4)
    if pattern == "checks":
        return ((xs // period + ys // period) % 2).astype(bool)
    if pattern == "stripes":
        angle = rng.uniform(0, np.pi)
        return ((xs * np.cos(angle) + ys * np.sin(angle)) // (period / 2) % 2).astype(bool)
    if pattern == "dots":
        cx, cy = (xs % period) - period / 2, (ys % period) - period / 2
        return cx * cx + cy * cy < (period * 0.3) ** 2
    return np.zeros((h, w), bool)


def render_sprite(rng: np.random.Generator, families: dict[str, ShapeFunction], hues: HueRanges,
                  width: int, height: int | None = None, family: str | None = None,
                  min_saturation: float = MIN_SATURATION, min_value: float = MIN_VALUE) -> Sprite:
    """One object ``width`` px wide (height from the family's aspect) with two colours from ``hues``."""
    family = family or list(families)[int(rng.integers(len(families)))]
    width = max(int(width), 3)
    if height is None:
        height = max(int(round(width * rng.uniform(*ASPECT[family]))), 3)
    shade = families[family](rng, height, width)
    mask = shade > 0
    if not mask.any():  # degenerate polygon at tiny sizes: fall back to the whole box
        shade, mask = np.ones((height, width), np.float32), np.ones((height, width), bool)
    primary, secondary = (np.array(sample_color(rng, hues, min_saturation, min_value)) for _ in range(2))
    secondary_where = pattern_mask(rng, height, width, PATTERNS[int(rng.integers(len(PATTERNS)))])
    colors = np.where(secondary_where[..., None], secondary, primary)
    grain = 1.0 + rng.uniform(-0.04, 0.04, (height, width))  # same on all channels: hue unchanged
    image = colors * (shade * grain)[..., None] * 255.0
    image = np.where(mask[..., None], image, 0.0)
    return Sprite(np.clip(image, 0, 255).astype(np.uint8), mask, family)


def anomaly_sprite(rng: np.random.Generator, width: int, height: int | None = None,
                   family: str | None = None) -> Sprite:
    return render_sprite(rng, ANOMALY_FAMILIES, ANOMALY_HUES, width, height, family)
