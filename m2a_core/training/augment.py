"""Training augmentation of the official recipe (detectron2 mapper of Mask2Former, SPEC section 5).

In order: random short side (one of ``short_sides``, long side capped at ``max_size``; PIL bilinear for the
image, nearest for labels), random crop (at most ``crop`` = (h, w), uniformly placed; the official
``single_category_max_area = 1.0`` makes its category-area constraint a plain random crop), SSD photometric
distortion, horizontal flip with probability 0.5. Labels are any integer map (semantic ids, or panoptic
segment ids) and follow the image geometrically. All randomness comes from the ``rng`` argument.

``class_uniform`` (not in the official recipe, 0 there) makes that fraction of crops class-uniform (Zhu et al.,
CVPR 2019, "Improving Semantic Segmentation via Video Propagation and Label Relaxation"): a class present in the
frame is drawn uniformly, then one of its pixels, and the crop is placed uniformly among the windows holding that
pixel. Small rare classes (riders, traffic lights) then fill crops as often as the road does, which a short
schedule needs; a uniform crop of a quarter of the frame misses them most of the time.

The photometric distortion follows detectron2's ``ColorAugSSDTransform``: brightness +U(-32, 32), contrast
xU(0.5, 1.5), saturation xU(0.5, 1.5) and hue +U{-18..18} (OpenCV's 180-step hue circle), each with
probability 0.5 and rounded to uint8 after each step, contrast either second or last. HSV conversion uses
matplotlib's (float) instead of OpenCV's (uint8): hue and saturation steps may differ by one grey level.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from PIL import Image

from m2a_core.preprocess import resized_shape

# int(x * 0.1 * 1024) for x in 5..20: 512, 614, ..., 2048 (0.5 .. 2.0 x 1024).
OFFICIAL_SHORT_SIDES = tuple(int(x * 0.1 * 1024) for x in range(5, 21))


@dataclass(frozen=True)
class AugmentConfig:
    short_sides: tuple[int, ...] = OFFICIAL_SHORT_SIDES
    max_size: int = 4096
    crop: tuple[int, int] | None = (380, 760)
    photometric: bool = True
    flip: bool = True
    class_uniform: float = 0.0   # fraction of class-uniform crops

    def __post_init__(self) -> None:
        if not self.short_sides or min(self.short_sides) < 1:
            raise ValueError(f"augment short_sides must be positive sizes, got {self.short_sides}")
        if self.crop is not None and (len(self.crop) != 2 or min(self.crop) < 1):
            raise ValueError(f"augment crop must be (height, width), got {self.crop}")
        if not 0.0 <= self.class_uniform <= 1.0:
            raise ValueError(f"augment class_uniform must be a probability in [0, 1], got {self.class_uniform}")


def resize_pair(image: np.ndarray, label: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    if image.shape[:2] == tuple(size):
        return image, label
    new_image = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))
    new_label = np.asarray(Image.fromarray(label.astype(np.int32)).resize((size[1], size[0]), Image.NEAREST))
    return new_image, new_label.astype(label.dtype)


def random_resize(image: np.ndarray, label: np.ndarray, short_sides: tuple[int, ...], max_size: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    short_side = int(short_sides[int(rng.integers(0, len(short_sides)))])
    size = resized_shape(image.shape[0], image.shape[1], short_side, max_size)
    return resize_pair(image, label, size)


def random_crop(image: np.ndarray, label: np.ndarray, crop: tuple[int, int], rng: np.random.Generator,
                focus: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A crop of at most ``crop`` = (h, w), uniformly placed; with ``focus`` = (row, column), uniformly among
    the windows that hold that pixel."""
    height, width = label.shape
    crop_h, crop_w = min(crop[0], height), min(crop[1], width)
    if focus is None:
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
    else:
        row, column = focus
        top = int(rng.integers(max(row - crop_h + 1, 0), min(row, height - crop_h) + 1))
        left = int(rng.integers(max(column - crop_w + 1, 0), min(column, width - crop_w) + 1))
    box = (slice(top, top + crop_h), slice(left, left + crop_w))
    return image[box], label[box]


def class_uniform_focus(classes: np.ndarray, rng: np.random.Generator, void: int) -> tuple[int, int] | None:
    """(row, column) of a random pixel of a class drawn uniformly among those present (``void`` excluded);
    None when only void is present."""
    present = np.unique(classes)
    present = present[present != void]
    if present.size == 0:
        return None
    rows, columns = np.nonzero(classes == present[int(rng.integers(present.size))])
    pick = int(rng.integers(rows.size))
    return int(rows[pick]), int(columns[pick])


def _affine(image: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(image.astype(np.float64) * alpha + beta, 0, 255).astype(np.uint8)


def photometric_distortion(image: np.ndarray, rng: np.random.Generator, brightness_delta: float = 32,
                           contrast: tuple[float, float] = (0.5, 1.5), saturation: tuple[float, float] = (0.5, 1.5),
                           hue_delta: int = 18) -> np.ndarray:
    def brightness(im: np.ndarray) -> np.ndarray:
        return _affine(im, beta=rng.uniform(-brightness_delta, brightness_delta)) if rng.integers(2) else im

    def contrast_step(im: np.ndarray) -> np.ndarray:
        return _affine(im, alpha=rng.uniform(*contrast)) if rng.integers(2) else im

    def saturation_step(im: np.ndarray) -> np.ndarray:
        if not rng.integers(2):
            return im
        hsv = rgb_to_hsv(im / 255.0)
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*saturation), 0, 1)
        return np.clip(np.rint(hsv_to_rgb(hsv) * 255), 0, 255).astype(np.uint8)

    def hue_step(im: np.ndarray) -> np.ndarray:
        if not rng.integers(2):
            return im
        hsv = rgb_to_hsv(im / 255.0)
        hsv[..., 0] = (hsv[..., 0] + rng.integers(-hue_delta, hue_delta + 1) / 180.0) % 1.0
        return np.clip(np.rint(hsv_to_rgb(hsv) * 255), 0, 255).astype(np.uint8)

    image = brightness(image)
    if rng.integers(2):
        return hue_step(saturation_step(contrast_step(image)))
    return contrast_step(hue_step(saturation_step(image)))


def augment(image: np.ndarray, label: np.ndarray, config: AugmentConfig, rng: np.random.Generator,
            classes_of: Callable[[np.ndarray], np.ndarray] | None = None, void: int = 255
            ) -> tuple[np.ndarray, np.ndarray]:
    """image uint8 [H, W, 3], label integer [H, W] -> augmented copies, same dtypes. ``classes_of`` maps the
    label map to semantic classes for class-uniform crops (labels that pack segment ids); default: the labels."""
    image, label = random_resize(image, label, config.short_sides, config.max_size, rng)
    if config.crop is not None:
        focus = None
        if config.class_uniform > 0 and rng.uniform() < config.class_uniform:
            focus = class_uniform_focus(label if classes_of is None else classes_of(label), rng, void)
        image, label = random_crop(image, label, config.crop, rng, focus)
    if config.photometric:
        image = photometric_distortion(image, rng)
    if config.flip and rng.uniform() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(label)
