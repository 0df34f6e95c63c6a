"""Result plots (matplotlib, Agg backend, written atomically): PR and ROC curves of an evaluation."""
from __future__ import annotations

import os
import tempfile
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
