"""Result plots (matplotlib, Agg backend, written atomically): PR and ROC curves of an evaluation, picture grids."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _atomic_savefig(figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        figure.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def plot_pr_roc(curves: dict[str, np.ndarray], metrics: dict, title: str, path: str | os.PathLike) -> None:
    """One PNG with the precision-recall curve (left) and the ROC curve (right), metrics in the legends."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (pr_axis, roc_axis) = pyplot.subplots(1, 2, figsize=(11, 4.8))
    try:
        pr_axis.plot(curves["recall"], curves["precision"], label=f"AuPRC {100 * metrics['AuPRC']:.2f}")
        pr_axis.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="precision-recall")
        roc_axis.plot(curves["fpr"], curves["tpr"],
                      label=f"AUROC {100 * metrics['AUROC']:.2f}, FPR95 {100 * metrics['FPR95']:.2f}")
        roc_axis.axhline(0.95, color="grey", linestyle=":", linewidth=1)
        roc_axis.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02),
                     title="ROC")
        for axis in (pr_axis, roc_axis):
            axis.grid(True, alpha=0.3)
            axis.legend(loc="lower left" if axis is pr_axis else "lower right")
        figure.suptitle(title)
        figure.tight_layout()
        _atomic_savefig(figure, Path(path))
    finally:
        pyplot.close(figure)


def picture_grid(rows: Sequence[Sequence[np.ndarray | None]], path: str | os.PathLike, column_titles: Sequence[str],
                 row_labels: Sequence[str] | None = None, title: str | None = None, panel_width: float = 3.3) -> None:
    """One PNG: a row per frame, a column per picture (uint8 RGB; None or a missing one: an empty panel), titles
    over the first row, ``row_labels`` beside the rows. Panels are sized by the first picture's aspect ratio."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    height, width = next(p for row in rows for p in row if p is not None).shape[:2]
    columns = len(column_titles)
    figure, axes = pyplot.subplots(len(rows), columns, squeeze=False, figsize=(
        panel_width * columns, len(rows) * (panel_width * height / width + 0.35) + (0.4 if title else 0.0)))
    try:
        for index, (row_axes, pictures) in enumerate(zip(axes, rows, strict=True)):
            for column, axis in enumerate(row_axes):
                picture = pictures[column] if column < len(pictures) else None
                if picture is None:
                    axis.axis("off")
                    continue
                axis.imshow(picture)
                axis.set_xticks([])
                axis.set_yticks([])
            if row_labels is not None:
                row_axes[0].set_ylabel(row_labels[index], fontsize=7)
        for axis, column_title in zip(axes[0], column_titles, strict=True):
            axis.set_title(column_title, fontsize=7)
        if title:
            figure.suptitle(title, fontsize=10)
        figure.tight_layout()
        _atomic_savefig(figure, Path(path))
    finally:
        pyplot.close(figure)
