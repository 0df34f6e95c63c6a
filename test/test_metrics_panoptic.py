"""Panoptic quality against hand-computed cases (panopticapi's matching, void and crowd rules)."""
from __future__ import annotations

import numpy as np
import pytest

from m2a_core.errors import M2AError
from m2a_core.metrics.panoptic import PanopticQuality, Segment, UnknownInstanceQuality, relabel_unknown

CATEGORIES = {1: "car", 2: "person", 10: "road"}
THINGS = {1, 2}


def id_map(rows: list[str]) -> np.ndarray:
    """Each character is a segment id (0 = void)."""
    return np.array([[int(c) for c in row] for row in rows], np.int64)


def test_match_union_excludes_prediction_on_void() -> None:
    gt = id_map(["1111", "1100", "0000"])          # car: 6 px, the rest void (id 0)
    pred = id_map(["2222", "2200", "2200"])        # 8 px: 6 on the car, 2 on void
    metric = PanopticQuality(CATEGORIES, THINGS)
    metric.update(gt, {1: Segment(1)}, pred, {2: Segment(1)})
    result = metric.compute()
    # union = 8 + 6 - 6 - 2 (on void) = 6 -> IoU 1.0
    assert result["per_category"]["car"] == {"PQ": 1.0, "SQ": 1.0, "RQ": 1.0, "TP": 1, "FP": 0, "FN": 0}


def test_iou_must_exceed_one_half_and_categories_must_agree() -> None:
    gt = id_map(["1111", "2222"])
    pred = id_map(["3300", "4444"])                # car overlap 2 / union 4 = 0.5: no match
    metric = PanopticQuality(CATEGORIES, THINGS)
    metric.update(gt, {1: Segment(1), 2: Segment(2)}, pred, {3: Segment(1), 4: Segment(1)})
    stats = metric.compute()["per_category"]
    assert stats["car"]["TP"] == 0 and stats["car"]["FP"] == 2 and stats["car"]["FN"] == 1
    assert stats["person"]["FN"] == 1 and stats["person"]["FP"] == 0


def test_hand_computed_pq_sq_rq_and_averages() -> None:
    gt = id_map(["11110000", "11110000", "33333333", "33333333"])
    gt_segments = {1: Segment(1), 3: Segment(10)}
    pred = id_map(["11100055", "11100055", "33333333", "33333300"])
    pred_segments = {1: Segment(1), 5: Segment(2), 3: Segment(10)}
    metric = PanopticQuality(CATEGORIES, THINGS)
    metric.update(gt, gt_segments, pred, pred_segments)
    result = metric.compute()
    # car: IoU 6/8; person: predicted on void entirely (4 px, all void) -> not a false positive.
    # road: IoU 14/16.
    assert result["per_category"]["car"]["PQ"] == pytest.approx(0.75)
    assert "person" not in result["per_category"]
    assert result["per_category"]["road"]["SQ"] == pytest.approx(14 / 16)
    assert result["things"] == pytest.approx({"PQ": 0.75, "SQ": 0.75, "RQ": 1.0, "n": 1})
    assert result["stuff"]["PQ"] == pytest.approx(14 / 16)
    assert result["all"]["PQ"] == pytest.approx((0.75 + 14 / 16) / 2)


def test_false_positive_counts_over_frames() -> None:
    metric = PanopticQuality(CATEGORIES, THINGS)
    gt = id_map(["1100", "1100"])
    metric.update(gt, {1: Segment(1)}, id_map(["1100", "1100"]), {1: Segment(1)})           # TP, IoU 1
    metric.update(id_map(["3333", "3333"]), {3: Segment(10)}, id_map(["2200", "0000"]), {2: Segment(1)})
    car = metric.compute()["per_category"]["car"]
    # Frame 2: the car prediction lies on road (not void): a false positive; road is missed.
    assert (car["TP"], car["FP"], car["FN"]) == (1, 1, 0)
    assert car["PQ"] == pytest.approx(1.0 / (1 + 0.5))
    assert car["RQ"] == pytest.approx(1 / 1.5) and car["SQ"] == 1.0


def test_crowd_regions() -> None:
    gt = id_map(["1111", "2222"])
    gt_segments = {1: Segment(1, iscrowd=True), 2: Segment(2)}
    pred = id_map(["3330", "4444"])
    metric = PanopticQuality(CATEGORIES, THINGS)
    metric.update(gt, gt_segments, pred, {3: Segment(1), 4: Segment(2)})
    stats = metric.compute()["per_category"]
    # Crowd never matches nor counts as missed; a car prediction mostly on a car crowd is not a FP.
    assert "car" not in stats
    assert stats["person"]["TP"] == 1


def test_open_set_groups() -> None:
    unknown = 99
    gt_segments = relabel_unknown({1: Segment(1), 2: Segment(2), 3: Segment(10)}, {2}, unknown)
    assert gt_segments[2] == Segment(unknown)
    gt = id_map(["1122", "3333"])
    pred = id_map(["1155", "3333"])
    metric = PanopticQuality(CATEGORIES, THINGS, unknown_category=unknown)
    metric.update(gt, gt_segments, pred, {1: Segment(1), 5: Segment(unknown), 3: Segment(10)})
    result = metric.compute()
    assert result["unknown"]["PQ"] == 1.0 and result["unknown"]["n"] == 1
    assert result["known_things"]["PQ"] == 1.0 and result["known_things"]["n"] == 1
    assert result["stuff"]["n"] == 1 and result["known"]["n"] == 2


def test_bad_input_is_named() -> None:
    metric = PanopticQuality(CATEGORIES, THINGS)
    gt = id_map(["11"])
    with pytest.raises(M2AError, match="no segment entry"):
        metric.update(gt, {1: Segment(1)}, id_map(["17"]), {1: Segment(1)})
    with pytest.raises(M2AError, match="unknown category"):
        metric.update(gt, {1: Segment(1)}, id_map(["11"]), {1: Segment(42)})
    with pytest.raises(M2AError, match="no pixels"):
        metric.update(gt, {1: Segment(1)}, id_map(["11"]), {1: Segment(1), 2: Segment(2)})
    with pytest.raises(M2AError, match="shape"):
        metric.update(gt, {1: Segment(1)}, id_map(["1", "1"]), {1: Segment(1)})


def test_unknown_instance_quality_by_hand() -> None:
    """Two anomalies (10x10 and 10x8), a speck of 3 px, a void band; instance 5 covers the first anomaly with 20
    extra road pixels (IoU 100 / 120), instance 6 lies on the road (false positive), instance 7 lies on void
    (ignored), instance 9 is a known segment; the second anomaly is missed and the speck is under min_area."""
    labels = np.zeros((40, 60), np.uint8)
    labels[5:15, 5:15] = 1
    labels[20:30, 40:48] = 1
    labels[35, 0:3] = 1
    labels[:, 55:] = 255
    instances = np.zeros((40, 60), np.int32)
    instances[5:15, 5:17] = 5
    instances[0:3, 20:30] = 6
    instances[10:20, 56:60] = 7
    instances[32:40, 20:30] = 9
    metric = UnknownInstanceQuality(min_area=5)
    metric.update(labels, instances, [5, 6, 7, 8])          # 8: listed but absent from the frame
    result = metric.compute()
    assert (result["unknown_TP"], result["unknown_FP"], result["unknown_FN"]) == (1, 1, 1)
    assert result["unknown_SQ"] == pytest.approx(100 / 120)
    assert result["unknown_RQ"] == pytest.approx(1 / 2)
    assert result["unknown_PQ"] == pytest.approx(100 / 120 / 2)
    assert result["unknown_instances"] == 3 and result["instance_frames"] == 1
    # Without a size filter the 3-px speck is one more missed instance.
    no_filter = UnknownInstanceQuality()
    no_filter.update(labels, instances, [5, 6, 7])
    assert no_filter.compute()["unknown_FN"] == 2
    # Nothing predicted: every kept anomaly is missed and PQ is 0.
    empty = UnknownInstanceQuality(min_area=5)
    empty.update(labels, np.zeros_like(instances), [])
    assert empty.compute()["unknown_FN"] == 2 and empty.compute()["unknown_PQ"] == 0.0
    with pytest.raises(M2AError, match="differ in shape"):
        metric.update(labels, instances[:, :10], [5])
