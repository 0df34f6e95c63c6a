"""A labelled image set on disk: (image, label) file pairs plus the rule that maps raw label values.

Every reader in this package returns a ``LabelledImages``; iterating it yields
``(name, image uint8 [H, W, 3] RGB, labels uint8 [H, W])`` with labels already in our convention:
anomaly sets 0 inlier / 1 anomaly / 255 void; semantic sets class ids / 255 void (``UNKNOWN_ID`` for
anomalies where the set has them). Missing folders, unpaired files and unreadable images raise
``DatasetError`` naming the path.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from m2a_core.errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class Sample:
    name: str
    image: Path
    label: Path


@dataclass
class LabelledImages:
    name: str
    kind: str                                     # "anomaly" or "semantic"
    samples: list[Sample]
    convert: Callable[[np.ndarray], np.ndarray]   # raw label array -> our convention
    track: str = "anomaly"                        # SegmentMeIfYouCan component size filters to use
    class_names: tuple[str, ...] = ()             # semantic sets: names of class ids 0..K-1
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    def read_labels(self, sample: Sample) -> np.ndarray:
        raw = read_label_png(sample.label)
        return self.convert(raw).astype(np.uint8)

    def read_image(self, sample: Sample) -> np.ndarray:
        return read_image_rgb(sample.image)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for sample in self.samples:
            image, labels = self.read_image(sample), self.read_labels(sample)
            if image.shape[:2] != labels.shape:
                raise DatasetError(f"{self.name}: image {sample.image} is {image.shape[:2]} but its labels "
                                   f"{sample.label} are {labels.shape}")
            yield sample.name, image, labels


def read_image_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))  # writable: torch.from_numpy warns on read-only
    except (FileNotFoundError, UnidentifiedImageError, OSError, ValueError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from None


def read_label_png(path: Path) -> np.ndarray:
    """A single-channel label image as an integer array (8 or 16 bit); colour images are refused."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P", "I", "I;16", "1"):
                raise DatasetError(f"label image {path} has mode {image.mode}; expected single-channel ids")
            array = np.asarray(image)
    except (FileNotFoundError, UnidentifiedImageError, OSError, ValueError) as exc:
        raise DatasetError(f"cannot read label image {path}: {exc}") from None
    return array.astype(np.int64) if array.dtype != np.uint8 else array


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what}: folder {path} does not exist")
    return path


def images_in(folder: Path, recursive: bool = False) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def pair_by_name(dataset: str, images: list[Path], label_for: Callable[[Path], Path | None],
                 name_for: Callable[[Path], str] = lambda p: p.stem, require_all: bool = True) -> list[Sample]:
    """Pair each image with its label file; a missing label is an error unless ``require_all`` is False."""
    if not images:
        raise DatasetError(f"{dataset}: no images found")
    samples, missing = [], []
    for image in images:
        label = label_for(image)
        if label is None or not label.is_file():
            missing.append(image)
            continue
        samples.append(Sample(name_for(image), image, label))
    if missing and require_all:
        raise DatasetError(f"{dataset}: {len(missing)} image(s) have no label file, e.g. {missing[0]} "
                           f"(expected {label_for(missing[0])})")
    if not samples:
        raise DatasetError(f"{dataset}: none of the {len(images)} images has a label file")
    names = [s.name for s in samples]
    if len(set(names)) != len(names):
        raise DatasetError(f"{dataset}: two images share a name; outputs would collide")
    return samples


def relative_name(root: Path, path: Path, suffix: str) -> str:
    """A flat unique name from a nested path: city/frame_suffix.png -> city_frame."""
    rel = path.relative_to(root).with_suffix("").as_posix()
    if suffix and rel.endswith(suffix):
        rel = rel[: -len(suffix)]
    return rel.replace("/", "_").replace(os.sep, "_")
