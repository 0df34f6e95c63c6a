"""Open-set semantic segmentation (paper Eq. 14): known-class argmax, "unknown" where the anomaly score is high.

Convention (the same one ``m2a calibrate`` uses to pick the threshold): a pixel is unknown when
``anomaly >= threshold``. The threshold from ``PixelScoreAccumulator.threshold_at_tpr`` is the highest value
for which "score >= threshold" flags at least the requested share of anomaly pixels, so using ``>=`` here
reproduces the calibrated true-positive rate exactly on the calibration set.

Label ids: 0..K-1 known classes, ``UNKNOWN_ID`` (254) unknown, ``IGNORE_ID`` (255) is never produced here
(it stays "void" for ground truth).
"""
from __future__ import annotations

import math

import torch

from m2a_core.classes import IGNORE_ID, UNKNOWN_ID


def check_unknown_id(unknown_id: int, num_classes: int | None = None) -> None:
    """An unknown id must fit a uint8 label image and collide with neither a class id nor "ignore"."""
    if not 0 <= unknown_id <= 255:
        raise ValueError(f"unknown_id must fit a uint8 label image (0..255), got {unknown_id}")
    if unknown_id == IGNORE_ID:
        raise ValueError(f"unknown_id {unknown_id} collides with the ignore id {IGNORE_ID}")
    if num_classes is not None and unknown_id < num_classes:
        raise ValueError(f"unknown_id {unknown_id} collides with class id {unknown_id} of {num_classes} classes")


def openset_semantic(semseg: torch.Tensor, anomaly: torch.Tensor, threshold: float,
                     unknown_id: int = UNKNOWN_ID, num_classes: int | None = None) -> torch.Tensor:
    """uint8 [H, W] labels: ``semseg`` where ``anomaly < threshold``, ``unknown_id`` where ``anomaly >= threshold``.

    ``semseg`` is the argmax of the class map (integer [H, W], ids < 255) and ``anomaly`` the score map of
    the same shape, both on the same device. ``num_classes`` (when given) checks the ids do not collide.
    """
    if semseg.shape != anomaly.shape or semseg.dim() != 2:
        raise ValueError(f"semseg {tuple(semseg.shape)} and anomaly {tuple(anomaly.shape)} must be the same [H, W]")
    if semseg.dtype.is_floating_point or semseg.dtype == torch.bool:
        raise ValueError(f"semseg must hold integer class ids, got {semseg.dtype}")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    check_unknown_id(unknown_id, num_classes)
    labels = semseg.to(torch.uint8)
    return torch.where(anomaly >= threshold, torch.full_like(labels, unknown_id), labels)
