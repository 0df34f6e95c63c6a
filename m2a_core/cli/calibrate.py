"""``m2a calibrate``: the open-set score threshold at a target true-positive rate on a labelled set.

DIR is in the anomaly benchmark layout (DIR/images/<name>.png RGB, DIR/labels/<name>.png uint8 with 0 inlier,
1 anomaly, 255 void). Writes the calibration JSON (default: ``<weights stem>.calibration.json`` next to the
weights, where the predictor and the ROS node look) and a histogram picture next to it.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from m2a_core.cli.infer import add_predictor_arguments, build_predictor
from m2a_core.errors import M2AError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("calibrate", help="open-set threshold at a target true-positive rate on labelled images")
    add_predictor_arguments(parser)
    parser.add_argument("--data", required=True,
                        help="folder with images/<name>.png and labels/<name>.png (0 inlier, 1 anomaly, 255 void)")
    parser.add_argument("--tpr", type=float, default=0.95,
                        help="share of anomaly pixels that must reach the threshold (default 0.95, as the paper)")
    parser.add_argument("--score", choices=("anomaly", "anomaly_no_refine"), default="anomaly",
                        help="which score map the threshold applies to (default: the refined anomaly score)")
    parser.add_argument("--out", default=None,
                        help="calibration JSON to write (default: <weights stem>.calibration.json beside the weights)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from m2a_core.checkpoint import sha256_file
    from m2a_core.openset.calibration import (
        anomaly_dataset_pairs,
        calibrate,
        default_calibration_path,
        plot_calibration,
        save_calibration,
    )

    if not 0.0 < args.tpr <= 1.0:
        raise M2AError(f"--tpr must be in (0, 1], got {args.tpr}")
    pairs = anomaly_dataset_pairs(args.data)       # layout errors before the model loads
    predictor = build_predictor(args)
    out = Path(args.out) if args.out else default_calibration_path(args.weights)
    calibration, accumulator = calibrate(
        predictor, pairs, args.tpr, weights_sha256=sha256_file(args.weights), classes=predictor.config.classes,
        score=args.score, predictor_options=asdict(predictor.options))
    save_calibration(calibration, out)
    picture = out.with_suffix(".png")
    plot_calibration(accumulator, calibration, picture)
    print(f"threshold {calibration.threshold:.6g} on '{calibration.score}': TPR {calibration.achieved_tpr:.4f} "
          f"(asked {calibration.tpr}), FPR {calibration.fpr:.4f} over {calibration.num_images} images, "
          f"{calibration.num_anomaly_pixels} anomaly / {calibration.num_inlier_pixels} inlier pixels")
    print(f"wrote {out} and {picture}")
    return 0
