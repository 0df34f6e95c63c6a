"""Semantic benchmarks with class-id labels (255 void, ``UNKNOWN_ID`` for anomalies).

Layouts (``--root`` points at the folder named first):
- ``cityscapes`` (validation): ``leftImg8bit/val/<city>/<n>_leftImg8bit.png`` +
  ``gtFine/val/<city>/<n>_gtFine_labelTrainIds.png`` (trainIds 0..18, 255 void; made by
  cityscapesscripts' createTrainIdLabelImgs).
- ``street_hazards_semantic`` (test towns t5, t6; open-set): the ``street_hazards`` layout; raw values
  are class + 1. As DenseHybrid's open-set protocol (and Mask2Anomaly's 13-class training): raw 1
  ("unlabeled", the background) is known class 0, raw 4 ("other") void, the other raw 2..13 the known
  classes 1..11, raw 14 the anomaly -> ``UNKNOWN_ID``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from m2a_core.classes import CITYSCAPES, IGNORE_ID, STREETHAZARDS, UNKNOWN_ID
from m2a_core.datasets.anomaly import street_hazards_samples
from m2a_core.datasets.base import LabelledImages, images_in, pair_by_name, relative_name, require_dir
from m2a_core.errors import DatasetError

STREET_HAZARDS_CLASSES = STREETHAZARDS.names  # the vocabulary lives in m2a_core.classes


def _cityscapes_labels(raw: np.ndarray) -> np.ndarray:
    out = raw.astype(np.uint8)
    bad = (raw > 18) & (raw != IGNORE_ID)
    if bad.any():
        raise DatasetError(f"cityscapes labels hold values {np.unique(raw[bad])[:8].tolist()} that are not "
                           "trainIds (0..18, 255): use the *_gtFine_labelTrainIds.png files")
    return out


def _street_hazards_labels(raw: np.ndarray) -> np.ndarray:
    out = np.full(raw.shape, IGNORE_ID, np.uint8)
    out[raw == 1] = 0
    out[(raw == 2) | (raw == 3)] = raw[(raw == 2) | (raw == 3)] - 1
    known = (raw >= 5) & (raw <= 13)
    out[known] = (raw[known] - 2).astype(np.uint8)
    out[raw == 14] = UNKNOWN_ID
    return out


def cityscapes(root: Path, split: str = "val") -> LabelledImages:
    image_root = require_dir(root / "leftImg8bit" / split, "cityscapes")
    label_root = require_dir(root / "gtFine" / split, "cityscapes")
    images = [p for p in images_in(image_root, recursive=True) if p.name.endswith("_leftImg8bit.png")]

    def label_for(image: Path) -> Path:
        stem = image.name.replace("_leftImg8bit.png", "")
        return label_root / image.parent.name / f"{stem}_gtFine_labelTrainIds.png"

    samples = pair_by_name("cityscapes", images, label_for,
                           name_for=lambda p: relative_name(image_root, p, "_leftImg8bit"))
    return LabelledImages("cityscapes", "semantic", samples, _cityscapes_labels, class_names=CITYSCAPES.names)


def street_hazards_semantic(root: Path) -> LabelledImages:
    return LabelledImages("street_hazards_semantic", "semantic", street_hazards_samples(root),
                          _street_hazards_labels, class_names=STREET_HAZARDS_CLASSES)


SEMANTIC_DATASETS = {"cityscapes": cityscapes, "street_hazards_semantic": street_hazards_semantic}
