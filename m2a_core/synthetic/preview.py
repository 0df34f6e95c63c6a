"""Contact sheets of written synthetic sets (read back from disk, so they show exactly what tools read)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from m2a_core.classes import CITYSCAPES
from m2a_core.datasets.base import read_image_rgb, read_label_png
from m2a_core.plots import _atomic_savefig
from m2a_core.visualize import colorize_labels


def contact_sheet(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], path: str | os.PathLike,
                  title: str) -> None:
    """One PNG: a row per sample, a column per panel (RGB images or colourised labels)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    columns = max(len(panels) for _, panels in rows)
    height, width = rows[0][1][0][1].shape[:2]
    panel_width = {1: 12.0, 2: 5.0}.get(columns, 4.2)
    figure, axes = pyplot.subplots(len(rows), columns, squeeze=False,
                                   figsize=(panel_width * columns, panel_width * height / width * len(rows) + 0.6))
    try:
        for row, (name, panels) in zip(axes, rows, strict=True):
            for axis in row:
                axis.axis("off")
            for axis, (caption, picture) in zip(row, panels, strict=False):
                axis.imshow(picture, interpolation="nearest")
                axis.set_title(f"{name}: {caption}", fontsize=7)
        figure.suptitle(title, fontsize=10)
        figure.tight_layout()
        _atomic_savefig(figure, Path(path))
    finally:
        pyplot.close(figure)


def _mask_picture(mask_labels: np.ndarray) -> np.ndarray:
    """0 inlier dark grey, 1 anomaly white, 255 void orange-brown."""
    picture = np.full((*mask_labels.shape, 3), 40, np.uint8)
    picture[mask_labels == 1] = 255
    picture[mask_labels == 255] = (120, 70, 20)
    return picture


def preview_cityscapes(root: str | Path, split: str, path: str | os.PathLike, count: int = 6) -> None:
    from m2a_core.datasets.semantic import cityscapes

    dataset = cityscapes(Path(root), split)
    rows = [(sample.name, [("image", dataset.read_image(sample)),
                           ("trainIds", colorize_labels(dataset.read_labels(sample), CITYSCAPES))])
            for sample in dataset.samples[:count]]
    contact_sheet(rows, path, f"synthetic Cityscapes, {split} ({len(dataset)} frames)")


def preview_anomaly(root: str | Path, path: str | os.PathLike, count: int = 6) -> None:
    from m2a_core.datasets.anomaly import fs_lost_and_found

    dataset = fs_lost_and_found(Path(root))
    rows = []
    for sample in dataset.samples[:count]:
        semantic = read_label_png(Path(root) / "labels_semantic" / sample.label.name)
        rows.append((sample.name, [("image", dataset.read_image(sample)),
                                   ("classes (white: anomaly)", colorize_labels(semantic, CITYSCAPES)),
                                   ("anomaly mask", _mask_picture(dataset.read_labels(sample)))]))
    contact_sheet(rows, path, f"synthetic anomaly benchmark ({len(dataset)} frames, Fishyscapes L&F layout)")


def preview_outliers(root: str | Path, path: str | os.PathLike, count: int = 24) -> None:
    root = Path(root)
    masks = sorted((root / "ood_annotations").glob("*.png"))[:count]
    size = 128
    tiles = []
    for mask_path in masks:
        thumbnail = Image.fromarray(read_image_rgb(root / "images" / mask_path.name))
        thumbnail.thumbnail((size, size))
        tile = np.full((size, size, 3), 255, np.uint8)
        crop = np.asarray(thumbnail)
        tile[: crop.shape[0], : crop.shape[1]] = crop
        tiles.append(tile)
    per_row = 6
    rows = [(f"{index}-{index + per_row - 1}", [("", np.concatenate(tiles[index:index + per_row]
                                                                        + [np.full((size, size, 3), 255, np.uint8)]
                                                                        * (per_row - len(tiles[index:index + per_row])),
                                                                        axis=1))])
            for index in range(0, len(tiles), per_row)]
    contact_sheet(rows, path, f"synthetic AnomalyMix outlier pool (first {len(tiles)})")
