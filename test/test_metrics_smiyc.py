"""SegmentMeIfYouCan metrics against hand-computed cases and a brute-force restatement of the definitions."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from m2a_core.errors import M2AError
from m2a_core.metrics.smiyc import (
    BinnedCurveAccumulator,
    ComponentAccumulator,
    Track,
    frame_components,
    get_track,
)

EVERY_SIZE = Track("test", min_pred_size=1, min_gt_size=1)


# ---------------------------------------------------------------- binned pixel curve

def test_binned_curve_hand_computed() -> None:
    # Few pixels per class: every score is a quantile edge, so the binned curve is the exact one.
    scores = np.array([[0.9, 0.7, 0.8, 0.2, 0.1, 0.5]])
    labels = np.array([[1, 1, 0, 0, 0, 255]], np.uint8)
    accumulator = BinnedCurveAccumulator()
    accumulator.update(scores, labels)
    result = accumulator.compute()
    valid = labels.ravel() < 2
    assert result["smiyc_AuPRC"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert result["smiyc_AuPRC"] == pytest.approx(average_precision_score(labels.ravel()[valid],
                                                                          scores.ravel()[valid]))
    assert result["smiyc_AUROC"] == pytest.approx(5 / 6)
    assert result["smiyc_FPR95"] == pytest.approx(1 / 3)      # TPR 1.0 first at 0.7, with 0.8 flagged
    assert result["best_F1"] == pytest.approx(0.8)              # at 0.7: 2TP / (2TP + FP + FN) = 4 / 5
    assert result["best_F1_threshold"] == pytest.approx(0.7)


def brute_force_binned(frames, num_bins: int = 768) -> dict[str, float]:
    """The benchmark's definition restated pixel by pixel: per-frame edges, then every global threshold."""
    entries = []  # (threshold, anomaly count, inlier count) for every bin of every frame
    for scores, labels in frames:
        valid = (labels == 0) | (labels == 1)
        pos, neg = scores[valid & (labels == 1)], scores[valid & (labels == 0)]
        low, high = np.min(scores[valid]), np.max(scores[valid])
        margin = np.maximum((high - low) * 1e-2, 1e-2)
        edges = [np.array([low - margin, high + margin])]
        edges += [np.quantile(v, np.linspace(0, 1, min(num_bins // 2, v.size))) for v in (pos, neg) if v.size]
        edges = np.unique(np.concatenate(edges))
        for k in range(len(edges) - 1):
            last = k == len(edges) - 2
            in_bin = [(v >= edges[k]) & ((v <= edges[k + 1]) if last else (v < edges[k + 1])) for v in (pos, neg)]
            entries.append((edges[k], int(in_bin[0].sum()), int(in_bin[1].sum())))
    num_pos = sum(e[1] for e in entries)
    num_neg = sum(e[2] for e in entries)
    points = [(math.inf, 0, 0)]
    for threshold in sorted({e[0] for e in entries}, reverse=True):
        points.append((threshold, sum(e[1] for e in entries if e[0] >= threshold),
                       sum(e[2] for e in entries if e[0] >= threshold)))
    ap, best_f1, best_threshold, fpr95 = 0.0, -1.0, None, None
    auroc = 0.0
    for (_, tp0, fp0), (threshold, tp, fp) in zip(points, points[1:], strict=False):
        precision = tp / (tp + fp) if tp + fp else 1.0
        ap += (tp - tp0) / num_pos * precision
        auroc += (fp - fp0) / num_neg * (tp + tp0) / 2 / num_pos
        f1 = 2 * tp / (2 * tp + fp + (num_pos - tp))
        if f1 > best_f1:
            best_f1, best_threshold = f1, threshold
        if fpr95 is None and tp / num_pos >= 0.95:
            fpr95 = fp / num_neg
    return {"smiyc_AuPRC": ap, "smiyc_AUROC": auroc, "smiyc_FPR95": fpr95, "best_F1": best_f1,
            "best_F1_threshold": best_threshold}


@pytest.mark.parametrize("seed", range(4))
def test_binned_curve_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(3):
        labels = (rng.random((30, 40)) < 0.25).astype(np.uint8)
        scores = (rng.random((30, 40)) + 0.4 * labels).astype(np.float32)
        labels[rng.random((30, 40)) < 0.1] = 255
        frames.append((scores, labels))
    frames.append((np.full((6, 6), 0.5, np.float32), np.zeros((6, 6), np.uint8)))  # constant, inliers only
    small_bins = 40  # fewer bins than pixels: the binning really merges values
    accumulator = BinnedCurveAccumulator(num_bins=small_bins)
    for scores, labels in frames:
        accumulator.update(scores, labels)
    result = accumulator.compute()
    expected = brute_force_binned(frames, num_bins=small_bins)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key
    # Binning approximates the exact metrics.
    scores = np.concatenate([s[lab < 2] for s, lab in frames])
    is_anomaly = np.concatenate([lab[lab < 2] == 1 for _, lab in frames])
    assert result["smiyc_AuPRC"] == pytest.approx(average_precision_score(is_anomaly, scores), abs=0.05)
    assert result["smiyc_AUROC"] == pytest.approx(roc_auc_score(is_anomaly, scores), abs=0.05)


def test_binned_curve_all_void_and_no_anomaly() -> None:
    accumulator = BinnedCurveAccumulator()
    accumulator.update(np.zeros((4, 4), np.float32), np.full((4, 4), 255, np.uint8))  # ignored
    with pytest.raises(M2AError, match="no frames"):
        accumulator.compute()
    accumulator.update(np.random.default_rng(0).random((4, 4)), np.zeros((4, 4), np.uint8))
    result = accumulator.compute()
    assert math.isnan(result["smiyc_AuPRC"]) and math.isnan(result["smiyc_FPR95"])


# ---------------------------------------------------------------- component metrics

def test_siou_and_ppv_hand_computed() -> None:
    labels = np.zeros((20, 20), np.uint8)
    labels[10:14, 10:14] = 1                 # ground truth: 16 px
    scores = np.zeros((20, 20), np.float32)
    scores[10:12, 10:14] = 1.0               # 8 px on the anomaly
    scores[9, 10:13] = 1.0                   # 3 px on inlier, connected to it
    frame = frame_components(scores, labels, threshold=0.5, track=EVERY_SIZE)
    assert frame.siou.tolist() == pytest.approx([8 / (16 + 3)])
    assert frame.ppv.tolist() == pytest.approx([8 / 11])


def test_siou_does_not_count_other_ground_truth_components() -> None:
    labels = np.zeros((2, 10), np.uint8)
    labels[:, 0:4] = 1
    labels[:, 6:10] = 1
    scores = np.zeros((2, 10))
    scores[:, 2:8] = 1.0   # 4 px on each component, 4 px on the inlier gap between them
    frame = frame_components(scores, labels, threshold=0.5, track=EVERY_SIZE)
    assert frame.siou.tolist() == pytest.approx([4 / (8 + 4), 4 / (8 + 4)])
    assert frame.ppv.tolist() == pytest.approx([8 / 12])


def test_eight_connectivity_strict_threshold_and_void() -> None:
    labels = np.zeros((6, 6), np.uint8)
    labels[1, 1] = labels[2, 2] = 1          # diagonal neighbours: one component
    labels[5, :] = 255
    scores = np.zeros((6, 6))
    scores[1, 1] = 0.5                        # equal to the threshold: not predicted (score > t)
    scores[2, 2] = 0.9
    scores[5, 0] = 0.9                        # on void: never predicted
    frame = frame_components(scores, labels, threshold=0.5, track=EVERY_SIZE)
    assert frame.siou.tolist() == pytest.approx([1 / 2])
    assert frame.ppv.tolist() == pytest.approx([1.0])


def test_size_filters() -> None:
    track = Track("t", min_pred_size=3, min_gt_size=4)
    labels = np.zeros((10, 10), np.uint8)
    labels[0, 0:3] = 1                        # 3 px < 4: becomes void
    labels[5:7, 5:7] = 1                      # 4 px: kept
    scores = np.zeros((10, 10))
    scores[0, 0:3] = 1.0                      # predicted component lying only on the now-void component
    scores[5, 5:7] = 1.0                      # 2 px < 3: dropped
    scores[9, 0:3] = 1.0                      # 3 px on inlier: kept, PPV 0
    frame = frame_components(scores, labels, threshold=0.5, track=track)
    assert frame.siou.tolist() == [0.0]
    assert frame.ppv.tolist() == [0.0]


def brute_force_components(scores, labels, threshold, track):
    """The SPEC's definitions with pixel sets."""
    void = (labels != 0) & (labels != 1)
    gt, num_gt = ndimage.label(labels == 1, structure=np.ones((3, 3)))
    pred, num_pred = ndimage.label((scores > threshold) & ~void, structure=np.ones((3, 3)))
    gt_sets = {i: set(zip(*np.nonzero(gt == i), strict=True)) for i in range(1, num_gt + 1)}
    pred_sets = {j: set(zip(*np.nonzero(pred == j), strict=True)) for j in range(1, num_pred + 1)}
    pred_sets = {j: s for j, s in pred_sets.items() if len(s) >= track.min_pred_size}
    new_void = set().union(*[s for s in gt_sets.values() if len(s) < track.min_gt_size])
    gt_sets = {i: s for i, s in gt_sets.items() if len(s) >= track.min_gt_size}
    inlier = set(zip(*np.nonzero(labels == 0), strict=True))
    siou = []
    for k in gt_sets.values():
        touching = set().union(*[p for p in pred_sets.values() if p & k])
        siou.append(len(k & touching) / (len(k) + len(touching & inlier)))
    anomaly = set().union(*gt_sets.values())
    ppv = []
    for p in pred_sets.values():
        p_valid = {x for x in p if x not in new_void}
        if p_valid:
            ppv.append(len(p_valid & anomaly) / len(p_valid))
    return sorted(siou), sorted(ppv)


@pytest.mark.parametrize("seed", range(6))
def test_components_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = (ndimage.uniform_filter(rng.random((24, 24)), 3) > 0.6).astype(np.uint8)
    labels[rng.random((24, 24)) < 0.05] = 255
    scores = ndimage.uniform_filter(rng.random((24, 24)), 2) + 0.3 * (labels == 1)
    track = Track("t", min_pred_size=3, min_gt_size=3)
    frame = frame_components(scores, labels, threshold=0.6, track=track)
    siou, ppv = brute_force_components(scores, labels, 0.6, track)
    assert sorted(frame.siou.tolist()) == pytest.approx(siou)
    assert sorted(frame.ppv.tolist()) == pytest.approx(ppv)


def test_dataset_aggregation_hand_computed() -> None:
    # Frame 1: sIoU 8/19 (0.42), PPV 8/11 (0.73). Frame 2: no ground truth, one false component (PPV 0).
    first_labels = np.zeros((20, 20), np.uint8)
    first_labels[10:14, 10:14] = 1
    first_scores = np.zeros((20, 20))
    first_scores[10:12, 10:14] = 1.0
    first_scores[9, 10:13] = 1.0
    second_scores = np.zeros((20, 20))
    second_scores[0:2, 0:2] = 1.0
    accumulator = ComponentAccumulator(0.5, EVERY_SIZE)
    accumulator.update(first_scores, first_labels)
    accumulator.update(second_scores, np.zeros((20, 20), np.uint8))
    result = accumulator.compute()
    assert result["sIoU"] == pytest.approx(8 / 19)
    assert result["PPV"] == pytest.approx((8 / 11 + 0) / 2)
    # t = 0.25: TP 1, FN 0, FP 1 (the PPV-0 component) -> 2/3. t = 0.5 and 0.75: TP 0, FN 1, FP 1 or 2.
    assert result["F1_25"] == pytest.approx(2 / 3)
    assert result["F1_50"] == 0.0 and result["F1_75"] == 0.0
    thresholds = np.linspace(0.25, 0.75, 11)
    f1 = [2 / 3 if t <= 8 / 19 else 0.0 for t in thresholds]
    assert result["mean_F1"] == pytest.approx(np.mean(f1))


def test_tracks_and_bad_input() -> None:
    assert (get_track("anomaly").min_pred_size, get_track("anomaly").min_gt_size) == (500, 100)
    assert (get_track("obstacle").min_pred_size, get_track("obstacle").min_gt_size) == (50, 10)
    with pytest.raises(M2AError, match="track"):
        get_track("panoptic")
    with pytest.raises(M2AError, match="shape"):
        frame_components(np.zeros((3, 3)), np.zeros((3, 4), np.uint8), 0.5, EVERY_SIZE)
