"""The open-set threshold: computed on a labelled set at a target true-positive rate, stored as a small JSON.

Convention (the one ``openset_semantic`` applies): a pixel is "unknown" when ``score >= threshold``; the
calibrated threshold is the HIGHEST score ``t`` such that "score >= t" flags at least ``tpr`` of the
anomaly pixels of the calibration set (``PixelScoreAccumulator.threshold_at_tpr``, exact over all pixels,
streamed one image at a time). Labels: 0 inlier, 1 anomaly, anything else (255 void) ignored.

Calibration set layout (the anomaly benchmark layout)::

    DIR/images/<name>.png   RGB images (.jpg/.jpeg also accepted)
    DIR/labels/<name>.png   uint8 single-channel labels: 0 inlier, 1 anomaly, 255 void

The file (``<weights>.calibration.json`` next to the weights by default, where the predictor and the ROS
node look first) records the threshold, the rate asked for and the one reached, the pixel counts, the
sha256 of the weights and the model's class set, and the predictor options it was computed with: a
threshold is only meaningful for those weights and that inference path.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from m2a_core.checkpoint import atomic_write
from m2a_core.errors import DatasetError, M2AError

FORMAT = "m2a-calibration"
VERSION = 1
CONVENTION = ("unknown where score >= threshold; threshold = highest score t whose rate of anomaly pixels "
              "with score >= t reaches tpr (labels: 0 inlier, 1 anomaly, others ignored)")
SCORES = ("anomaly", "anomaly_no_refine")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Calibration:
    threshold: float
    tpr: float                      # asked for
    achieved_tpr: float             # on the calibration set, with score >= threshold
    fpr: float                      # inlier pixels with score >= threshold / inlier pixels
    num_images: int
    num_anomaly_pixels: int
    num_inlier_pixels: int
    weights_sha256: str
    classes: str
    score: str = "anomaly"
    predictor_options: dict = field(default_factory=dict)
    convention: str = CONVENTION
    created_utc: str = ""

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}


def default_calibration_path(weights: str | os.PathLike) -> Path:
    """Where ``m2a calibrate`` writes by default and the predictor / node look: next to the weights."""
    weights = Path(weights)
    return weights.with_name(weights.name.split(".")[0] + ".calibration.json")


def save_calibration(calibration: Calibration, path: str | os.PathLike) -> None:
    text = json.dumps(calibration.to_dict(), indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def load_calibration(path: str | os.PathLike, classes: str | None = None,
                     weights_sha256: str | None = None) -> Calibration:
    """Read and check a calibration file; with ``classes`` / ``weights_sha256`` also check it fits the model."""
    path = Path(path)
    if not path.is_file():
        raise M2AError(f"calibration file {path} does not exist (make one with 'm2a calibrate')")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise M2AError(f"calibration file {path} is not readable JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise M2AError(f"{path} is not an m2a calibration file (no \"format\": \"{FORMAT}\")")
    if raw.get("version") != VERSION:
        raise M2AError(f"calibration file {path} has version {raw.get('version')!r}; this m2a reads {VERSION}")
    known = {f.name for f in fields(Calibration)}
    required = {f.name for f in fields(Calibration) if f.default is MISSING and f.default_factory is MISSING}
    body = {k: v for k, v in raw.items() if k not in ("format", "version")}
    unknown, missing = sorted(set(body) - known), sorted(required - set(body))
    if unknown or missing:
        raise M2AError(f"calibration file {path}: missing fields {missing}, unknown fields {unknown}")
    threshold = body["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise M2AError(f"calibration file {path}: threshold must be a finite number, got {threshold!r}")
    if not isinstance(body["tpr"], (int, float)) or not 0.0 < body["tpr"] <= 1.0:
        raise M2AError(f"calibration file {path}: tpr must be in (0, 1], got {body['tpr']!r}")
    if body.get("score", "anomaly") not in SCORES:
        raise M2AError(f"calibration file {path}: score must be one of {SCORES}, got {body['score']!r}")
    calibration = Calibration(**body)
    if classes is not None and calibration.classes != classes:
        raise M2AError(f"calibration file {path} was made for class set {calibration.classes!r}, "
                       f"but the model predicts {classes!r}")
    if weights_sha256 is not None and calibration.weights_sha256 != weights_sha256:
        raise M2AError(f"calibration file {path} was made for other weights (sha256 "
                       f"{calibration.weights_sha256[:12]}..., these are {weights_sha256[:12]}...); "
                       "run 'm2a calibrate' for these weights")
    return calibration


def anomaly_dataset_pairs(root: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """(name, image path, label path) for every image of a folder in the anomaly benchmark layout."""
    root = Path(root)
    images_dir, labels_dir = root / "images", root / "labels"
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise DatasetError(f"{root} is not in the anomaly benchmark layout: {folder} is missing "
                               "(expected DIR/images/<name>.png and DIR/labels/<name>.png)")
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f"no images (.png/.jpg) in {images_dir}")
    pairs = []
    for image in images:
        label = labels_dir / f"{image.stem}.png"
        if not label.is_file():
            raise DatasetError(f"image {image.name} has no label {label}")
        pairs.append((image.stem, image, label))
    return pairs


def read_anomaly_label(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A uint8 label image with values 0 (inlier), 1 (anomaly) or 255 (void), of the image's size."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            label = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DatasetError(f"cannot read label {path}: {exc}") from None
    if label.ndim != 2:
        raise DatasetError(f"label {path} must be a single-channel image, got shape {label.shape}")
    if label.shape != tuple(shape):
        raise DatasetError(f"label {path} is {label.shape[1]}x{label.shape[0]} but its image is "
                           f"{shape[1]}x{shape[0]}")
    bad = np.setdiff1d(np.unique(label), (0, 1, 255))
    if bad.size:
        raise DatasetError(f"label {path} has values {bad[:8].tolist()}; expected 0 inlier, 1 anomaly, 255 void")
    return label.astype(np.uint8, copy=False)


def calibrate(predict, pairs: list[tuple[str, Path, Path]], tpr: float, weights_sha256: str, classes: str,
              score: str = "anomaly", predictor_options: dict | None = None, progress: bool = True):
    """Stream ``pairs`` through ``predict(image) -> Prediction`` and return (Calibration, accumulator).

    Memory is bounded by the accumulator (one row per distinct score value), never by the number of images.
    """
    from tqdm import tqdm

    from m2a_core.imageio import read_rgb
    from m2a_core.metrics.pixel import PixelScoreAccumulator

    if score not in SCORES:
        raise M2AError(f"score must be one of {SCORES}, got {score!r}")
    if not 0.0 < tpr <= 1.0:
        raise M2AError(f"tpr must be in (0, 1], got {tpr}")
    accumulator = PixelScoreAccumulator()
    for _name, image_path, label_path in tqdm(pairs, desc="m2a calibrate", unit="img", disable=not progress):
        image = read_rgb(image_path)
        label = read_anomaly_label(label_path, image.shape[:2])
        accumulator.update(getattr(predict(image), score), label)
    threshold = accumulator.threshold_at_tpr(tpr)
    table = accumulator.table()
    flagged = int(np.searchsorted(-table.thresholds, -threshold, side="right")) - 1  # row of value == threshold
    calibration = Calibration(
        threshold=threshold, tpr=float(tpr),
        achieved_tpr=float(table.tps[flagged] / table.num_positive),
        fpr=float(table.fps[flagged] / table.num_negative) if table.num_negative else math.nan,
        num_images=len(pairs), num_anomaly_pixels=table.num_positive, num_inlier_pixels=table.num_negative,
        weights_sha256=weights_sha256, classes=classes, score=score,
        predictor_options=dict(predictor_options or {}),
        created_utc=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
    )
    return calibration, accumulator


def plot_calibration(accumulator, calibration: Calibration, path: str | os.PathLike, bins: int = 100) -> None:
    """Score histograms of inlier and anomaly pixels with the threshold marked (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = accumulator.table()
    values = table.thresholds
    anomaly = np.diff(np.concatenate([[0], table.tps]))
    inlier = np.diff(np.concatenate([[0], table.fps]))
    edges = np.linspace(values.min(), values.max() if values.max() > values.min() else values.min() + 1, bins + 1)
    figure, axis = plt.subplots(figsize=(7, 4.5), dpi=100, layout="constrained")
    for counts, label, color in ((inlier, "inlier pixels", "tab:blue"), (anomaly, "anomaly pixels", "tab:red")):
        hist, _ = np.histogram(values, bins=edges, weights=counts)
        total = max(hist.sum(), 1)
        axis.stairs(hist / total, edges, label=label, color=color, fill=True, alpha=0.45)
    axis.axvline(calibration.threshold, color="black", linestyle="--",
                 label=f"threshold {calibration.threshold:.4f} (TPR {calibration.achieved_tpr:.3f}, "
                       f"FPR {calibration.fpr:.3f})")
    axis.set_xlabel(f"{calibration.score} score")
    axis.set_ylabel("share of pixels")
    axis.set_yscale("log")
    axis.set_title(f"calibration on {calibration.num_images} images at TPR {calibration.tpr:.2f}")
    figure.legend(loc="outside lower center", ncols=3, fontsize=8)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
    plt.close(figure)


def calibration_for_weights(weights: str | os.PathLike, classes: str,
                            path: str | os.PathLike | None = None) -> Calibration:
    """The calibration the predictor / node use for ``weights``: ``path`` if given, else the file beside the
    weights; checked against the weights' sha256 and class set."""
    from m2a_core.checkpoint import sha256_file

    path = Path(path) if path is not None else default_calibration_path(weights)
    if not path.is_file():
        raise M2AError(f"no calibration file {path}: run 'm2a calibrate --weights {weights} --data DIR' "
                       "or give a threshold explicitly")
    return load_calibration(path, classes=classes, weights_sha256=sha256_file(weights))
