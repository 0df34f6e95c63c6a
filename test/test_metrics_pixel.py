"""Pixel metrics against sklearn, brute-force threshold enumeration and hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from m2a_core.errors import M2AError
from m2a_core.metrics.pixel import PixelScoreAccumulator, curve_points, pixel_metrics


def brute_force_fpr95(scores: np.ndarray, is_anomaly: np.ndarray, strict: bool) -> float:
    """Try every distinct score as a threshold, highest first; return the FPR at the first TPR >= / > 0.95."""
    for threshold in np.sort(np.unique(scores))[::-1]:
        flagged = scores >= threshold
        tpr = flagged[is_anomaly].mean()
        if (tpr > 0.95) if strict else (tpr >= 0.95):
            return float(flagged[~is_anomaly].mean())
    raise AssertionError("unreachable: the lowest threshold flags everything")


def official_fpr95_interp(scores: np.ndarray, is_anomaly: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(is_anomaly, scores)
    return float(np.interp(0.95, tpr, fpr))


def random_frames(seed: int, count: int, with_ties: bool):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        shape = tuple(rng.integers(3, 12, size=2))
        if with_ties:
            scores = (rng.integers(0, 6, size=shape) / 5.0).astype(np.float32)
        else:
            scores = rng.normal(size=shape).astype(np.float32)
        labels = (rng.random(shape) < 0.3).astype(np.uint8)
        scores = scores + labels * rng.random() * 0.8  # anomalies score higher on average
        labels[rng.random(shape) < 0.15] = 255
        frames.append((scores.astype(np.float32), labels))
    return frames


def flatten(frames):
    scores = np.concatenate([s.ravel() for s, _ in frames])
    labels = np.concatenate([lab.ravel() for _, lab in frames])
    valid = labels < 2
    return scores[valid], labels[valid] == 1


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("with_ties", [False, True])
def test_streaming_matches_sklearn_and_brute_force(seed: int, with_ties: bool) -> None:
    frames = random_frames(seed, count=7, with_ties=with_ties)
    accumulator = PixelScoreAccumulator(merge_rows=5)  # small: exercise many merges
    for scores, labels in frames:
        accumulator.update(scores, labels)
    result = accumulator.compute()
    scores, is_anomaly = flatten(frames)
    assert result["num_anomaly_pixels"] == is_anomaly.sum()
    assert result["num_inlier_pixels"] == (~is_anomaly).sum()
    assert result["AuPRC"] == pytest.approx(average_precision_score(is_anomaly, scores), abs=1e-12)
    assert result["AUROC"] == pytest.approx(roc_auc_score(is_anomaly, scores), abs=1e-12)
    assert result["FPR95"] == pytest.approx(brute_force_fpr95(scores, is_anomaly, strict=False), abs=1e-12)
    assert result["FPR95_strict"] == pytest.approx(brute_force_fpr95(scores, is_anomaly, strict=True), abs=1e-12)
    assert result["FPR95_interp"] == pytest.approx(official_fpr95_interp(scores, is_anomaly), abs=1e-12)


def test_float64_scores_keep_differences_below_float32_precision() -> None:
    # 1 + 1e-12 and 1 are equal in float32; the accumulator must not merge them.
    scores = np.array([[1.0 + 1e-12, 1.0]])
    labels = np.array([[1, 0]], np.uint8)
    assert pixel_metrics(scores, labels)["AuPRC"] == 1.0
    assert pixel_metrics(scores.astype(np.float32), labels)["AuPRC"] == 0.5


def test_hand_computed_case() -> None:
    # Descending: 0.9 (A), 0.8 (I), 0.7 (A), 0.1 (I). AP = 1/2*1 + 1/2*2/3; AUROC: 3 of 4 pairs ordered.
    scores = np.array([[0.9, 0.8, 0.7, 0.1]], np.float32)
    labels = np.array([[1, 0, 1, 0]], np.uint8)
    result = pixel_metrics(scores, labels)
    assert result["AuPRC"] == pytest.approx(0.5 + 1 / 3)
    assert result["AUROC"] == pytest.approx(0.75)
    # TPR reaches 1.0 (>= and > 0.95) at threshold 0.7, where one inlier of two is flagged.
    assert result["FPR95"] == pytest.approx(0.5)
    assert result["FPR95_strict"] == pytest.approx(0.5)
    # Interpolating between (fpr 0.5, tpr 0.5) and (0.5, 1.0) on sklearn's curve gives 0.5.
    assert result["FPR95_interp"] == pytest.approx(0.5)


def test_conventions_differ_exactly_at_95_percent() -> None:
    # 20 anomalies: 19 score 0.9, one 0.1; inliers: one at 0.5, one at 0.05. TPR is exactly 0.95 at 0.9.
    scores = np.array([0.9] * 19 + [0.1] + [0.5, 0.05], np.float32)[None]
    labels = np.array([1] * 20 + [0, 0], np.uint8)[None]
    result = pixel_metrics(scores, labels)
    assert result["FPR95"] == 0.0           # first TPR >= 0.95 is at 0.9, no inlier above it
    assert result["FPR95_strict"] == 0.5    # first TPR > 0.95 is at 0.1 (the 0.5 inlier is flagged)
    assert result["FPR95_interp"] == pytest.approx(official_fpr95_interp(scores.ravel(), labels.ravel() == 1))


def test_constant_scores() -> None:
    scores = np.full((4, 4), 0.3, np.float32)
    labels = np.zeros((4, 4), np.uint8)
    labels[:2] = 1
    result = pixel_metrics(scores, labels)
    assert result["AuPRC"] == pytest.approx(0.5)       # one threshold: precision = prevalence
    assert result["AUROC"] == pytest.approx(0.5)
    assert result["FPR95"] == 1.0
    assert result["FPR95_interp"] == pytest.approx(0.95)  # sklearn's curve is the diagonal (0,0)-(1,1)


def test_frames_without_anomalies_and_all_void_frames() -> None:
    frames = random_frames(3, count=4, with_ties=False)
    accumulator = PixelScoreAccumulator()
    for scores, labels in frames:
        accumulator.update(scores, labels)
    expected = accumulator.compute()
    # Adding an inlier-only frame changes the result like sklearn says; an all-void frame changes nothing.
    inliers = np.random.default_rng(9).normal(size=(5, 5)).astype(np.float32)
    accumulator.update(inliers, np.zeros((5, 5), np.uint8))
    accumulator.update(np.ones((5, 5), np.float32), np.full((5, 5), 255, np.uint8))
    frames.append((inliers, np.zeros((5, 5), np.uint8)))
    scores, is_anomaly = flatten(frames)
    result = accumulator.compute()
    assert result["AuPRC"] == pytest.approx(average_precision_score(is_anomaly, scores), abs=1e-12)
    assert result["AuPRC"] != pytest.approx(expected["AuPRC"], abs=1e-9)
    assert accumulator.num_frames == 6


def test_undefined_metrics_are_nan() -> None:
    only_void = pixel_metrics(np.zeros((3, 3)), np.full((3, 3), 255, np.uint8))
    assert all(math.isnan(only_void[k]) for k in ("AuPRC", "FPR95", "AUROC"))
    no_anomaly = pixel_metrics(np.arange(4.0).reshape(2, 2), np.zeros((2, 2), np.uint8))
    assert math.isnan(no_anomaly["AuPRC"]) and math.isnan(no_anomaly["AUROC"])
    no_inlier = pixel_metrics(np.arange(4.0).reshape(2, 2), np.ones((2, 2), np.uint8))
    assert no_inlier["AuPRC"] == 1.0
    assert math.isnan(no_inlier["FPR95"]) and math.isnan(no_inlier["AUROC"])


@pytest.mark.parametrize("tpr", [0.5, 0.9, 0.95, 1.0])
def test_threshold_at_tpr_is_the_highest_reaching_threshold(tpr: float) -> None:
    frames = random_frames(5, count=3, with_ties=True)
    accumulator = PixelScoreAccumulator()
    for scores, labels in frames:
        accumulator.update(scores, labels)
    threshold = accumulator.threshold_at_tpr(tpr)
    scores, is_anomaly = flatten(frames)
    assert (scores[is_anomaly] >= threshold).mean() >= tpr
    higher = scores[is_anomaly][scores[is_anomaly] > threshold]
    if higher.size:  # any higher observed anomaly score as threshold would miss the target
        assert (scores[is_anomaly] >= higher.min()).mean() < tpr
    if tpr == 0.95:
        assert (scores[~is_anomaly] >= threshold).mean() == pytest.approx(accumulator.compute()["FPR95"])


def test_bad_input_is_named() -> None:
    accumulator = PixelScoreAccumulator()
    with pytest.raises(M2AError, match="shape"):
        accumulator.update(np.zeros((2, 3)), np.zeros((3, 2), np.uint8))
    with pytest.raises(M2AError, match="NaN"):
        accumulator.update(np.array([[np.nan]]), np.zeros((1, 1), np.uint8))
    with pytest.raises(M2AError, match="anomaly pixels"):
        accumulator.threshold_at_tpr(0.95)
    with pytest.raises(M2AError, match="tpr"):
        accumulator.threshold_at_tpr(0.0)


def test_mixed_precision_frames_and_wide_counts() -> None:
    # float32 frames first, then a float64 frame: the table widens without changing any result.
    frames = random_frames(11, count=3, with_ties=False)
    frames.append((frames[0][0].astype(np.float64) + 1e-9, frames[0][1]))
    accumulator = PixelScoreAccumulator(merge_rows=1)
    for scores, labels in frames:
        accumulator.update(scores, labels)
    accumulator._widen(np.dtype(np.float32), total_pixels=2**32)  # as if 4 G pixels had been seen
    assert accumulator._pos.dtype == np.int64
    scores, is_anomaly = flatten([(s.astype(np.float64), lab) for s, lab in frames])
    assert accumulator.compute()["AuPRC"] == pytest.approx(average_precision_score(is_anomaly, scores), abs=1e-12)


def test_curve_points_for_plots() -> None:
    frames = random_frames(2, count=3, with_ties=True)
    accumulator = PixelScoreAccumulator()
    for scores, labels in frames:
        accumulator.update(scores, labels)
    curves = curve_points(accumulator.table(), max_points=50)
    assert (curves["fpr"][0], curves["tpr"][0]) == (0.0, 0.0)
    assert (curves["fpr"][-1], curves["tpr"][-1]) == (1.0, 1.0)
    assert np.all(np.diff(curves["fpr"]) >= 0) and np.all(np.diff(curves["recall"]) >= 0)
    assert curves["recall"][-1] == 1.0 and len(curves["fpr"]) <= 2 * 50 + 3
