"""Pixel-level anomaly metrics: AuPRC, FPR at 95 % TPR (three conventions) and AUROC, exact and streaming.

Convention: label 0 = inlier (negative), 1 = anomaly (positive), any other value (255 void, ...) is ignored.
Higher score = more anomalous.

How the accumulator stays exact in bounded memory
-------------------------------------------------
Every one of these metrics depends on the scores only through their order and ties, i.e. through, for
each *distinct* score value, how many anomaly and how many inlier pixels carry it. So instead of keeping
pixels, ``PixelScoreAccumulator`` keeps a sorted table ``value -> (anomaly count, inlier count)``:

- ``update`` collapses the frame's valid pixels to their distinct values (``np.unique``) and counts;
- frame tables wait in a pending list and are merged into the main table (sort + collapse equal values)
  once they hold as many rows as the main table (or ``merge_rows``), so each row is re-sorted only
  O(log n) times over a whole dataset;
- ``compute`` walks the table from the highest value down, exactly like ``sklearn`` walks sorted pixels.

Memory is 24 bytes per distinct score value (float64 value, two int64 counts), never per pixel. Values
are kept as float64, so float16/float32/float64 scores are all represented without rounding and ties are
exactly those of the input. The number of distinct values is bounded by the input's precision: a float32
map has at most 2**23 distinct values per power-of-two interval (e.g. at most ~8.4 M in [0.5, 1)), so
1000 float32 frames of 1024x2048 scores in [2**-10, 1] need at most ~84 M rows (~2 GB) however many
frames there are, and in practice far fewer; the pixels themselves would take 8 GB.
``m2a bench metrics`` prints the rows and the peak memory for a given number of frames.

FPR95 conventions (name one in every report):
- ``FPR95``: FPR at the first threshold (scanning from the highest score down) where TPR >= 0.95
  (Fishyscapes, SegmentMeIfYouCan);
- ``FPR95_strict``: the same with TPR > 0.95 (DenseHybrid);
- ``FPR95_interp``: ``np.interp(0.95, tpr, fpr)`` on sklearn's ``roc_curve`` (default
  ``drop_intermediate=True``), as the official Mask2Anomaly evaluation script computes it.
``AuPRC`` equals ``sklearn.metrics.average_precision_score`` and ``AUROC`` ``roc_auc_score``.
All are fractions in [0, 1]; NaN where undefined (no anomaly pixels, or no inlier pixels for FPR/AUROC).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from m2a_core.errors import M2AError

TPR_TARGET = 0.95


def valid_pixels(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check one frame and return (scores as float64, is_anomaly) for its pixels labelled 0 or 1."""
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.shape != labels.shape:
        raise M2AError(f"score map shape {scores.shape} does not match label shape {labels.shape}")
    if not (np.issubdtype(scores.dtype, np.floating) or np.issubdtype(scores.dtype, np.integer)):
        raise M2AError(f"scores must be a real-valued array, got dtype {scores.dtype}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise M2AError(f"labels must be an integer array, got dtype {labels.dtype}")
    valid = (labels == 0) | (labels == 1)
    values = scores[valid].astype(np.float64, copy=False)
    if np.isnan(values).any():
        raise M2AError("score map has NaN values on labelled pixels")
    return values, labels[valid] == 1


@dataclass(frozen=True)
class ScoreTable:
    """Distinct score values in DESCENDING order with cumulative counts at "score >= value"."""

    thresholds: np.ndarray  # float64 [n], strictly decreasing
    tps: np.ndarray         # int64 [n]: anomaly pixels with score >= thresholds[k]
    fps: np.ndarray         # int64 [n]: inlier pixels with score >= thresholds[k]

    @property
    def num_positive(self) -> int:
        return int(self.tps[-1]) if len(self.tps) else 0

    @property
    def num_negative(self) -> int:
        return int(self.fps[-1]) if len(self.fps) else 0


class PixelScoreAccumulator:
    """Exact pixel metrics over a whole dataset, fed one frame at a time (see the module docstring).

    >>> acc = PixelScoreAccumulator()
    >>> acc.update(np.array([[0.9, 0.1]]), np.array([[1, 0]], np.uint8))
    >>> acc.compute()["AuPRC"]
    1.0
    """

    def __init__(self, merge_rows: int = 1 << 22) -> None:
        self.merge_rows = merge_rows
        self._values = np.empty(0, np.float64)  # ascending, distinct
        self._pos = np.empty(0, np.int64)
        self._neg = np.empty(0, np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_rows = 0
        self.num_frames = 0

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """Add one frame: ``scores`` real [H, W] (higher = more anomalous), ``labels`` integer [H, W]
        with 0 inlier, 1 anomaly, anything else ignored."""
        values, is_anomaly = valid_pixels(scores, labels)
        self.num_frames += 1
        if values.size == 0:
            return
        distinct, inverse = np.unique(values, return_inverse=True)
        pos = np.bincount(inverse[is_anomaly], minlength=distinct.size).astype(np.int64)
        neg = np.bincount(inverse[~is_anomaly], minlength=distinct.size).astype(np.int64)
        self._pending.append((distinct, pos, neg))
        self._pending_rows += distinct.size
        if self._pending_rows >= max(self.merge_rows, self._values.size):
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        parts = [(self._values, self._pos, self._neg), *self._pending]
        self._pending, self._pending_rows = [], 0
        values = np.concatenate([p[0] for p in parts])
        distinct, inverse = np.unique(values, return_inverse=True)
        del values
        # float64 weights are exact for counts below 2**53 pixels.
        self._pos = np.bincount(inverse, weights=np.concatenate([p[1] for p in parts]),
                                minlength=distinct.size).astype(np.int64)
        self._neg = np.bincount(inverse, weights=np.concatenate([p[2] for p in parts]),
                                minlength=distinct.size).astype(np.int64)
        self._values = distinct

    @property
    def num_rows(self) -> int:
        """Distinct score values held (after merging pending frames)."""
        self._merge()
        return int(self._values.size)

    @property
    def nbytes(self) -> int:
        return int(self._values.nbytes + self._pos.nbytes + self._neg.nbytes
                   + sum(a.nbytes + b.nbytes + c.nbytes for a, b, c in self._pending))

    def table(self) -> ScoreTable:
        """The cumulative table every metric is computed from (highest score first)."""
        self._merge()
        return ScoreTable(self._values[::-1].copy(), np.cumsum(self._pos[::-1]), np.cumsum(self._neg[::-1]))

    def compute(self) -> dict[str, float]:
        """AuPRC, FPR95 (>=), FPR95_strict (>), FPR95_interp, AUROC and the pixel counts."""
        return metrics_from_table(self.table())

    def threshold_at_tpr(self, tpr: float = TPR_TARGET) -> float:
        """The score threshold ``t`` such that "score >= t" flags at least ``tpr`` of the anomaly pixels.

        It is the HIGHEST such ``t`` (one of the observed anomaly scores), i.e. the one with the fewest
        false positives; its false-positive rate is this accumulator's ``FPR95`` for ``tpr=0.95``.
        Pixels with score exactly ``t`` count as flagged: compare with ``>=``.
        """
        if not 0.0 < tpr <= 1.0:
            raise M2AError(f"tpr must be in (0, 1], got {tpr}")
        table = self.table()
        if table.num_positive == 0:
            raise M2AError("no anomaly pixels (label 1) seen: a threshold at a true-positive rate is undefined")
        rates = table.tps / table.num_positive
        index = int(np.searchsorted(rates, tpr, side="left"))
        return float(table.thresholds[min(index, len(rates) - 1)])


def roc_points(table: ScoreTable, drop_intermediate: bool) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) starting at (0, 0); with ``drop_intermediate`` the points sklearn's roc_curve keeps."""
    fps, tps = table.fps, table.tps
    if drop_intermediate and fps.size > 2:
        corner = (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0)
        keep = np.flatnonzero(np.concatenate([[True], corner, [True]]))
        fps, tps = fps[keep], tps[keep]
    fps = np.concatenate([[0], fps])
    tps = np.concatenate([[0], tps])
    return fps / table.num_negative, tps / table.num_positive


def metrics_from_table(table: ScoreTable) -> dict[str, float]:
    num_pos, num_neg = table.num_positive, table.num_negative
    result = {
        "AuPRC": math.nan, "FPR95": math.nan, "FPR95_strict": math.nan, "FPR95_interp": math.nan,
        "AUROC": math.nan, "num_anomaly_pixels": num_pos, "num_inlier_pixels": num_neg,
    }
    if num_pos == 0:
        return result
    # Average precision as sklearn: sum over thresholds of (recall step) x (precision there).
    precision = table.tps / (table.tps + table.fps)
    recall_step = np.diff(np.concatenate([[0], table.tps])) / num_pos
    result["AuPRC"] = float(np.sum(recall_step * precision))
    if num_neg == 0:
        return result
    fpr, tpr = roc_points(table, drop_intermediate=False)
    result["AUROC"] = float(np.trapezoid(tpr, fpr))
    result["FPR95"] = float(fpr[np.searchsorted(tpr, TPR_TARGET, side="left")])
    result["FPR95_strict"] = float(fpr[min(np.searchsorted(tpr, TPR_TARGET, side="right"), len(tpr) - 1)])
    fpr_kept, tpr_kept = roc_points(table, drop_intermediate=True)
    result["FPR95_interp"] = float(np.interp(TPR_TARGET, tpr_kept, fpr_kept))
    return result


def pixel_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """One-shot version of ``PixelScoreAccumulator`` for arrays already in memory."""
    accumulator = PixelScoreAccumulator()
    accumulator.update(scores, labels)
    return accumulator.compute()


def curve_points(table: ScoreTable, max_points: int = 2000) -> dict[str, np.ndarray]:
    """PR and ROC curves thinned to at most ``max_points`` points each, for plots."""
    fpr, tpr = roc_points(table, drop_intermediate=True)
    precision = np.concatenate([[1.0], table.tps / np.maximum(table.tps + table.fps, 1)])
    recall = np.concatenate([[0.0], table.tps / max(table.num_positive, 1)])

    def thin(n: int) -> np.ndarray:
        return np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(np.int64))

    roc_keep, pr_keep = thin(len(fpr)), thin(len(recall))
    return {"fpr": fpr[roc_keep], "tpr": tpr[roc_keep], "recall": recall[pr_keep],
            "precision": precision[pr_keep]}
