"""AnomalyMix (paper Sec. 4.3; SPEC section 5): paste a COCO object union into a driving frame.

With probability 0.2 per sample, one outlier object (the union of a COCO image's instance masks, cropped to
its bounding box, not rescaled) is pasted at a uniformly random position of the full-resolution frame,
before augmentation; the pasted pixels get label 254 (outlier, not a class target). Only object pixels are
copied: the rest of the box keeps the frame's pixels and labels. The official code crashed when an object
was larger than the frame; here such an object is cropped to the frame at a random offset.

The outlier pool is the folder ``prepare_coco_outliers.py`` writes (the official layout):
``<pool>/images/<stem>.jpg`` and ``<pool>/ood_annotations/<stem>.png`` (uint8, 254 on object pixels).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m2a_core.errors import DatasetError
from m2a_core.training.outlier_loss import OUTLIER_ID

DEFAULT_PROBABILITY = 0.2


@dataclass(frozen=True)
class OutlierObject:
    image: np.ndarray  # uint8 [h, w, 3], the object's bounding box
    mask: np.ndarray   # bool [h, w], the object's pixels inside the box


def crop_to_object(image: np.ndarray, mask: np.ndarray) -> OutlierObject:
    """Crop an image and its object mask to the mask's bounding box."""
    if image.shape[:2] != mask.shape:
        raise DatasetError(f"outlier image {image.shape[:2]} and mask {mask.shape} differ in size")
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        raise DatasetError("outlier mask has no object pixels")
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return OutlierObject(image=image[box].copy(), mask=mask[box].copy())


def paste_object(image: np.ndarray, label: np.ndarray, obj: OutlierObject, rng: np.random.Generator,
                 outlier_id: int = OUTLIER_ID) -> tuple[np.ndarray, np.ndarray]:
    """Return copies of (image, label) with ``obj`` pasted at a uniformly random position."""
    height, width = label.shape
    obj_image, obj_mask = obj.image, obj.mask
    oh, ow = obj_mask.shape
    if oh > height or ow > width:  # larger than the frame: keep a random frame-sized part of it
        y0 = int(rng.integers(0, max(oh - height, 0) + 1))
        x0 = int(rng.integers(0, max(ow - width, 0) + 1))
        obj_image = obj_image[y0:y0 + height, x0:x0 + width]
        obj_mask = obj_mask[y0:y0 + height, x0:x0 + width]
        oh, ow = obj_mask.shape
    top = int(rng.integers(0, height - oh + 1))
    left = int(rng.integers(0, width - ow + 1))
    image, label = image.copy(), label.copy()
    region = (slice(top, top + oh), slice(left, left + ow))
    image[region][obj_mask] = obj_image[obj_mask]
    label[region][obj_mask] = outlier_id
    return image, label


class OutlierPool:
    """The COCO outlier objects on disk; objects are read lazily (the pool has ~10k images)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        masks_dir, images_dir = self.root / "ood_annotations", self.root / "images"
        if not masks_dir.is_dir() or not images_dir.is_dir():
            raise DatasetError(
                f"outlier pool {self.root} must contain 'images/' and 'ood_annotations/' "
                f"(create it with training/prepare_coco_outliers.py)")
        self.masks = sorted(masks_dir.glob("*.png"))
        if not self.masks:
            raise DatasetError(f"outlier pool {masks_dir} holds no .png annotation")

    def __len__(self) -> int:
        return len(self.masks)

    def image_path(self, mask_path: Path) -> Path:
        for suffix in (".jpg", ".png", ".jpeg"):
            candidate = self.root / "images" / (mask_path.stem + suffix)
            if candidate.is_file():
                return candidate
        raise DatasetError(f"outlier pool: no image for annotation {mask_path.name} in {self.root / 'images'}")

    def load(self, index: int) -> OutlierObject:
        from m2a_core.imageio import read_rgb
        from m2a_core.training.data import read_label

        mask_path = self.masks[index]
        mask = read_label(mask_path) == OUTLIER_ID
        return crop_to_object(read_rgb(self.image_path(mask_path)), mask)


class AnomalyMix:
    def __init__(self, pool: OutlierPool, probability: float = DEFAULT_PROBABILITY) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"AnomalyMix probability must be in [0, 1], got {probability}")
        self.pool = pool
        self.probability = probability

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, bool]:
        """(image, label, pasted?) with one random pool object pasted with the configured probability."""
        if rng.uniform() >= self.probability:
            return image, label, False
        obj = self.pool.load(int(rng.integers(0, len(self.pool))))
        image, label = paste_object(image, label, obj, rng)
        return image, label, True
