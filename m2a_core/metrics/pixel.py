"""Pixel-level anomaly metrics: AuPRC, FPR at 95 % TPR (three conventions) and AUROC, exact and streaming.

Convention: label 0 = inlier (negative), 1 = anomaly (positive), any other value (255 void, ...) is ignored.
Higher score = more anomalous.

How the accumulator stays exact in bounded memory
-------------------------------------------------
Every one of these metrics depends on the scores only through their order and ties, i.e. through, for
each *distinct* score value, how many anomaly and how many inlier pixels carry it. So instead of keeping
pixels, ``PixelScoreAccumulator`` keeps a sorted table ``value -> (anomaly count, inlier count)``:

- ``update`` collapses the frame's valid pixels to their distinct values (``np.unique``) and counts;
- frame tables wait in a pending list; once they hold ``merge_rows`` rows (or a quarter of the main
  table) they are collapsed together and merged into the sorted main table (``searchsorted``: counts of
  values already present are added, new values inserted in order);
- ``compute`` walks the table from the highest value down, exactly like ``sklearn`` walks sorted pixels.

Memory is per distinct score value, never per pixel: 12 bytes (float32 value, two uint32 counts) for
float16/float32 scores, 16 for float64 (or integer) scores; counts switch to int64 once the pixels seen
could overflow uint32. Values are stored in the input's own precision (float32 keys widen to float64 if
a float64 frame arrives), so ties are exactly those of the input and nothing is rounded. The number of
distinct values is bounded by the input's precision: a float32 map has at most 2**23 distinct values
per power-of-two interval (~8.4 M in [0.5, 1)), so float32 scores in [2**-10, 1] need at most ~84 M rows
(~1 GB) however many frames there are, and in practice far fewer; 1000 frames of 1024x2048 pixels would
take 10 GB. While merging and computing, peak memory is about four times the table.
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


def _valid_values(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check one frame and return (scores, is_anomaly) for its pixels labelled 0 or 1 (scores keep their
    floating dtype; integers become float64)."""
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.shape != labels.shape:
        raise M2AError(f"score map shape {scores.shape} does not match label shape {labels.shape}")
    if not (np.issubdtype(scores.dtype, np.floating) or np.issubdtype(scores.dtype, np.integer)):
        raise M2AError(f"scores must be a real-valued array, got dtype {scores.dtype}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise M2AError(f"labels must be an integer array, got dtype {labels.dtype}")
    valid = (labels == 0) | (labels == 1)
    values = scores[valid]
    if not np.issubdtype(values.dtype, np.floating) or values.dtype.itemsize > 8:
        values = values.astype(np.float64)
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
        self._key_dtype: np.dtype = np.dtype(np.float32)
        self._count_dtype: np.dtype = np.dtype(np.uint32)
        self._values = np.empty(0, self._key_dtype)  # ascending, distinct
        self._pos = np.empty(0, self._count_dtype)
        self._neg = np.empty(0, self._count_dtype)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_rows = 0
        self._pixels = 0
        self.num_frames = 0

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """Add one frame: ``scores`` real [H, W] (higher = more anomalous), ``labels`` integer [H, W]
        with 0 inlier, 1 anomaly, anything else ignored."""
        values, is_anomaly = _valid_values(scores, labels)
        self.num_frames += 1
        if values.size == 0:
            return
        self._widen(values.dtype, self._pixels + values.size)
        self._pixels += values.size
        distinct, inverse = np.unique(values.astype(self._key_dtype, copy=False), return_inverse=True)
        pos = np.bincount(inverse[is_anomaly], minlength=distinct.size)
        neg = np.bincount(inverse, minlength=distinct.size) - pos
        self._pending.append((distinct, pos.astype(self._count_dtype), neg.astype(self._count_dtype)))
        self._pending_rows += distinct.size
        if self._pending_rows >= max(self.merge_rows, self._values.size // 4):
            self._merge()

    def _widen(self, value_dtype: np.dtype, total_pixels: int) -> None:
        """float32 keys until a float64 (or integer) frame arrives; uint32 counts until they could overflow."""
        key_dtype = np.dtype(np.float32) if value_dtype in (np.float16, np.float32) else np.dtype(np.float64)
        count_dtype = np.dtype(np.int64) if total_pixels > np.iinfo(np.uint32).max else self._count_dtype
        key_dtype = np.promote_types(self._key_dtype, key_dtype)
        if key_dtype == self._key_dtype and count_dtype == self._count_dtype:
            return
        self._key_dtype, self._count_dtype = key_dtype, count_dtype
        self._values = self._values.astype(key_dtype)
        self._pos, self._neg = self._pos.astype(count_dtype), self._neg.astype(count_dtype)
        self._pending = [(v.astype(key_dtype), p.astype(count_dtype), n.astype(count_dtype))
                         for v, p, n in self._pending]

    def _merge(self) -> None:
        if not self._pending:
            return
        # Collapse the pending frames into one sorted table...
        if len(self._pending) == 1:
            values, pos, neg = self._pending[0]
        else:
            values, inverse = np.unique(np.concatenate([p[0] for p in self._pending]), return_inverse=True)
            # float64 weights are exact for counts below 2**53.
            pos = np.bincount(inverse, weights=np.concatenate([p[1] for p in self._pending]),
                              minlength=values.size).astype(self._count_dtype)
            neg = np.bincount(inverse, weights=np.concatenate([p[2] for p in self._pending]),
                              minlength=values.size).astype(self._count_dtype)
            del inverse
        self._pending, self._pending_rows = [], 0
        # ...then merge it into the main table: add counts of values already there, insert the others.
        index = np.searchsorted(self._values, values)
        found = index < self._values.size
        found[found] = self._values[index[found]] == values[found]
        self._pos[index[found]] += pos[found]
        self._neg[index[found]] += neg[found]
        new = ~found
        self._values = np.insert(self._values, index[new], values[new])
        self._pos = np.insert(self._pos, index[new], pos[new])
        self._neg = np.insert(self._neg, index[new], neg[new])

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
        return ScoreTable(self._values[::-1].astype(np.float64), np.cumsum(self._pos[::-1], dtype=np.int64),
                          np.cumsum(self._neg[::-1], dtype=np.int64))

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


CHUNK = 1 << 20  # rows per step in metrics_from_table: bounds its temporaries


def metrics_from_table(table: ScoreTable) -> dict[str, float]:
    num_pos, num_neg = table.num_positive, table.num_negative
    result = {
        "AuPRC": math.nan, "FPR95": math.nan, "FPR95_strict": math.nan, "FPR95_interp": math.nan,
        "AUROC": math.nan, "num_anomaly_pixels": num_pos, "num_inlier_pixels": num_neg,
    }
    if num_pos == 0:
        return result
    # Average precision as sklearn: sum over thresholds of (recall step) x (precision there).
    # AUROC: trapezoids between consecutive thresholds, starting from (0, 0).
    ap = area = 0.0
    previous_tp = previous_fp = 0
    for start in range(0, len(table.tps), CHUNK):
        tps = table.tps[start: start + CHUNK]
        fps = table.fps[start: start + CHUNK]
        tp_steps = np.diff(tps, prepend=previous_tp)
        ap += float(np.dot(tp_steps, tps / (tps + fps)))
        fp_steps = np.diff(fps, prepend=previous_fp)
        area += float(np.dot(fp_steps, (tps + np.concatenate([[previous_tp], tps[:-1]])).astype(np.float64)))
        previous_tp, previous_fp = int(tps[-1]), int(fps[-1])
    result["AuPRC"] = ap / num_pos
    if num_neg == 0:
        return result
    result["AUROC"] = area / (2.0 * num_pos * num_neg)
    # TPR is non-decreasing along the table: binary searches find the FPR95 points.
    rates = _LazyRates(table.tps, num_pos)
    first_reaching = rates.search(TPR_TARGET, strict=False)
    result["FPR95"] = float(table.fps[first_reaching] / num_neg)
    result["FPR95_strict"] = float(table.fps[rates.search(TPR_TARGET, strict=True)] / num_neg)
    # sklearn's roc_curve only drops collinear points, so interpolating on the full curve is the same;
    # np.interp at a TPR hit exactly takes the last point with that TPR.
    above = rates.search(TPR_TARGET, strict=True)
    below = above - 1
    tpr_below = table.tps[below] / num_pos if below >= 0 else 0.0
    fpr_below = table.fps[below] / num_neg if below >= 0 else 0.0
    tpr_above, fpr_above = table.tps[above] / num_pos, table.fps[above] / num_neg
    if tpr_below == TPR_TARGET:
        result["FPR95_interp"] = float(fpr_below)
    else:
        weight = (TPR_TARGET - tpr_below) / (tpr_above - tpr_below)
        result["FPR95_interp"] = float(fpr_below + weight * (fpr_above - fpr_below))
    return result


class _LazyRates:
    """Binary search for the first index with tps/num_pos >= (or >) a rate, without a full float array."""

    def __init__(self, tps: np.ndarray, num_pos: int) -> None:
        self.tps, self.num_pos = tps, num_pos

    def search(self, rate: float, strict: bool) -> int:
        low, high = 0, len(self.tps) - 1  # the last row has TPR 1, so it always qualifies
        while low < high:
            middle = (low + high) // 2
            value = self.tps[middle] / self.num_pos
            if (value > rate) if strict else (value >= rate):
                high = middle
            else:
                low = middle + 1
        return low


def pixel_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """One-shot version of ``PixelScoreAccumulator`` for arrays already in memory."""
    accumulator = PixelScoreAccumulator()
    accumulator.update(scores, labels)
    return accumulator.compute()


def curve_points(table: ScoreTable, max_points: int = 2000) -> dict[str, np.ndarray]:
    """PR and ROC curves at about ``max_points`` points each (evenly spaced in recall and FPR), for plots."""
    num_pos, num_neg = max(table.num_positive, 1), max(table.num_negative, 1)
    grid = np.linspace(0, 1, max_points)
    last = len(table.tps) - 1
    by_recall = np.unique(np.minimum(np.searchsorted(table.tps, grid * num_pos), last))
    by_fpr = np.unique(np.concatenate([[0, last], np.minimum(np.searchsorted(table.fps, grid * num_neg), last)]))
    # Both ends of each FPR step, so vertical ROC segments keep their shape.
    by_fpr = np.unique(np.concatenate([by_fpr, np.maximum(by_fpr - 1, 0)]))
    tps_r, fps_r = table.tps[by_recall], table.fps[by_recall]
    return {
        "fpr": np.concatenate([[0.0], table.fps[by_fpr] / num_neg]),
        "tpr": np.concatenate([[0.0], table.tps[by_fpr] / num_pos]),
        "recall": np.concatenate([[0.0], tps_r / num_pos]),
        "precision": np.concatenate([[1.0], tps_r / np.maximum(tps_r + fps_r, 1)]),
    }
