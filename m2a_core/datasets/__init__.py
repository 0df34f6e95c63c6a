"""Readers for the public layouts of the benchmarks, each mapping labels to our convention.

``open_dataset(name, root)`` returns a ``LabelledImages`` (see ``base``); the layouts are documented
in ``anomaly`` (Road Anomaly, Fishyscapes, SegmentMeIfYouCan, Lost&Found, StreetHazards), ``semantic``
(Cityscapes, StreetHazards classes) and ``coco_panoptic`` (COCO panoptic with open-set splits).
"""
from __future__ import annotations

from pathlib import Path

from m2a_core.datasets.anomaly import ANOMALY_DATASETS
from m2a_core.datasets.base import LabelledImages
from m2a_core.datasets.semantic import SEMANTIC_DATASETS
from m2a_core.errors import DatasetError

READERS = {**ANOMALY_DATASETS, **SEMANTIC_DATASETS}
DATASET_NAMES = tuple(READERS)


def open_dataset(name: str, root: str | Path) -> LabelledImages:
    try:
        reader = READERS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}") from None
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{name}: dataset root {root} does not exist")
    return reader(root)
