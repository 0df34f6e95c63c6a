"""Open-IoU against hand-computed cases and sklearn; the StreetHazards cross-town protocol."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import jaccard_score, roc_curve

from m2a_core.classes import UNKNOWN_ID
from m2a_core.errors import M2AError
from m2a_core.metrics.openset import (
    OpenSetIoU,
    first_threshold_above_tpr,
    open_set_labels,
    street_hazards_open_miou,
)
from m2a_core.metrics.pixel import PixelScoreAccumulator

U = UNKNOWN_ID


def test_open_iou_hand_computed() -> None:
    labels = np.array([[0, 0, 1, 1, U, U, 255]], np.uint8)
    prediction = np.array([[0, U, 1, 0, U, 1, 0]], np.uint8)
    metric = OpenSetIoU(2, ("a", "b"))
    metric.update(prediction, labels)
    result = metric.compute()
    # Class a: TP 1, FP 1 (a "b" pixel), FN 1 (rejected). Class b: TP 1, FP 1 (anomaly as b), FN 1.
    assert result["open_IoU"] == pytest.approx({"a": 1 / 3, "b": 1 / 3})
    assert result["open_mIoU"] == pytest.approx(1 / 3)
    assert result["unknown_IoU"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("seed", range(5))
def test_open_iou_matches_sklearn_jaccard(seed: int) -> None:
    rng = np.random.default_rng(seed)
    metric = OpenSetIoU(4)
    all_labels, all_predictions = [], []
    for _ in range(3):
        labels = rng.choice([0, 1, 2, 3, U, 255], size=(10, 12)).astype(np.uint8)
        prediction = rng.choice([0, 1, 2, 3, U], size=(10, 12)).astype(np.uint8)
        metric.update(prediction, labels)
        valid = labels != 255
        all_labels.append(labels[valid])
        all_predictions.append(prediction[valid])
    expected = jaccard_score(np.concatenate(all_labels), np.concatenate(all_predictions),
                             labels=[0, 1, 2, 3, U], average=None)
    result = metric.compute()
    assert list(result["open_IoU"].values()) == pytest.approx(expected[:4].tolist())
    assert result["unknown_IoU"] == pytest.approx(expected[4])
    assert result["open_mIoU"] == pytest.approx(expected[:4].mean())


def test_absent_class_left_out_of_the_mean_and_bad_prediction() -> None:
    metric = OpenSetIoU(3)
    metric.update(np.array([[0, 1]], np.uint8), np.array([[0, 0]], np.uint8))
    result = metric.compute()
    assert result["open_IoU"]["2"] is None
    assert result["open_mIoU"] == pytest.approx((0.5 + 0.0) / 2)
    with pytest.raises(M2AError, match="neither a class"):
        metric.update(np.array([[7]], np.uint8), np.array([[0]], np.uint8))


def test_open_set_labels_is_strict() -> None:
    semseg = np.array([[3, 4, 5]], np.uint8)
    scores = np.array([[0.5, 0.6, 0.4]])
    assert open_set_labels(semseg, scores, 0.5).tolist() == [[3, U, 5]]


def densehybrid_threshold(scores: np.ndarray, is_anomaly: np.ndarray, rate: float) -> float:
    fpr, tpr, thresholds = roc_curve(is_anomaly, scores)
    for t, threshold in zip(tpr, thresholds, strict=True):
        if t > rate:
            return float(threshold)
    raise AssertionError("unreachable")


@pytest.mark.parametrize("seed", range(4))
def test_first_threshold_above_tpr_matches_the_roc_curve_scan(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = (rng.random(300) < 0.3).astype(np.uint8)
    scores = np.round(rng.random(300) + 0.5 * labels, 1)  # many ties
    accumulator = PixelScoreAccumulator()
    accumulator.update(scores, labels)
    for rate in (0.5, 0.9, 0.95):
        assert first_threshold_above_tpr(accumulator.table(), rate) == densehybrid_threshold(scores, labels == 1,
                                                                                               rate)


def test_street_hazards_cross_town_protocol() -> None:
    rng = np.random.default_rng(0)

    def make_town(count: int):
        frames = []
        for index in range(count):
            labels = rng.integers(0, 3, size=(8, 8)).astype(np.uint8)
            labels[rng.random((8, 8)) < 0.2] = U
            labels[0, 0] = 255
            scores = rng.random((8, 8)) + 0.6 * (labels == U)
            semseg = rng.integers(0, 3, size=(8, 8)).astype(np.uint8)
            frames.append((f"f{index}", scores, semseg, labels))
        return frames

    towns = {"t5": make_town(2), "t6": make_town(3)}
    result = street_hazards_open_miou({t: (lambda f=f: iter(f)) for t, f in towns.items()}, num_classes=3)
    for town, other in (("t5", "t6"), ("t6", "t5")):
        other_frames = towns[other]
        valid = np.concatenate([lab.ravel() != 255 for *_, lab in other_frames])
        scores = np.concatenate([s.ravel() for _, s, _, _ in other_frames])[valid]
        is_anomaly = np.concatenate([lab.ravel() == U for *_, lab in other_frames])[valid]
        threshold = densehybrid_threshold(scores, is_anomaly, 0.95)
        assert result["per_town"][town]["threshold"] == threshold
        metric = OpenSetIoU(3)
        for _, s, semseg, labels in towns[town]:
            prediction = semseg.copy()
            prediction[s > threshold] = U
            metric.update(prediction, labels)
        assert result["per_town"][town]["open_mIoU"] == pytest.approx(metric.compute()["open_mIoU"])
    expected = (2 * result["per_town"]["t5"]["open_mIoU"] + 3 * result["per_town"]["t6"]["open_mIoU"]) / 5
    assert result["open_mIoU"] == pytest.approx(expected)
    assert not math.isnan(result["unknown_IoU"])
