"""Dataset-level anomaly evaluation: every pixel and component metric from one stream of frames.

Two passes over the frames (the component metrics' default threshold is the binned curve's best-F1
threshold, known only after all frames): pass 1 feeds the exact accumulator and the binned curve,
pass 2 the component metrics. Only per-value counts, per-frame bins and per-component values are kept.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from m2a_core.errors import M2AError
from m2a_core.metrics.pixel import PixelScoreAccumulator, curve_points
from m2a_core.metrics.smiyc import BinnedCurveAccumulator, ComponentAccumulator, get_track

Frame = tuple[str, np.ndarray, np.ndarray]  # (name, scores [H, W] float, labels [H, W] 0/1/255)
FrameSource = Callable[[], Iterable[Frame]]

FPR95_CONVENTIONS = {
    "FPR95": "FPR at the first threshold with TPR >= 0.95 (Fishyscapes, SegmentMeIfYouCan)",
    "FPR95_strict": "FPR at the first threshold with TPR > 0.95 (DenseHybrid)",
    "FPR95_interp": "np.interp(0.95, tpr, fpr) on sklearn's roc_curve (official Mask2Anomaly script)",
    "smiyc_FPR95": "SegmentMeIfYouCan binned curve (768 per-frame percentile bins), first TPR >= 0.95",
}

# Columns of the results table, in the paper's order (percent in the table, fractions in JSON).
TABLE_COLUMNS = ("AuPRC", "FPR95", "FPR95_interp", "AUROC", "smiyc_AuPRC", "smiyc_FPR95",
                 "sIoU", "PPV", "mean_F1")


def _frames(source: FrameSource, skip_without_anomaly: bool, desc: str, progress: bool) -> Iterator[Frame]:
    for name, scores, labels in tqdm(source(), desc=desc, unit="frame", disable=not progress):
        if skip_without_anomaly and not np.any(labels == 1):
            continue
        yield name, scores, labels


def evaluate_anomaly(source: FrameSource, track: str = "anomaly", threshold: float | None = None,
                     skip_without_anomaly: bool = False, progress: bool = True
                     ) -> tuple[dict, dict[str, np.ndarray]]:
    """(metrics, curves) over the frames ``source()`` yields (it is called once per pass).

    ``threshold``: score threshold of the component metrics (default: the binned curve's best F1).
    ``skip_without_anomaly``: drop frames without anomaly pixels, as the official Mask2Anomaly script
    does (the benchmarks keep them). ``progress``: tqdm bars of the two passes.
    """
    track_spec = get_track(track)
    exact, binned = PixelScoreAccumulator(), BinnedCurveAccumulator()
    for _, scores, labels in _frames(source, skip_without_anomaly, "pixel metrics", progress):
        exact.update(scores, labels)
        binned.update(scores, labels)
    if exact.num_frames == 0:
        raise M2AError("no frames to evaluate" + (" (all lacked anomaly pixels)" if skip_without_anomaly else ""))
    table = exact.table()
    results: dict = {**exact.compute(), **binned.compute()}
    component_threshold = results["best_F1_threshold"] if threshold is None else threshold
    if component_threshold is None or math.isnan(component_threshold):
        components = {"sIoU": math.nan, "PPV": math.nan, "mean_F1": math.nan}
    else:
        accumulator = ComponentAccumulator(component_threshold, track_spec)
        for _, scores, labels in _frames(source, skip_without_anomaly, "component metrics", progress):
            accumulator.update(scores, labels)
        components = accumulator.compute()
    results.update(components)
    results.update(track=track_spec.name, num_frames=exact.num_frames, fpr95_conventions=FPR95_CONVENTIONS,
                   skipped_frames_without_anomaly=skip_without_anomaly)
    return results, curve_points(table) if table.num_positive and table.num_negative else {}


def json_ready(value):
    """NaN -> None (JSON has no NaN), numpy scalars -> Python numbers, recursively."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _percent(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def results_table(rows: dict[str, dict], columns: tuple[str, ...] = TABLE_COLUMNS) -> tuple[str, str]:
    """(markdown, csv) with one row per method/dataset, values in percent as the paper prints them."""
    header = ["", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", *columns])
    for name, result in rows.items():
        cells = [_percent(result.get(c)) for c in columns]
        lines.append("| " + " | ".join([name, *cells]) + " |")
        writer.writerow([name, *cells])
    return "\n".join(lines) + "\n", buffer.getvalue()
