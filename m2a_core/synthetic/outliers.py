"""The AnomalyMix outlier pool of the synthetic world: objects that are neither known classes nor test anomalies.

Disjoint from the test anomalies by construction: other shape families (stars, triangles, crosses,
crescents vs. boxes, rings, blobs, animals) and every hue but the test anomalies' cyan and magenta (10 degrees
apart from them), so a model trained with AnomalyMix on this pool must generalise to the benchmark's objects,
as a model trained with COCO objects must on Road Anomaly. Diverse like COCO's objects: any of those hues,
muted to vivid and dark to bright, including the colours of known classes (only shape and context tell those
apart). Measured with the same stage 1 (held-out AuPRC / FPR95): a pool of two saturated hue bands between the
known classes' colours (amber, blue-violet) 65.5 / 4.6, this pool 76.3 / 3.2.

Each pool entry is a whole image with the object somewhere on a neutral noisy background and its annotation
(254 on object pixels), the layout ``m2a_core.training.anomalymix.OutlierPool`` reads.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from m2a_core.synthetic.anomalies import HueRanges, ShapeFunction, Sprite, render_sprite
from m2a_core.synthetic.textures import ANOMALY_LABEL, noise_field

OUTLIER_HUES: HueRanges = ((0.0, 155.0), (215.0, 275.0), (340.0, 360.0))
OUTLIER_MIN_SATURATION, OUTLIER_MIN_VALUE = 0.3, 0.35
OUTLIER_ANNOTATION = ANOMALY_LABEL  # 254, the AnomalyMix pool's object value


def _star(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    points = int(rng.integers(5, 9))
    inner = rng.uniform(0.35, 0.55)
    angles = np.arange(2 * points) * np.pi / points + rng.uniform(0, np.pi)
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    corners = [(w / 2 * (1 + r * np.cos(a)), h / 2 * (1 + r * np.sin(a))) for a, r in zip(angles, radii, strict=True)]
    return _filled(h, w, corners)


def _triangle(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    apex = rng.uniform(0.0, 1.0) * w
    return _filled(h, w, [(apex, 0), (w, h), (0, h)])


def _cross(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    arm = rng.uniform(0.2, 0.4)
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([w * (0.5 - arm / 2), 0, w * (0.5 + arm / 2), h - 1], fill=255)
    draw.rectangle([0, h * (0.5 - arm / 2), w - 1, h * (0.5 + arm / 2)], fill=220)
    return np.asarray(canvas, np.float32) / 255.0


def _crescent(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = (xs + 0.5) / w * 2 - 1, (ys + 0.5) / h * 2 - 1
    shift = rng.uniform(0.35, 0.7)
    inside = (u * u + v * v <= 1.0) & ((u - shift) ** 2 + v * v > rng.uniform(0.6, 0.9) ** 2)
    return inside.astype(np.float32)


def _filled(h: int, w: int, points: list[tuple[float, float]]) -> np.ndarray:
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for x, y in points], fill=255)
    return np.asarray(canvas, np.float32) / 255.0


OUTLIER_FAMILIES: dict[str, ShapeFunction] = {
    "star": _star, "triangle": _triangle, "cross": _cross, "crescent": _crescent}


def outlier_sprite(rng: np.random.Generator, width: int, family: str | None = None) -> Sprite:
    return render_sprite(rng, OUTLIER_FAMILIES, OUTLIER_HUES, width, family=family,
                         min_saturation=OUTLIER_MIN_SATURATION, min_value=OUTLIER_MIN_VALUE)


def outlier_example(rng: np.random.Generator, min_size: int = 24, max_size: int = 160
                    ) -> tuple[np.ndarray, np.ndarray, Sprite]:
    """(image uint8 [H, W, 3], annotation uint8 [H, W] with 254 on the object and 0 elsewhere, sprite)."""
    if not 3 <= min_size <= max_size:
        raise ValueError(f"outlier sizes need 3 <= min_size <= max_size, got {min_size}, {max_size}")
    sprite = outlier_sprite(rng, int(rng.integers(min_size, max_size + 1)))
    h, w = sprite.mask.shape
    height, width = h + int(rng.integers(4, 40)), w + int(rng.integers(4, 40))
    background = 110.0 + 40.0 * noise_field(rng, height, width, 8)
    image = np.repeat(background[..., None], 3, axis=2)
    top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    region = (slice(top, top + h), slice(left, left + w))
    image[region][sprite.mask] = sprite.image[sprite.mask]
    annotation = np.zeros((height, width), np.uint8)
    annotation[region][sprite.mask] = OUTLIER_ANNOTATION
    return np.clip(image, 0, 255).astype(np.uint8), annotation, sprite
