"""``m2a eval``: benchmark metrics, exactly as the benchmarks define them.

- ``m2a eval scores --scores DIR --labels DIR --json OUT``: metrics of saved score maps
  (``<name>.npy`` float [H, W]) against labels (``<name>.png`` uint8: 0 inlier, 1 anomaly, 255 void);
- ``m2a eval run --weights W --dataset NAME --root DIR``: run the predictor over a benchmark, save its
  score maps, evaluate them and write the table (markdown, CSV, JSON) and the PR/ROC curves (PNG).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from m2a_core.errors import DatasetError, M2AError
from m2a_core.metrics.evaluate import FrameSource, evaluate_anomaly, json_ready, results_table
from m2a_core.metrics.smiyc import TRACKS

LABEL_VALUES = (0, 1, 255)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("eval", help="benchmark metrics (AuPRC, FPR95, sIoU, ...) of score maps or a model")
    commands = parser.add_subparsers(dest="eval_command", required=True, metavar="WHAT")

    scores = commands.add_parser("scores", help="evaluate saved score maps against label PNGs")
    scores.add_argument("--scores", required=True, help="folder of <name>.npy float score maps")
    scores.add_argument("--labels", required=True, help="folder of <name>.png labels (0, 1, 255)")
    _add_metric_arguments(scores)
    scores.add_argument("--json", required=True, help="write the metrics here (JSON, fractions in [0, 1])")
    scores.add_argument("--plot", default=None, help="also write the PR and ROC curves to this PNG")
    scores.set_defaults(func=run_scores)

    run = commands.add_parser("run", help="run the predictor over a benchmark and evaluate it")
    from m2a_core.cli.infer import add_predictor_arguments
    from m2a_core.datasets import DATASET_NAMES

    add_predictor_arguments(run)
    run.add_argument("--dataset", required=True, choices=DATASET_NAMES, help="benchmark name")
    run.add_argument("--root", required=True, help="the benchmark's folder (layouts: m2a_core/datasets)")
    run.add_argument("--out", default=None, help="output folder (default out/eval/<dataset>)")
    run.add_argument("--limit", type=int, default=0, help="only the first N frames (0: all)")
    _add_metric_arguments(run, track_default=None)
    run.set_defaults(func=run_model)


def _add_metric_arguments(parser: argparse.ArgumentParser, track_default: str | None = "anomaly") -> None:
    parser.add_argument("--track", choices=sorted(TRACKS), default=track_default,
                        help="SegmentMeIfYouCan component size filters: anomaly 500/100 px, obstacle 50/10 px"
                             + ("" if track_default else " (default: the dataset's own)"))
    parser.add_argument("--threshold", type=float, default=None,
                        help="score threshold of the component metrics (default: best pixel F1)")
    parser.add_argument("--skip-without-anomaly", action="store_true",
                        help="drop frames without anomaly pixels, like the official Mask2Anomaly script "
                             "(the benchmarks keep them)")


def read_score_map(path: Path) -> np.ndarray:
    try:
        scores = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read score map {path}: {exc}") from None
    if scores.ndim != 2 or not np.issubdtype(scores.dtype, np.floating):
        raise DatasetError(f"score map {path} must be a float [H, W] array, got {scores.dtype} {scores.shape}")
    return scores


def read_binary_labels(path: Path) -> np.ndarray:
    from m2a_core.datasets.base import read_label_png

    labels = read_label_png(path)
    unexpected = np.setdiff1d(np.unique(labels), LABEL_VALUES)
    if unexpected.size:
        raise DatasetError(f"labels {path} contain values {unexpected[:8].tolist()}; expected 0 (inlier), "
                           "1 (anomaly) and 255 (void)")
    return labels.astype(np.uint8)


def score_folder_source(scores_dir: Path, labels_dir: Path) -> FrameSource:
    """Pair <name>.npy with <name>.png up front (a missing file fails before any work), read lazily."""
    for folder, what in ((scores_dir, "--scores"), (labels_dir, "--labels")):
        if not folder.is_dir():
            raise DatasetError(f"{what} folder {folder} does not exist")
    score_files = sorted(scores_dir.glob("*.npy"))
    if not score_files:
        raise DatasetError(f"no <name>.npy score maps in {scores_dir}")
    missing = [p.stem for p in score_files if not (labels_dir / f"{p.stem}.png").is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} score map(s) have no label PNG in {labels_dir}, e.g. {missing[0]}.png")

    def frames():
        for path in score_files:
            scores = read_score_map(path)
            labels = read_binary_labels(labels_dir / f"{path.stem}.png")
            if scores.shape != labels.shape:
                raise DatasetError(f"score map {path} is {scores.shape} but its labels are {labels.shape}")
            yield path.stem, scores, labels

    return frames


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_results(results: dict, curves: dict, name: str, json_path: Path, plot_path: Path | None) -> str:
    atomic_write_text(json_path, json.dumps(json_ready(results), indent=2, sort_keys=True) + "\n")
    if plot_path is not None and curves:
        from m2a_core.plots import plot_pr_roc

        plot_pr_roc(curves, results, name, plot_path)
    markdown, _ = results_table({name: results})
    return markdown


def run_scores(args: argparse.Namespace) -> int:
    source = score_folder_source(Path(args.scores), Path(args.labels))
    results, curves = evaluate_anomaly(source, track=args.track, threshold=args.threshold,
                                       skip_without_anomaly=args.skip_without_anomaly)
    markdown = write_results(results, curves, Path(args.scores).name, Path(args.json),
                             Path(args.plot) if args.plot else None)
    print(markdown, end="")
    print("FPR95: first TPR >= 0.95; FPR95_interp: official Mask2Anomaly script; smiyc_*: binned curve. "
          f"Written: {args.json}")
    return 0


def run_model(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from m2a_core.cli.infer import build_predictor
    from m2a_core.datasets import open_dataset
    from m2a_core.imageio import write_png

    dataset = open_dataset(args.dataset, args.root)
    if dataset.kind != "anomaly":
        raise M2AError(f"eval run scores anomaly benchmarks; {args.dataset} is a {dataset.kind} dataset")
    if args.limit < 0:
        raise M2AError(f"--limit must be >= 0, got {args.limit}")
    out = Path(args.out or Path("out") / "eval" / args.dataset)
    scores_dir = out / "scores"
    predictor = build_predictor(args)
    samples = dataset.samples[: args.limit] if args.limit else dataset.samples
    # Score maps go to disk: the component metrics need a second pass, and `m2a eval scores` can
    # re-evaluate them later without the model.
    for sample in tqdm(samples, desc=f"predict {args.dataset}", unit="frame"):
        image, labels = dataset.read_image(sample), dataset.read_labels(sample)
        if image.shape[:2] != labels.shape:
            raise DatasetError(f"image {sample.image} is {image.shape[:2]} but its labels are {labels.shape}")
        anomaly = predictor(image).anomaly.astype(np.float32)
        scores_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{sample.name}.", suffix=".npy", dir=scores_dir)
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, anomaly)
        os.replace(tmp, scores_dir / f"{sample.name}.npy")
        write_png(scores_dir / f"{sample.name}.png", labels)
    if not samples:
        raise DatasetError(f"{args.dataset}: no frames to evaluate")
    # Only this run's frames: an earlier, longer run may have left others in the folder.
    names = {s.name for s in samples}
    full_source = score_folder_source(scores_dir, scores_dir)

    def source():
        return (frame for frame in full_source() if frame[0] in names)

    results, curves = evaluate_anomaly(source, track=args.track or dataset.track, threshold=args.threshold,
                                       skip_without_anomaly=args.skip_without_anomaly)
    results.update(dataset=args.dataset, weights=str(args.weights), tta=args.tta, refine=not args.no_refine)
    markdown = write_results(results, curves, args.dataset, out / "results.json", out / "curves.png")
    _, csv_text = results_table({args.dataset: results})
    atomic_write_text(out / "results.md", markdown)
    atomic_write_text(out / "results.csv", csv_text)
    print(markdown, end="")
    print(f"Values in percent. FPR95: first TPR >= 0.95. Written: {out}/results.{{md,csv,json}}, "
          f"{out}/curves.png, score maps in {scores_dir}")
    return 0
