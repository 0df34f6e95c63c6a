"""Write the synthetic world to disk in the public layouts, so every tool reads it like a real dataset.

- ``write_cityscapes``: the Cityscapes layout ``leftImg8bit/<split>/synth/synth_<seq>_000019_leftImg8bit.png``
  with ``gtFine/<split>/synth/..._gtFine_labelTrainIds.png`` (trainIds, 255 void), ``_gtFine_labelIds.png``
  (official ids) and ``_gtFine_instanceIds.png`` (16 bit, ``labelId * 1000 + k`` for things) next to it.
  Read by ``m2a_core.datasets`` ("cityscapes") and the training loader. These frames hold no anomalies.
- ``write_anomaly_benchmark``: the Fishyscapes Lost&Found layout (``fs_lost_and_found`` reader):
  ``images/<n>.png`` + ``labels_masks/<n>.png`` with 0 inlier, 1 anomaly, 255 void (the ego hood).
  Every frame holds at least one visible anomaly. For open-set mIoU the known classes are written too:
  ``labels_semantic/<n>.png`` with trainIds 0..18, ``UNKNOWN_ID`` (254) on anomalies, 255 void; read them
  with ``open_set_semantic``.
- ``write_outlier_pool``: the AnomalyMix pool layout (``m2a_core.training.anomalymix.OutlierPool``):
  ``images/<n>.png`` + ``ood_annotations/<n>.png`` (254 on object pixels, 0 elsewhere).

Every folder gets a ``synth.json`` with the parameters. Frame ``i`` of a set depends only on
(seed, set, i), so sets are reproducible byte for byte and can be grown or regenerated in part.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from m2a_core.checkpoint import atomic_write
from m2a_core.classes import CITYSCAPES, IGNORE_ID, UNKNOWN_ID
from m2a_core.datasets.base import LabelledImages, images_in, pair_by_name, require_dir
from m2a_core.errors import DatasetError
from m2a_core.imageio import write_png
from m2a_core.synthetic.outliers import outlier_example
from m2a_core.synthetic.scene import Frame, generate_frame
from m2a_core.synthetic.textures import ANOMALY_LABEL

CITY = "synth"
# Set codes mixed into every frame's seed so the sets never share a frame.
SET_CODES = {"train": 0, "val": 1, "test": 2, "anomaly": 3, "outliers": 4}
# Cityscapes trainId -> official labelId (cityscapesscripts' labels.py).
TRAIN_TO_LABEL_ID = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class WriteStats:
    count: int
    seconds: float
    generate_seconds: float  # of which drawing the frames (the rest is PNG encoding and disk)

    def summary(self, what: str) -> str:
        per = self.generate_seconds / max(self.count, 1)
        return (f"{self.count} {what} in {self.seconds:.1f} s ({self.count / max(self.seconds, 1e-9):.1f}/s; "
                f"generation {per * 1000:.1f} ms each)")


def frame_rng(seed: int, set_name: str, index: int, attempt: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, SET_CODES[set_name], index, attempt])


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img")


def _write_json(path: Path, content: dict) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(content, indent=2) + "\n"))


def _check_size(height: int, width: int) -> None:
    if height < 32 or width < 32:
        raise DatasetError(f"frame size must be at least 32x32 pixels, got {height}x{width}")


def _check_count(count: int, what: str) -> None:
    if count < 0:
        raise DatasetError(f"number of {what} must be >= 0, got {count}")


def train_ids(frame: Frame) -> np.ndarray:
    """Cityscapes trainIds: anomaly pixels are void (255), as Cityscapes has no class for them."""
    return np.where(frame.labels == ANOMALY_LABEL, IGNORE_ID, frame.labels).astype(np.uint8)


def label_ids(train: np.ndarray) -> np.ndarray:
    table = np.zeros(256, np.uint8)  # void -> 0 ("unlabeled")
    table[: len(TRAIN_TO_LABEL_ID)] = TRAIN_TO_LABEL_ID
    return table[train]


def instance_ids(frame: Frame, train: np.ndarray) -> np.ndarray:
    """Cityscapes instanceIds: ``labelId * 1000 + k`` on thing instances, the labelId elsewhere."""
    ids = label_ids(train).astype(np.uint16)
    things = (frame.instances > 0) & (train >= 11) & (train <= 18)
    if things.any():
        _, k = np.unique(frame.instances[things], return_inverse=True)
        ids[things] = ids[things] * 1000 + k.astype(np.uint16)
    return ids


def _write_cityscapes_frame(out: Path, split: str, height: int, width: int, seed: int, index: int) -> float:
    tick = time.perf_counter()
    frame = generate_frame(frame_rng(seed, split, index), height, width)
    seconds = time.perf_counter() - tick
    image_dir, label_dir = out / "leftImg8bit" / split / CITY, out / "gtFine" / split / CITY
    stem = f"{CITY}_{index:06d}_000019"
    train = train_ids(frame)
    write_png(image_dir / f"{stem}_leftImg8bit.png", frame.image)
    write_png(label_dir / f"{stem}_gtFine_labelTrainIds.png", train)
    write_png(label_dir / f"{stem}_gtFine_labelIds.png", label_ids(train))
    write_png(label_dir / f"{stem}_gtFine_instanceIds.png", instance_ids(frame, train))
    return seconds


def _run(task, count: int, workers: int, desc: str, progress: bool) -> float:
    """Call ``task(index)`` for every index (in worker processes when ``workers`` > 1: every item depends
    only on its index, so the files are the same); return the seconds spent generating."""
    if workers < 1:
        raise DatasetError(f"workers must be >= 1, got {workers}")
    if workers == 1 or count < 2:
        return sum(_progress((task(index) for index in range(count)), count, desc, progress))
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = pool.map(task, range(count), chunksize=max(1, min(16, count // (4 * workers))))
        return sum(_progress(results, count, desc, progress))


def write_cityscapes(out: str | Path, splits: dict[str, int], height: int = 512, width: int = 1024,
                     seed: int = 0, progress: bool = True, workers: int = 1) -> WriteStats:
    out = Path(out)
    _check_size(height, width)
    for split, count in splits.items():
        if split not in ("train", "val", "test"):
            raise DatasetError(f"Cityscapes split must be train, val or test, got {split!r}")
        _check_count(count, f"{split} frames")
    start, generating = time.perf_counter(), 0.0
    for split, count in splits.items():
        task = partial(_write_cityscapes_frame, out, split, height, width, seed)
        generating += _run(task, count, workers, f"cityscapes {split}", progress)
    _write_json(out / "synth.json", {"layout": "cityscapes", "splits": splits, "height": height, "width": width,
                                     "seed": seed, "classes": list(CITYSCAPES.names)})
    return WriteStats(sum(splits.values()), time.perf_counter() - start, generating)


def anomaly_frame(seed: int, index: int, height: int, width: int, min_anomalies: int, max_anomalies: int
                  ) -> Frame:
    """Frame ``index`` of the anomaly benchmark: redrawn (new attempt seed) until an anomaly is visible."""
    for attempt in range(MAX_ATTEMPTS):
        rng = frame_rng(seed, "anomaly", index, attempt)
        frame = generate_frame(rng, height, width, anomalies=int(rng.integers(min_anomalies, max_anomalies + 1)))
        if frame.anomaly_mask.any():
            return frame
    raise DatasetError(f"no visible anomaly in {MAX_ATTEMPTS} attempts at {height}x{width}: frames too small?")


def anomaly_labels(frame: Frame) -> np.ndarray:
    """Benchmark labels: 1 anomaly, 0 inlier, 255 void."""
    labels = np.where(frame.labels == ANOMALY_LABEL, 1, 0).astype(np.uint8)
    labels[frame.labels == IGNORE_ID] = 255
    return labels


def open_set_labels(frame: Frame) -> np.ndarray:
    """trainIds with ``UNKNOWN_ID`` on anomalies and 255 void."""
    return np.where(frame.labels == ANOMALY_LABEL, UNKNOWN_ID, frame.labels).astype(np.uint8)


def _write_anomaly_frame(out: Path, height: int, width: int, seed: int, min_anomalies: int, max_anomalies: int,
                         index: int) -> float:
    tick = time.perf_counter()
    frame = anomaly_frame(seed, index, height, width, min_anomalies, max_anomalies)
    seconds = time.perf_counter() - tick
    name = f"{CITY}_{index:06d}"
    write_png(out / "images" / f"{name}.png", frame.image)
    write_png(out / "labels_masks" / f"{name}.png", anomaly_labels(frame))
    write_png(out / "labels_semantic" / f"{name}.png", open_set_labels(frame))
    return seconds


# Anomalies per benchmark frame unless told otherwise (the bundled model's held-out set and its sample bag).
MIN_ANOMALIES, MAX_ANOMALIES = 1, 4


def write_anomaly_benchmark(out: str | Path, count: int, height: int = 512, width: int = 1024, seed: int = 0,
                            min_anomalies: int = MIN_ANOMALIES, max_anomalies: int = MAX_ANOMALIES,
                            progress: bool = True,
                            workers: int = 1) -> WriteStats:
    out = Path(out)
    _check_size(height, width)
    _check_count(count, "anomaly frames")
    if not 1 <= min_anomalies <= max_anomalies:
        raise DatasetError(f"anomalies per frame need 1 <= min <= max, got {min_anomalies}, {max_anomalies}")
    start = time.perf_counter()
    task = partial(_write_anomaly_frame, out, height, width, seed, min_anomalies, max_anomalies)
    generating = _run(task, count, workers, "anomaly benchmark", progress)
    _write_json(out / "synth.json", {
        "layout": "fs_lost_and_found", "count": count, "height": height, "width": width, "seed": seed,
        "anomalies_per_frame": [min_anomalies, max_anomalies],
        "labels_masks": "0 inlier, 1 anomaly, 255 void",
        "labels_semantic": f"Cityscapes trainIds, {UNKNOWN_ID} anomaly, 255 void"})
    return WriteStats(count, time.perf_counter() - start, generating)


def _write_outlier(out: Path, seed: int, min_size: int, max_size: int, index: int) -> float:
    tick = time.perf_counter()
    image, annotation, _ = outlier_example(frame_rng(seed, "outliers", index), min_size, max_size)
    seconds = time.perf_counter() - tick
    name = f"outlier_{index:06d}"
    write_png(out / "images" / f"{name}.png", image)
    write_png(out / "ood_annotations" / f"{name}.png", annotation)
    return seconds


def write_outlier_pool(out: str | Path, count: int, seed: int = 0, min_size: int = 24, max_size: int = 160,
                       progress: bool = True, workers: int = 1) -> WriteStats:
    out = Path(out)
    _check_count(count, "outliers")
    if not 3 <= min_size <= max_size:
        raise DatasetError(f"outlier sizes need 3 <= min-size <= max-size, got {min_size}, {max_size}")
    start = time.perf_counter()
    generating = _run(partial(_write_outlier, out, seed, min_size, max_size), count, workers, "outlier pool",
                      progress)
    _write_json(out / "synth.json", {"layout": "anomalymix_pool", "count": count, "seed": seed,
                                     "sizes": [min_size, max_size], "ood_annotations": "254 object, 0 elsewhere"})
    return WriteStats(count, time.perf_counter() - start, generating)


def _open_set_convert(raw: np.ndarray) -> np.ndarray:
    bad = (raw > 18) & (raw != UNKNOWN_ID) & (raw != IGNORE_ID)
    if bad.any():
        raise DatasetError(f"synthetic open-set labels hold values {np.unique(raw[bad])[:8].tolist()}; "
                           f"expected trainIds 0..18, {UNKNOWN_ID} (anomaly) or 255")
    return raw.astype(np.uint8)


def open_set_semantic(root: str | Path) -> LabelledImages:
    """The anomaly benchmark's ``labels_semantic`` as a semantic set (open-set mIoU with unknowns)."""
    root = Path(root)
    labels = require_dir(root / "labels_semantic", "synthetic open-set")
    samples = pair_by_name("synthetic open-set", images_in(require_dir(root / "images", "synthetic open-set")),
                           lambda p: labels / f"{p.stem}.png")
    return LabelledImages("synthetic_open_set", "semantic", samples, _open_set_convert,
                          class_names=CITYSCAPES.names)
