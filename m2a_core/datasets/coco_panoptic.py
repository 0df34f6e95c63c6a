"""COCO panoptic (2017) with the paper's open-set splits (EOPSN protocol).

Layout (``root``): ``annotations/panoptic_<split>.json``, the PNGs in ``annotations/panoptic_<split>/``
(or ``panoptic_<split>/`` next to ``annotations``, detectron2's layout) and the images in ``<split>/``.
Segment ids are ``R + 256 G + 256^2 B`` of the PNG; id 0 is void.

Open-set splits (cumulative, % of the 80 thing classes): 5 % = car, cow, pizza, toilet; 10 % adds boat, tie,
zebra, stop sign; 20 % adds dining table, banana, bicycle, cake, sink, cat, keyboard, bear. For evaluation
the segments of those classes become one "unknown" thing category (``UNKNOWN_CATEGORY``).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from m2a_core.classes import COCO_OPEN_SET_SPLITS
from m2a_core.datasets.base import read_image_rgb
from m2a_core.errors import DatasetError
from m2a_core.metrics.panoptic import Segment

# The paper's splits, defined once in m2a_core.classes; keyed here by the percentage of unknown things.
OPEN_SET_SPLITS: dict[int, tuple[str, ...]] = {int(k[2:]): v for k, v in COCO_OPEN_SET_SPLITS.items()}
UNKNOWN_CATEGORY = 0  # not a COCO category id


@dataclass(frozen=True)
class PanopticSample:
    name: str
    image: Path
    panoptic: Path
    segments: dict[int, Segment]


class CocoPanoptic:
    def __init__(self, root: str | Path, split: str = "val2017", unknown_percent: int | None = None) -> None:
        root = Path(root)
        annotation = root / "annotations" / f"panoptic_{split}.json"
        if not annotation.is_file():
            raise DatasetError(f"coco_panoptic: annotation file {annotation} does not exist")
        try:
            data = json.loads(annotation.read_text())
            categories = {int(c["id"]): (str(c["name"]), bool(c["isthing"])) for c in data["categories"]}
            annotations = data["annotations"]
            images = {int(im["id"]): im["file_name"] for im in data["images"]}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"coco_panoptic: {annotation} is not a COCO panoptic annotation file ({exc})") from None
        png_dir = next((d for d in (root / "annotations" / f"panoptic_{split}", root / f"panoptic_{split}")
                        if d.is_dir()), None)
        if png_dir is None:
            raise DatasetError(f"coco_panoptic: no PNG folder annotations/panoptic_{split}/ or panoptic_{split}/ "
                               f"in {root}")
        image_dir = root / split
        if not image_dir.is_dir():
            raise DatasetError(f"coco_panoptic: image folder {image_dir} does not exist")

        self.categories = {cid: name for cid, (name, _) in categories.items()}
        self.things = {cid for cid, (_, isthing) in categories.items() if isthing}
        self.unknown_categories: set[int] = set()
        if unknown_percent is not None:
            if unknown_percent not in OPEN_SET_SPLITS:
                raise DatasetError(f"unknown open-set split {unknown_percent} %; choose from {sorted(OPEN_SET_SPLITS)}")
            by_name = {name: cid for cid, name in self.categories.items()}
            missing = [n for n in OPEN_SET_SPLITS[unknown_percent] if n not in by_name]
            if missing:
                raise DatasetError(f"coco_panoptic: categories {missing} of the {unknown_percent} % split are not "
                                   f"in {annotation}")
            self.unknown_categories = {by_name[n] for n in OPEN_SET_SPLITS[unknown_percent]}
        self.samples: list[PanopticSample] = []
        for entry in annotations:
            try:
                image_name = images[int(entry["image_id"])]
                segments = {int(s["id"]): Segment(int(s["category_id"]), bool(s.get("iscrowd", 0)))
                            for s in entry["segments_info"]}
                png = png_dir / entry["file_name"]
            except (KeyError, TypeError, ValueError) as exc:
                raise DatasetError(f"coco_panoptic: malformed annotation entry in {annotation}: {exc}") from None
            self.samples.append(PanopticSample(Path(image_name).stem, image_dir / image_name, png, segments))
        if not self.samples:
            raise DatasetError(f"coco_panoptic: {annotation} has no annotations")

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def known_categories(self) -> dict[int, str]:
        return {c: n for c, n in self.categories.items() if c not in self.unknown_categories}

    def eval_categories(self) -> tuple[dict[int, str], set[int]]:
        """(categories, things) for ``PanopticQuality``: the known ones (the unknown is added by it)."""
        return self.known_categories, self.things - self.unknown_categories

    def read(self, sample: PanopticSample) -> tuple[np.ndarray, np.ndarray, dict[int, Segment]]:
        """(image RGB uint8, segment id map int64, segments with unknown classes relabelled)."""
        image = read_image_rgb(sample.image)
        try:
            with Image.open(sample.panoptic) as png:
                rgb = np.asarray(png.convert("RGB")).astype(np.int64)
        except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
            raise DatasetError(f"cannot read panoptic PNG {sample.panoptic}: {exc}") from None
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
        if ids.shape != image.shape[:2]:
            raise DatasetError(f"panoptic PNG {sample.panoptic} is {ids.shape} but image {sample.image} is "
                               f"{image.shape[:2]}")
        segments = {k: Segment(UNKNOWN_CATEGORY, s.iscrowd) if s.category in self.unknown_categories else s
                    for k, s in sample.segments.items()}
        return image, ids, segments

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray, dict[int, Segment]]]:
        for sample in self.samples:
            yield (sample.name, *self.read(sample))
