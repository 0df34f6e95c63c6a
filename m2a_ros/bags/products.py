"""What ``m2a_bag_eval`` adds for the node's open-set outputs: open-set scores and the pictures people look at.

- ``OpenSetScores``: against a semantic ground-truth topic (Cityscapes trainIds, 254 unknown, 255 void), the
  open-mIoU of the node's own open-set label image (``~/labels``: class ids, 254 where the anomaly score reaches
  the node's threshold) and the closed-set mIoU of its class map on the known pixels, both with
  ``m2a_core.metrics.openset.OpenSetIoU`` (DenseHybrid's definitions);
- ``ProductPictures``: per frame, the node's heatmap (``~/anomaly/color``), open-set label colours
  (``~/labels/color``) and overlay with the unknown instances (``~/overlay``) as PNGs, decoded from the very
  messages the node publishes; and a contact sheet of a few frames spread over the bag: camera image, ground
  truth, heatmap, open-set labels, overlay.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from m2a_core.classes import IGNORE_ID, UNKNOWN_ID
from m2a_core.errors import DatasetError, M2AError

# The table report.md leads with (values in percent).
SUMMARY_COLUMNS = ("AuPRC", "FPR95", "sIoU", "PPV", "mean_F1", "open_mIoU", "closed_mIoU", "unknown_IoU",
                   "unknown_PQ")
# Picture name -> the node output it is decoded from.
PICTURE_OUTPUTS = {"heatmap": "anomaly_color", "labels": "labels_color", "overlay": "overlay"}
DEFAULT_SHEET_FRAMES = 6


class OpenSetScores:
    """Streaming open-set and closed-set IoU of the node's outputs against semantic labels matched by stamp."""

    def __init__(self, truth, class_set) -> None:
        from m2a_core.metrics.openset import OpenSetIoU

        self.truth, self.class_set = truth, class_set
        self.open = OpenSetIoU(class_set.num_classes, class_set.names)
        self.closed = OpenSetIoU(class_set.num_classes, class_set.names)
        self.matched = 0
        self.unmatched = 0

    def add(self, stamp_ns: int, open_labels: np.ndarray, semseg: np.ndarray) -> None:
        """One frame: the node's open-set labels (class ids, ``UNKNOWN_ID``) and closed-set class map."""
        from m2a_core.datasets.base import read_label_png

        label_stamp = self.truth.match(stamp_ns)
        if label_stamp is None:
            self.unmatched += 1
            return
        path = self.truth.paths[label_stamp]
        semantic = read_label_png(path)
        if semantic.shape != open_labels.shape:
            raise DatasetError(f"semantic label {path} is {semantic.shape[::-1]} but frame {stamp_ns} is "
                               f"{open_labels.shape[::-1]}")
        k = self.class_set.num_classes
        bad = (semantic >= k) & (semantic != UNKNOWN_ID) & (semantic != IGNORE_ID)
        if bad.any():
            raise DatasetError(f"semantic label {path} has values {np.unique(semantic[bad])[:8].tolist()}; expected "
                               f"class ids 0..{k - 1} ({self.class_set.name}), {UNKNOWN_ID} unknown, {IGNORE_ID} void")
        self.truth.used.add(label_stamp)
        self.matched += 1
        self.open.update(open_labels, semantic)
        # Closed set: the known pixels only (anomalies become void), the class map as predicted.
        self.closed.update(semseg, np.where(semantic == UNKNOWN_ID, IGNORE_ID, semantic))

    def results(self) -> dict:
        if not self.matched:
            return {"open_mIoU": None, "unknown_IoU": None, "closed_mIoU": None, "semantic_frames": 0,
                    "semantic_frames_without_label": self.unmatched}
        open_set, closed = self.open.compute(), self.closed.compute()
        return {"open_mIoU": open_set["open_mIoU"], "unknown_IoU": open_set["unknown_IoU"],
                "closed_mIoU": closed["open_mIoU"],  # no unknown predicted or labelled: plain mIoU
                "open_IoU_per_class": open_set["open_IoU"], "closed_IoU_per_class": closed["open_IoU"],
                "semantic_frames": self.matched, "semantic_frames_without_label": self.unmatched}


def sheet_indices(total: int | None, count: int) -> set[int]:
    """Indices of ``count`` frames spread evenly over ``total`` (the first ``count`` when ``total`` is unknown)."""
    if count <= 0:
        return set()
    if not total or total <= count:
        return set(range(count))
    if count == 1:
        return {0}
    return {round(i * (total - 1) / (count - 1)) for i in range(count)}


def require_picture_outputs(wanted: set[str]) -> None:
    missing = sorted(o for o in PICTURE_OUTPUTS.values() if o not in wanted)
    if missing:
        raise M2AError(f"pictures need the node outputs {', '.join(missing)}: add them to the 'publish' parameter")


class ProductPictures:
    """Per-frame PNGs (optional) and the contact sheet, from the node's output messages."""

    def __init__(self, out: Path, every_frame: bool, sheet_frames: int, total_frames: int | None,
                 anomaly_truth=None, thumbnail_width: int = 480) -> None:
        self.folder = out / "pictures"
        self.every_frame = every_frame
        self.sheet_at = sheet_indices(total_frames, sheet_frames)
        self.anomaly_truth = anomaly_truth
        self.thumbnail_width = thumbnail_width
        self.rows: list[tuple[int, list[np.ndarray]]] = []
        self.first_stamp_ns: int | None = None
        self.written = 0
        if every_frame:
            self.folder.mkdir(parents=True, exist_ok=True)
            for stale in self.folder.glob("*.png"):  # another run's frames would mix with these
                stale.unlink()

    def add(self, index: int, stamp_ns: int, rgb: np.ndarray, messages: dict) -> None:
        """Frame ``index`` of the bag (0-based, in reading order) with the node's output messages."""
        if self.first_stamp_ns is None:
            self.first_stamp_ns = stamp_ns
        if not self.every_frame and index not in self.sheet_at:
            return
        from m2a_core.imageio import write_png
        from m2a_ros.conversions import image_to_array

        pictures = {name: image_to_array(messages[output]) for name, output in PICTURE_OUTPUTS.items()}
        if self.every_frame:
            for name, picture in pictures.items():
                write_png(self.folder / f"{stamp_ns}_{name}.png", picture)
            self.written += 1
        if index in self.sheet_at:
            from m2a_ros.bags.evaluate import label_picture, thumbnail

            truth = self._anomaly_truth(stamp_ns, rgb.shape[:2])
            panels = [rgb, label_picture(truth) if truth is not None else np.zeros_like(rgb),
                      pictures["heatmap"], pictures["labels"], pictures["overlay"]]
            self.rows.append((stamp_ns, [thumbnail(p, min(self.thumbnail_width, p.shape[1])) for p in panels]))

    def _anomaly_truth(self, stamp_ns: int, shape: tuple[int, int]) -> np.ndarray | None:
        from m2a_core.cli.eval import read_binary_labels

        if self.anomaly_truth is None:
            return None
        label_stamp = self.anomaly_truth.match(stamp_ns)
        if label_stamp is None:
            return None
        labels = read_binary_labels(self.anomaly_truth.paths[label_stamp])
        return labels if labels.shape == shape else None

    def write_sheet(self, path: Path, threshold: float) -> Path | None:
        from m2a_core.plots import picture_grid

        if not self.rows:
            return None
        rows = sorted(self.rows)
        picture_grid([panels for _, panels in rows], path, (
            "camera image", "ground truth (white: anomaly, grey: void)", "anomaly heatmap (~/anomaly/color)",
            f"open-set labels (white: unknown, score >= {threshold:.3f})", "overlay + unknown instances (cyan)"),
            row_labels=[f"t = {(stamp_ns - self.first_stamp_ns) / 1e9:.1f} s" for stamp_ns, _ in rows])
        return path
