"""``m2a eval``: benchmark metrics, exactly as the benchmarks define them.

- ``m2a eval scores --scores DIR --labels DIR --json OUT``: metrics of saved score maps
  (``<name>.npy`` float [H, W]) against labels (``<name>.png`` uint8: 0 inlier, 1 anomaly, 255 void);
- ``m2a eval run --weights W --dataset NAME --root DIR``: run the predictor over a benchmark, save its
  score maps, evaluate them and write the table (markdown, CSV, JSON) and the PR/ROC curves (PNG).
  Anomaly benchmarks get the pixel and component metrics; semantic ones (Cityscapes, StreetHazards)
  open-IoU: StreetHazards with its cross-town threshold protocol, others closed-set unless --threshold.
"""
from __future__ import annotations

import argparse
import json
import math
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
    add_metric_arguments(scores)
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
    add_metric_arguments(run, track_default=None)
    run.set_defaults(func=run_model)


def add_metric_arguments(parser: argparse.ArgumentParser, track_default: str | None = "anomaly") -> None:
    """--track, --threshold and --skip-without-anomaly: the options of ``evaluate_anomaly``, shared by every
    command that evaluates score maps (``m2a eval scores|run``, ``m2a_bag_eval``)."""
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


def write_score_map(path: Path, scores: np.ndarray) -> None:
    """Write a score map as ``<name>.npy`` (what ``read_score_map`` and ``m2a eval scores`` read), atomically."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npy", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, scores)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run_model(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from m2a_core.cli.infer import build_predictor
    from m2a_core.datasets import open_dataset
    from m2a_core.imageio import write_png

    dataset = open_dataset(args.dataset, args.root)
    if args.limit < 0:
        raise M2AError(f"--limit must be >= 0, got {args.limit}")
    samples = dataset.samples[: args.limit] if args.limit else dataset.samples
    if not samples:
        raise DatasetError(f"{args.dataset}: no frames to evaluate")
    out = Path(args.out or Path("out") / "eval" / args.dataset)
    frames_dir = out / "scores"
    frames_dir.mkdir(parents=True, exist_ok=True)
    predictor = build_predictor(args)
    if dataset.kind == "semantic" and predictor.class_set.num_classes != len(dataset.class_names):
        raise M2AError(f"the model predicts {predictor.class_set.num_classes} classes ({predictor.class_set.name}) "
                       f"but {args.dataset} has {len(dataset.class_names)}")
    # Score maps (and class maps) go to disk: the metrics need a second pass, and `m2a eval scores`
    # can re-evaluate anomaly score maps later without the model.
    for sample in tqdm(samples, desc=f"predict {args.dataset}", unit="frame"):
        image, labels = dataset.read_image(sample), dataset.read_labels(sample)
        if image.shape[:2] != labels.shape:
            raise DatasetError(f"image {sample.image} is {image.shape[:2]} but its labels are {labels.shape}")
        prediction = predictor(image)
        write_score_map(frames_dir / f"{sample.name}.npy", prediction.anomaly.astype(np.float32))
        write_png(frames_dir / f"{sample.name}.png", labels)
        if dataset.kind == "semantic":
            write_png(frames_dir / f"{sample.name}_semseg.png", prediction.semseg)
    names = [s.name for s in samples]
    if dataset.kind == "anomaly":
        results, curves = _evaluate_anomaly_run(args, dataset, frames_dir, set(names))
        columns = None
    else:
        results, curves = _evaluate_semantic_run(args, dataset, frames_dir, names), {}
        columns = ("open_mIoU", "unknown_IoU")
    results.update(dataset=args.dataset, weights=str(args.weights), tta=args.tta, refine=not args.no_refine)
    markdown = write_results(results, curves, args.dataset, out / "results.json", out / "curves.png")
    if columns:
        markdown, csv_text = results_table({args.dataset: results}, columns)
    else:
        _, csv_text = results_table({args.dataset: results})
    atomic_write_text(out / "results.md", markdown)
    atomic_write_text(out / "results.csv", csv_text)
    print(markdown, end="")
    print(f"Values in percent. Written: {out}/results.{{md,csv,json}}"
          + (f", {out}/curves.png" if curves else "") + f"; per-frame maps in {frames_dir}")
    return 0


def _evaluate_anomaly_run(args, dataset, frames_dir: Path, names: set[str]) -> tuple[dict, dict]:
    # Only this run's frames: an earlier, longer run may have left others in the folder.
    full_source = score_folder_source(frames_dir, frames_dir)

    def source():
        return (frame for frame in full_source() if frame[0] in names)

    return evaluate_anomaly(source, track=args.track or dataset.track, threshold=args.threshold,
                            skip_without_anomaly=args.skip_without_anomaly)


def _evaluate_semantic_run(args, dataset, frames_dir: Path, names: list[str]) -> dict:
    from m2a_core.datasets.base import read_label_png
    from m2a_core.metrics.openset import OpenSetIoU, open_set_labels, street_hazards_open_miou

    def frames(subset: list[str]):
        for name in subset:
            yield (name, read_score_map(frames_dir / f"{name}.npy"),
                   read_label_png(frames_dir / f"{name}_semseg.png"), read_label_png(frames_dir / f"{name}.png"))

    num_classes = len(dataset.class_names)
    if dataset.name == "street_hazards_semantic" and args.threshold is None:
        towns: dict[str, list[str]] = {}
        for name in names:
            towns.setdefault(name.split("_", 1)[0], []).append(name)
        if len(towns) != 2:
            raise M2AError(f"the StreetHazards protocol needs frames of both test towns; got {sorted(towns)} "
                           "(use --threshold with --limit)")
        results = street_hazards_open_miou({t: (lambda n=n: frames(n)) for t, n in towns.items()}, num_classes,
                                           dataset.class_names)
        results["protocol"] = "StreetHazards (DenseHybrid): threshold at TPR > 0.95 of the other town"
        return results
    metric = OpenSetIoU(num_classes, dataset.class_names)
    threshold = math.inf if args.threshold is None else args.threshold
    for _, scores, semseg, labels in frames(names):
        metric.update(open_set_labels(semseg, scores, threshold), labels)
    results = metric.compute()
    results["threshold"] = None if args.threshold is None else args.threshold
    results["protocol"] = "closed set (no rejection)" if args.threshold is None else "open set at --threshold"
    return results
