"""SegmentMeIfYouCan metrics as its benchmark code computes them: binned pixel curve and component metrics.

Binned pixel curve ("PixBinaryClass", the current leaderboard definition)
    Per frame, over labelled pixels: bin edges = the distinct values of {min - m, max + m} (the frame's
    score range widened by m = max(1 % of the range, 0.01)) plus ``min(384, n)`` evenly spaced quantiles
    (numpy's linear interpolation) of the anomaly pixels' scores and the same of the inlier pixels'
    scores (768 bins in all). Each frame contributes, per bin, its
    anomaly and inlier counts with the bin's LOWER edge as threshold. All frames' (threshold, counts)
    are sorted by threshold, highest first, accumulated, and the curve keeps the first entry and the last
    entry of every run of equal thresholds. Then: AP = sum(diff(recall) * precision[1:]),
    AUROC = trapezoid(tpr, fpr), FPR95 = FPR at the first point with TPR >= 0.95 (1.0 if never),
    and the threshold of the best F1 = 2TP / (2TP + FP + FN) (the component metrics' default threshold).
    The added start point (no predictions) gets threshold max + 1 and an added end point max - 1.
    Memory: at most 768 entries per frame, whatever the image size.

Component metrics ("SegEval")
    Prediction = score > threshold (strict), cleared on void. Ground-truth components (label 1) and
    predicted components, 8-connected. Predicted components smaller than ``min_pred_size`` pixels are
    dropped; ground-truth components smaller than ``min_gt_size`` become void. On the remaining labelled
    pixels: sIoU of a ground-truth component k = |k ∩ P| / (|k| + |P on inlier pixels|) where P is the
    union of the predicted components touching k; PPV of a predicted component = its share of pixels on
    ground-truth anomaly. Over the dataset: sIoU and PPV are means over all components; for each
    t in linspace(0.25, 0.75, 11): TP = #(sIoU >= t), FN = #(sIoU < t), FP = #(PPV < t),
    F1 = 2TP / (2TP + FN + FP); mean F1 = mean of the 11.
    Tracks: anomaly (RoadAnomaly21) 500 / 100 px, obstacle (RoadObstacle21) 50 / 10 px.

Labels: 0 inlier, 1 anomaly, anything else void (the benchmark's own labels are 0/1/255).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from m2a_core.errors import M2AError
from m2a_core.metrics.pixel import TPR_TARGET

NUM_BINS = 768
SIOU_THRESHOLDS = np.linspace(0.25, 0.75, 11, endpoint=True)
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Track:
    name: str
    min_pred_size: int  # predicted components below this many pixels are dropped
    min_gt_size: int    # ground-truth components below this many pixels become void


TRACKS = {
    "anomaly": Track("anomaly", min_pred_size=500, min_gt_size=100),
    "obstacle": Track("obstacle", min_pred_size=50, min_gt_size=10),
}


def get_track(name: str) -> Track:
    try:
        return TRACKS[name]
    except KeyError:
        raise M2AError(f"unknown SegmentMeIfYouCan track {name!r}; choose from {sorted(TRACKS)}") from None


def _check_frame(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise M2AError(f"score map {scores.shape} and labels {labels.shape} must be the same [H, W] shape")
    if not np.issubdtype(labels.dtype, np.integer):
        raise M2AError(f"labels must be an integer array, got dtype {labels.dtype}")
    return scores, labels


class BinnedCurveAccumulator:
    """The benchmark's per-frame percentile-binned pixel curve (see the module docstring)."""

    def __init__(self, num_bins: int = NUM_BINS) -> None:
        self.num_bins = num_bins
        self._thresholds: list[np.ndarray] = []
        self._tp: list[np.ndarray] = []
        self._fp: list[np.ndarray] = []
        self.num_positive = 0
        self.num_negative = 0

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        scores, labels = _check_frame(scores, labels)
        valid = (labels == 0) | (labels == 1)
        # Keep the score dtype: the quantiles are computed in it, as the benchmark does.
        positive, negative = scores[valid & (labels == 1)], scores[valid & (labels == 0)]
        if positive.size + negative.size == 0:
            return  # an all-void frame has no bins
        # Outer edges surround the frame's score range by 1 % of it (at least 0.01).
        low, high = np.min(scores[valid]), np.max(scores[valid])
        margin = np.maximum((high - low) * 1e-2, 1e-2)
        edges = [np.array([low - margin, high + margin])]
        for values in (positive, negative):
            if values.size:
                edges.append(np.quantile(values, np.linspace(0, 1, min(self.num_bins // 2, values.size))))
        bin_edges = np.unique(np.concatenate(edges))
        tp_per_bin, _ = np.histogram(positive, bins=bin_edges)
        fp_per_bin, _ = np.histogram(negative, bins=bin_edges)
        # Highest bin first; a bin's threshold is its lower edge.
        self._thresholds.append(bin_edges[::-1][1:])
        self._tp.append(tp_per_bin[::-1])
        self._fp.append(fp_per_bin[::-1])
        self.num_positive += positive.size
        self.num_negative += negative.size

    def curve(self) -> dict[str, np.ndarray]:
        """tp, fp, fn, tn, thresholds along the collapsed curve (highest threshold first)."""
        if not self._thresholds:
            raise M2AError("no frames were added to the binned curve")
        thresholds = np.concatenate(self._thresholds)
        order = np.argsort(thresholds)[::-1]
        thresholds = thresholds[order]
        tp = np.cumsum(np.concatenate(self._tp)[order].astype(np.float64))
        fp = np.cumsum(np.concatenate(self._fp)[order].astype(np.float64))
        # The first entry, then the last entry of each run of equal thresholds.
        keep = np.concatenate([[0], np.flatnonzero(thresholds[:-1] != thresholds[1:]), [len(thresholds) - 1]])
        tp, fp, thresholds = tp[keep], fp[keep], thresholds[keep]
        fn, tn = self.num_positive - tp, self.num_negative - fp
        return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "thresholds": thresholds}

    def compute(self) -> dict[str, float]:
        """smiyc_AuPRC, smiyc_FPR95 (first TPR >= 0.95), smiyc_AUROC, best_F1 and its threshold."""
        c = self.curve()
        tp, fp, fn, tn, thresholds = c["tp"], c["fp"], c["fn"], c["tn"], c["thresholds"]
        num_pos, num_neg = float(self.num_positive), float(self.num_negative)
        # The curve must start at zero predictions and end at all of them.
        if tp[0] != 0 or fp[0] != 0:
            tp, fp = np.concatenate([[0], tp]), np.concatenate([[0], fp])
            fn, tn = np.concatenate([[num_pos], fn]), np.concatenate([[num_neg], tn])
            thresholds = np.concatenate([[float(np.max(thresholds)) + 1], thresholds])
        if tp[-1] != num_pos or fp[-1] != num_neg:
            tp, fp = np.concatenate([tp, [num_pos]]), np.concatenate([fp, [num_neg]])
            fn, tn = np.concatenate([fn, [0]]), np.concatenate([tn, [0]])
            thresholds = np.concatenate([thresholds, [float(np.max(thresholds)) - 1]])
        with np.errstate(divide="ignore", invalid="ignore"):
            tpr = tp / (tp + fn)
            fpr = fp / (fp + tn)
            predicted = tp + fp
            precision = np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1), 1.0)
            f1 = 2 * tp / (2 * tp + fp + fn)
        result = {"smiyc_AuPRC": math.nan, "smiyc_FPR95": math.nan, "smiyc_AUROC": math.nan,
                  "best_F1": math.nan, "best_F1_threshold": math.nan, "smiyc_FPR95_threshold": math.nan}
        if num_pos == 0:
            return result
        result["smiyc_AuPRC"] = float(np.sum(np.diff(tpr) * precision[1:]))
        if not np.all(np.isnan(f1)):
            best = int(np.nanargmax(f1))
            result["best_F1"] = float(f1[best])
            result["best_F1_threshold"] = float(thresholds[best])
        if num_neg > 0:
            result["smiyc_AUROC"] = float(np.trapezoid(tpr, fpr))
            index = int(np.searchsorted(tpr, TPR_TARGET))
            if index < len(tpr):
                result["smiyc_FPR95"] = float(fpr[index])
                result["smiyc_FPR95_threshold"] = float(thresholds[index])
            else:
                result["smiyc_FPR95"] = 1.0
        return result


@dataclass
class FrameComponents:
    siou: np.ndarray  # one value per ground-truth component
    ppv: np.ndarray   # one value per predicted component


def frame_components(scores: np.ndarray, labels: np.ndarray, threshold: float, track: Track) -> FrameComponents:
    """sIoU of each ground-truth component and PPV of each predicted component in one frame."""
    scores, labels = _check_frame(scores, labels)
    void = (labels != 0) & (labels != 1)
    prediction = (scores > threshold) & ~void
    gt_ids, num_gt = ndimage.label(labels == 1, structure=EIGHT_CONNECTED)
    pred_ids, num_pred = ndimage.label(prediction, structure=EIGHT_CONNECTED)
    pred_sizes = np.bincount(pred_ids.ravel(), minlength=num_pred + 1)
    small_pred = pred_sizes < track.min_pred_size
    small_pred[0] = True
    pred_ids[small_pred[pred_ids]] = 0
    gt_sizes = np.bincount(gt_ids.ravel(), minlength=num_gt + 1)
    small_gt = gt_sizes < track.min_gt_size
    small_gt[0] = False
    roi = ~void & ~small_gt[gt_ids]
    gt_roi = gt_ids[roi].astype(np.int64)
    pred_roi = pred_ids[roi].astype(np.int64)
    # Contingency counts of (ground-truth id, predicted id) pairs, 0 = background / inlier.
    pairs, counts = np.unique(gt_roi * (num_pred + 1) + pred_roi, return_counts=True)
    pair_gt, pair_pred = pairs // (num_pred + 1), pairs % (num_pred + 1)
    on_inlier = np.zeros(num_pred + 1, np.int64)   # predicted pixels on inlier, per predicted component
    size_in_roi = np.zeros(num_pred + 1, np.int64)
    np.add.at(size_in_roi, pair_pred, counts)
    background = pair_gt == 0
    on_inlier[pair_pred[background]] = counts[background]
    gt_size_in_roi = np.bincount(gt_roi, minlength=num_gt + 1)

    siou = []
    overlaps = (pair_gt > 0) & (pair_pred > 0)
    for gt_id in np.unique(gt_roi[gt_roi > 0]):
        touching = overlaps & (pair_gt == gt_id)
        intersection = counts[touching].sum()
        union = gt_size_in_roi[gt_id] + on_inlier[pair_pred[touching]].sum()
        siou.append(intersection / union)
    pred_present = np.flatnonzero(size_in_roi > 0)
    pred_present = pred_present[pred_present > 0]
    ppv = (size_in_roi[pred_present] - on_inlier[pred_present]) / size_in_roi[pred_present]
    return FrameComponents(np.asarray(siou, np.float64), ppv.astype(np.float64))


class ComponentAccumulator:
    """Dataset-level sIoU, PPV and F1 of SegmentMeIfYouCan's component metrics for one threshold."""

    def __init__(self, threshold: float, track: Track | str = "anomaly") -> None:
        self.threshold = float(threshold)
        self.track = get_track(track) if isinstance(track, str) else track
        self._siou: list[np.ndarray] = []
        self._ppv: list[np.ndarray] = []

    def update(self, scores: np.ndarray, labels: np.ndarray) -> FrameComponents:
        frame = frame_components(scores, labels, self.threshold, self.track)
        self._siou.append(frame.siou)
        self._ppv.append(frame.ppv)
        return frame

    def compute(self) -> dict[str, float]:
        siou = np.concatenate(self._siou) if self._siou else np.empty(0)
        ppv = np.concatenate(self._ppv) if self._ppv else np.empty(0)
        result: dict[str, float] = {
            "sIoU": float(siou.mean()) if siou.size else math.nan,
            "PPV": float(ppv.mean()) if ppv.size else math.nan,
            "num_gt_components": int(siou.size), "num_pred_components": int(ppv.size),
            "component_threshold": self.threshold,
        }
        f1_values = []
        for t in SIOU_THRESHOLDS:
            tp = int(np.count_nonzero(siou >= t))
            fn = int(np.count_nonzero(siou < t))
            fp = int(np.count_nonzero(ppv < t))
            f1 = 2 * tp / (2 * tp + fn + fp) if (2 * tp + fn + fp) else math.nan
            f1_values.append(f1)
            percent = round(t * 100)
            if percent in (25, 50, 75):
                result[f"F1_{percent}"] = f1
                result.update({f"TP_{percent}": tp, f"FN_{percent}": fn, f"FP_{percent}": fp})
        result["mean_F1"] = float(np.mean(f1_values))
        return result
