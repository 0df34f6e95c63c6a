"""Panoptic quality (panopticapi's definition) and its open-set version with an unknown class (EOPSN).

A panoptic frame is an id map (int [H, W], 0 = void/unlabelled) plus, per segment id, its category
and (ground truth only) an ``iscrowd`` flag. Per frame:

- a ground-truth segment and a predicted segment of the same category match when their IoU > 0.5,
  where the union leaves out the predicted pixels that lie on void; crowd ground truth never matches;
- unmatched non-crowd ground-truth segments are false negatives; an unmatched predicted segment is a
  false positive unless more than half of it lies on void or on crowd regions of its own category.

Per category over the dataset: PQ = sum(IoU of matches) / (TP + FP/2 + FN/2), SQ = sum IoU / TP (0 if
no TP), RQ = TP / (TP + FP/2 + FN/2); averages over the categories with TP + FP + FN > 0: all, things,
stuff. Segment areas are counted from the id maps (panopticapi reads ground-truth areas from the JSON;
COCO's JSON areas are exactly these pixel counts). Open-set (``unknown_category``): ground-truth
segments of unknown classes are relabelled as one "unknown" thing category, and the report separates
known things, stuff and unknown.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from m2a_core.errors import M2AError

VOID = 0


@dataclass(frozen=True)
class Segment:
    category: int
    iscrowd: bool = False


@dataclass
class CategoryStats:
    iou: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0


class PanopticQuality:
    """Streaming PQ/SQ/RQ; ``things`` are the thing category ids, every other category is stuff."""

    def __init__(self, categories: dict[int, str], things: set[int], unknown_category: int | None = None) -> None:
        self.categories = dict(categories)
        self.things = set(things)
        self.unknown_category = unknown_category
        if unknown_category is not None:
            self.categories.setdefault(unknown_category, "unknown")
            self.things.add(unknown_category)
        self.stats: dict[int, CategoryStats] = defaultdict(CategoryStats)

    def _check(self, what: str, ids: np.ndarray, segments: dict[int, Segment]) -> dict[int, int]:
        present, areas = np.unique(ids, return_counts=True)
        area = dict(zip(present.tolist(), areas.tolist(), strict=True))
        for segment_id, segment in segments.items():
            if segment.category not in self.categories:
                raise M2AError(f"{what} segment {segment_id} has unknown category {segment.category}")
        missing = sorted(set(area) - set(segments) - {VOID})
        if missing:
            raise M2AError(f"{what} id map holds ids {missing[:8]} with no segment entry")
        return area

    def update(self, gt_ids: np.ndarray, gt_segments: dict[int, Segment],
               pred_ids: np.ndarray, pred_segments: dict[int, Segment]) -> None:
        gt_ids, pred_ids = np.asarray(gt_ids, np.int64), np.asarray(pred_ids, np.int64)
        if gt_ids.shape != pred_ids.shape:
            raise M2AError(f"ground-truth {gt_ids.shape} and predicted {pred_ids.shape} id maps differ in shape")
        gt_area = self._check("ground-truth", gt_ids, gt_segments)
        pred_area = self._check("predicted", pred_ids, pred_segments)
        # As panopticapi: a listed ground-truth segment without pixels is still a (missed) segment; a
        # listed predicted segment without pixels is an error.
        empty = sorted(k for k in pred_segments if pred_area.get(k, 0) == 0)
        if empty:
            raise M2AError(f"predicted segments {empty[:8]} are listed but have no pixels in the id map")
        offset = int(max(pred_ids.max(initial=0), 0)) + 1
        pairs, counts = np.unique(gt_ids * offset + pred_ids, return_counts=True)
        intersection = {(int(p // offset), int(p % offset)): int(c) for p, c in zip(pairs, counts, strict=True)}

        matched_gt, matched_pred = set(), set()
        for (gt_id, pred_id), overlap in intersection.items():
            if gt_id not in gt_segments or pred_id not in pred_segments:
                continue
            gt, pred = gt_segments[gt_id], pred_segments[pred_id]
            if gt.iscrowd or gt.category != pred.category:
                continue
            union = pred_area[pred_id] + gt_area[gt_id] - overlap - intersection.get((VOID, pred_id), 0)
            iou = overlap / union
            if iou > 0.5:
                stats = self.stats[gt.category]
                stats.tp += 1
                stats.iou += iou
                matched_gt.add(gt_id)
                matched_pred.add(pred_id)
        crowd_of_category: dict[int, int] = {}  # one crowd region per category (the last listed)
        for gt_id, gt in gt_segments.items():
            if gt.iscrowd:
                crowd_of_category[gt.category] = gt_id
            elif gt_id not in matched_gt:
                self.stats[gt.category].fn += 1
        for pred_id, pred in pred_segments.items():
            if pred_id in matched_pred:
                continue
            ignored = intersection.get((VOID, pred_id), 0)
            if pred.category in crowd_of_category:
                ignored += intersection.get((crowd_of_category[pred.category], pred_id), 0)
            if ignored / pred_area[pred_id] > 0.5:
                continue
            self.stats[pred.category].fp += 1

    def _average(self, category_ids) -> dict[str, float]:
        pq = sq = rq = 0.0
        count = 0
        for category in category_ids:
            s = self.stats.get(category, CategoryStats())
            if s.tp + s.fp + s.fn == 0:
                continue
            count += 1
            denominator = s.tp + 0.5 * s.fp + 0.5 * s.fn
            pq += s.iou / denominator
            sq += s.iou / s.tp if s.tp else 0.0
            rq += s.tp / denominator
        if count == 0:
            return {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "n": 0}
        return {"PQ": pq / count, "SQ": sq / count, "RQ": rq / count, "n": count}

    def per_category(self) -> dict[str, dict[str, float]]:
        out = {}
        for category, name in self.categories.items():
            s = self.stats.get(category, CategoryStats())
            if s.tp + s.fp + s.fn == 0:
                continue
            denominator = s.tp + 0.5 * s.fp + 0.5 * s.fn
            out[name] = {"PQ": s.iou / denominator, "SQ": s.iou / s.tp if s.tp else 0.0,
                         "RQ": s.tp / denominator, "TP": s.tp, "FP": s.fp, "FN": s.fn}
        return out

    def compute(self) -> dict:
        """PQ/SQ/RQ for all categories, things and stuff; open-set runs add known things and unknown."""
        stuff = [c for c in self.categories if c not in self.things]
        result = {"all": self._average(self.categories), "things": self._average(self.things),
                  "stuff": self._average(stuff), "per_category": self.per_category()}
        if self.unknown_category is not None:
            known_things = [c for c in self.things if c != self.unknown_category]
            result["known_things"] = self._average(known_things)
            result["known"] = self._average([c for c in self.categories if c != self.unknown_category])
            result["unknown"] = self._average([self.unknown_category])
        return result


def relabel_unknown(segments: dict[int, Segment], unknown_categories: set[int],
                    unknown_category: int) -> dict[int, Segment]:
    """Ground truth for open-set evaluation: segments of unknown categories become ``unknown_category``."""
    return {k: Segment(unknown_category, v.iscrowd) if v.category in unknown_categories else v
            for k, v in segments.items()}


class UnknownInstanceQuality:
    """Panoptic quality of unknown instances against an anomaly benchmark's 0/1/255 labels (PQ of the unknown
    category, matched as above). Ground-truth instances are the 8-connected components of the anomaly pixels,
    those under ``min_area`` pixels void (an instance filter of that size could never find them); inlier pixels
    are one known segment, so an unknown instance on the road is a false positive, one mostly on void is not."""

    KNOWN, UNKNOWN = 1, 2

    def __init__(self, min_area: int = 0) -> None:
        if min_area < 0:
            raise M2AError(f"min_area must be >= 0, got {min_area}")
        self.min_area = min_area
        self.quality = PanopticQuality({self.KNOWN: "known"}, set(), unknown_category=self.UNKNOWN)
        self.frames = 0
        self.predicted = 0

    def update(self, labels: np.ndarray, instances: np.ndarray, unknown_ids: list[int] | set[int]) -> None:
        """One frame: ``labels`` 0 inlier / 1 anomaly / 255 void; ``instances`` the id map of the predicted
        segments, of which ``unknown_ids`` are the unknown instances (the other ids count as not unknown)."""
        from scipy import ndimage

        labels, instances = np.asarray(labels), np.asarray(instances)
        if labels.shape != instances.shape:
            raise M2AError(f"labels {labels.shape} and instances {instances.shape} differ in shape")
        components, count = ndimage.label(labels == 1, structure=np.ones((3, 3), bool))
        areas = np.bincount(components.ravel(), minlength=count + 1)
        kept = areas >= self.min_area
        kept[0] = False
        gt_ids = np.where(kept[components], components + 1, np.where(labels == 0, 1, VOID)).astype(np.int64)
        gt_segments = {1: Segment(self.KNOWN)}
        gt_segments.update({int(c) + 1: Segment(self.UNKNOWN) for c in np.flatnonzero(kept)})
        unknown = sorted(set(int(i) for i in unknown_ids) & set(np.unique(instances).tolist()))
        pred_ids = np.where(np.isin(instances, unknown), instances, 0).astype(np.int64)
        self.quality.update(gt_ids, gt_segments, pred_ids, {i: Segment(self.UNKNOWN) for i in unknown})
        self.frames += 1
        self.predicted += len(unknown)

    def compute(self) -> dict:
        stats = self.quality.per_category().get("unknown", {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "TP": 0, "FP": 0,
                                                               "FN": 0})
        return {"unknown_PQ": stats["PQ"], "unknown_SQ": stats["SQ"], "unknown_RQ": stats["RQ"],
                "unknown_TP": stats["TP"], "unknown_FP": stats["FP"], "unknown_FN": stats["FN"],
                "unknown_instances": self.predicted, "instance_frames": self.frames,
                "instance_min_area": self.min_area}
