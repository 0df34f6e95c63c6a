"""Anomaly benchmarks with 0 inlier / 1 anomaly / 255 void labels after mapping.

Layouts (``--root`` points at the folder named first):
- ``road_anomaly`` (Lis et al. 2019): ``images/<n>.jpg`` + ``labels_masks/<n>.png`` (the layout of the
  official Mask2Anomaly evaluation), or the original release ``frames/<n>.jpg`` +
  ``frames/<n>.labels/labels_semantic.png``. Raw 2 (and 1) = anomaly, 0 = inlier, anything else void.
- ``fs_lost_and_found``, ``fs_static`` (Fishyscapes validation): ``images/<n>.<ext>`` +
  ``labels_masks/<n>.png``, already 0/1/255.
- ``smiyc_anomaly`` (RoadAnomaly21), ``smiyc_obstacle`` (RoadObstacle21): the benchmark's
  ``dataset_AnomalyTrack`` / ``dataset_ObstacleTrack`` folder: ``images/<n>.<ext>`` +
  ``labels_masks/<n>_labels_semantic.png`` (or ``<n>.png``), 0/1/255. Only images with labels (the
  public validation frames) are used.
- ``lost_and_found`` (test split): ``leftImg8bit/test/<city>/<n>_leftImg8bit.png`` +
  ``gtCoarse/test/<city>/<n>_gtCoarse_labelIds.png``; raw 0 (unlabelled) void, 1 (free road) inlier,
  2..200 (obstacles) anomaly.
- ``street_hazards`` (test towns t5, t6): ``test/images/test/<town>/<n>.png`` +
  ``test/annotations/test/<town>/<n>.png``; raw 14 = anomaly, 1 (unlabelled) and 4 ("other") void,
  everything else inlier (as the official Mask2Anomaly StreetHazards script).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from m2a_core.datasets.base import (
    LabelledImages,
    images_in,
    pair_by_name,
    relative_name,
    require_dir,
)


def _as_is(raw: np.ndarray) -> np.ndarray:
    out = np.full(raw.shape, 255, np.uint8)
    out[raw == 0] = 0
    out[raw == 1] = 1
    return out


def _road_anomaly_labels(raw: np.ndarray) -> np.ndarray:
    out = np.full(raw.shape, 255, np.uint8)
    out[raw == 0] = 0
    out[(raw == 1) | (raw == 2)] = 1
    return out


def _lost_and_found_labels(raw: np.ndarray) -> np.ndarray:
    out = np.full(raw.shape, 255, np.uint8)
    out[raw == 1] = 0
    out[(raw >= 2) & (raw <= 200)] = 1
    return out


def street_hazards_anomaly_labels(raw: np.ndarray) -> np.ndarray:
    out = np.zeros(raw.shape, np.uint8)
    out[(raw == 1) | (raw == 4)] = 255
    out[raw == 14] = 1
    out[raw > 14] = 255
    return out


def _images_and_masks(root: Path, dataset: str, label_names: tuple[str, ...], require_all: bool = True):
    images = images_in(require_dir(root / "images", dataset))
    masks = require_dir(root / "labels_masks", dataset)

    def label_for(image: Path) -> Path:
        for pattern in label_names:
            candidate = masks / pattern.format(stem=image.stem)
            if candidate.is_file():
                return candidate
        return masks / label_names[0].format(stem=image.stem)

    return pair_by_name(dataset, images, label_for, require_all=require_all)


def road_anomaly(root: Path) -> LabelledImages:
    if (root / "frames").is_dir() and not (root / "images").is_dir():
        images = images_in(root / "frames")
        samples = pair_by_name("road_anomaly", images,
                               lambda p: p.parent / f"{p.stem}.labels" / "labels_semantic.png")
    else:
        samples = _images_and_masks(root, "road_anomaly", ("{stem}.png",))
    return LabelledImages("road_anomaly", "anomaly", samples, _road_anomaly_labels)


def fs_lost_and_found(root: Path) -> LabelledImages:
    return LabelledImages("fs_lost_and_found", "anomaly",
                          _images_and_masks(root, "fs_lost_and_found", ("{stem}.png",)), _as_is)


def fs_static(root: Path) -> LabelledImages:
    return LabelledImages("fs_static", "anomaly", _images_and_masks(root, "fs_static", ("{stem}.png",)), _as_is)


def smiyc_anomaly(root: Path) -> LabelledImages:
    samples = _images_and_masks(root, "smiyc_anomaly", ("{stem}_labels_semantic.png", "{stem}.png"),
                                require_all=False)
    return LabelledImages("smiyc_anomaly", "anomaly", samples, _as_is, track="anomaly")


def smiyc_obstacle(root: Path) -> LabelledImages:
    samples = _images_and_masks(root, "smiyc_obstacle", ("{stem}_labels_semantic.png", "{stem}.png"),
                                require_all=False)
    return LabelledImages("smiyc_obstacle", "anomaly", samples, _as_is, track="obstacle")


def lost_and_found(root: Path) -> LabelledImages:
    image_root = require_dir(root / "leftImg8bit" / "test", "lost_and_found")
    label_root = require_dir(root / "gtCoarse" / "test", "lost_and_found")

    def label_for(image: Path) -> Path:
        stem = image.name.replace("_leftImg8bit.png", "")
        return label_root / image.parent.name / f"{stem}_gtCoarse_labelIds.png"

    images = [p for p in images_in(image_root, recursive=True) if p.name.endswith("_leftImg8bit.png")]
    samples = pair_by_name("lost_and_found", images, label_for,
                           name_for=lambda p: relative_name(image_root, p, "_leftImg8bit"))
    return LabelledImages("lost_and_found", "anomaly", samples, _lost_and_found_labels, track="obstacle")


def street_hazards_samples(root: Path, towns: tuple[str, ...] = ("t5", "t6")):
    image_root = require_dir(root / "test" / "images" / "test", "street_hazards")
    label_root = require_dir(root / "test" / "annotations" / "test", "street_hazards")
    samples = []
    for town in towns:
        town_images = images_in(require_dir(image_root / town, f"street_hazards town {town}"))
        samples += pair_by_name(f"street_hazards {town}", town_images,
                                lambda p: label_root / p.parent.name / p.name,
                                name_for=lambda p: f"{p.parent.name}_{p.stem}")
    return samples


def street_hazards(root: Path) -> LabelledImages:
    return LabelledImages("street_hazards", "anomaly", street_hazards_samples(root),
                          street_hazards_anomaly_labels)


ANOMALY_DATASETS = {
    "road_anomaly": road_anomaly,
    "fs_lost_and_found": fs_lost_and_found,
    "fs_static": fs_static,
    "smiyc_anomaly": smiyc_anomaly,
    "smiyc_obstacle": smiyc_obstacle,
    "lost_and_found": lost_and_found,
    "street_hazards": street_hazards,
}
