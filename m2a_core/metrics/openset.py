"""Open-set semantic segmentation metrics: open-IoU, open-mIoU and unknown IoU (DenseHybrid's definitions).

A prediction labels each pixel with a known class id or ``UNKNOWN_ID`` (score above a threshold).
One confusion matrix over the split, rows = ground truth (known classes and the anomaly class),
columns = prediction (known classes and "unknown"); other ground-truth values are ignored.

- open-IoU of known class c = TP / (TP + FP + FN): anomaly pixels predicted as c are false positives
  of c, pixels of c rejected as unknown are false negatives of c;
- open-mIoU = mean over the known classes (classes absent from both ground truth and prediction, whose
  IoU is 0/0, are left out, as ``np.nanmean``);
- unknown IoU = IoU of the anomaly row/"unknown" column.

StreetHazards protocol (``street_hazards_open_miou``): for each test town (t5, t6), the threshold is the
one that reaches TPR > 0.95 on the OTHER town's pixels (first such point of sklearn's ROC curve), a pixel
is unknown when its score is strictly above it, and the towns' open-mIoUs are averaged weighted by image
count. (DenseHybrid calibrates on score maps downsampled by 2; we calibrate at full resolution.)
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

from m2a_core.classes import UNKNOWN_ID
from m2a_core.errors import M2AError
from m2a_core.metrics.pixel import PixelScoreAccumulator, ScoreTable

OpenSetFrame = tuple[str, np.ndarray, np.ndarray, np.ndarray]  # (name, scores, semseg, labels)


def open_set_labels(semseg: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Closed-set class map with every pixel scoring strictly above ``threshold`` relabelled unknown."""
    if semseg.shape != scores.shape:
        raise M2AError(f"semantic map {semseg.shape} and score map {scores.shape} differ in shape")
    labels = semseg.astype(np.uint8, copy=True)
    labels[scores > threshold] = UNKNOWN_ID
    return labels


class OpenSetIoU:
    """Streaming confusion matrix of open-set predictions; ``compute`` gives open-IoU per class."""

    def __init__(self, num_classes: int, class_names: tuple[str, ...] = (), unknown_id: int = UNKNOWN_ID) -> None:
        if not 0 < num_classes < unknown_id:
            raise M2AError(f"num_classes must be in 1..{unknown_id - 1}, got {num_classes}")
        self.num_classes = num_classes
        self.unknown_id = unknown_id
        self.class_names = class_names or tuple(str(c) for c in range(num_classes))
        self.confusion = np.zeros((num_classes + 1, num_classes + 1), np.int64)

    def _index(self, values: np.ndarray) -> np.ndarray:
        index = values.astype(np.int64)
        index[values == self.unknown_id] = self.num_classes
        return index

    def update(self, prediction: np.ndarray, labels: np.ndarray) -> None:
        """``prediction``: class ids or ``unknown_id``; ``labels``: class ids, ``unknown_id`` for anomalies,
        anything else ignored."""
        prediction, labels = np.asarray(prediction), np.asarray(labels)
        if prediction.shape != labels.shape:
            raise M2AError(f"prediction {prediction.shape} and labels {labels.shape} differ in shape")
        valid = (labels < self.num_classes) | (labels == self.unknown_id)
        predicted = prediction[valid]
        bad = (predicted >= self.num_classes) & (predicted != self.unknown_id)
        if bad.any():
            raise M2AError(f"prediction holds ids {np.unique(predicted[bad])[:8].tolist()} that are neither a "
                           f"class (< {self.num_classes}) nor unknown ({self.unknown_id})")
        pairs = self._index(labels[valid]) * (self.num_classes + 1) + self._index(predicted)
        self.confusion += np.bincount(pairs, minlength=(self.num_classes + 1) ** 2).reshape(self.confusion.shape)

    def compute(self) -> dict:
        tp = np.diag(self.confusion).astype(np.float64)
        fp = self.confusion.sum(0) - tp
        fn = self.confusion.sum(1) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = tp / (tp + fp + fn)
        known = iou[: self.num_classes]
        present = ~np.isnan(known)
        return {
            "open_IoU": {name: (None if math.isnan(v) else float(v)) for name, v in zip(self.class_names, known,
                                                                                      strict=True)},
            "open_mIoU": float(known[present].mean()) if present.any() else math.nan,
            "unknown_IoU": float(iou[-1]),
        }


def first_threshold_above_tpr(table: ScoreTable, tpr: float = 0.95) -> float:
    """Threshold of the first point of sklearn's ``roc_curve`` (``drop_intermediate=True``) with TPR > tpr."""
    fps, tps, thresholds = table.fps, table.tps, table.thresholds
    if table.num_positive == 0:
        raise M2AError("no anomaly pixels to calibrate the open-set threshold on")
    if fps.size > 2:
        corner = (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0)
        keep = np.flatnonzero(np.concatenate([[True], corner, [True]]))
        tps, thresholds = tps[keep], thresholds[keep]
    index = int(np.searchsorted(tps / table.num_positive, tpr, side="right"))
    return float(thresholds[min(index, len(thresholds) - 1)])


def street_hazards_open_miou(towns: dict[str, Callable[[], Iterable[OpenSetFrame]]], num_classes: int,
                             class_names: tuple[str, ...] = (), tpr: float = 0.95) -> dict:
    """DenseHybrid's StreetHazards protocol over frame sources per town (each called twice)."""
    if len(towns) != 2:
        raise M2AError(f"the protocol needs exactly two towns, got {sorted(towns)}")
    thresholds, counts = {}, {}
    for town, source in towns.items():
        accumulator = PixelScoreAccumulator()
        for _, scores, _, labels in source():
            binary = np.full(labels.shape, 255, np.uint8)
            binary[labels < num_classes] = 0
            binary[labels == UNKNOWN_ID] = 1
            accumulator.update(scores, binary)
        thresholds[town] = first_threshold_above_tpr(accumulator.table(), tpr)
        counts[town] = accumulator.num_frames
    results: dict = {"per_town": {}}
    for town, source in towns.items():
        other = next(t for t in towns if t != town)
        metric = OpenSetIoU(num_classes, class_names)
        for _, scores, semseg, labels in source():
            metric.update(open_set_labels(semseg, scores, thresholds[other]), labels)
        results["per_town"][town] = {**metric.compute(), "threshold": thresholds[other],
                                     "threshold_from": other, "num_frames": counts[town]}
    total = sum(counts.values())
    results["open_mIoU"] = sum(r["open_mIoU"] * counts[t] for t, r in results["per_town"].items()) / total
    results["unknown_IoU"] = sum(r["unknown_IoU"] * counts[t] for t, r in results["per_town"].items()) / total
    return results
