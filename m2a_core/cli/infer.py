"""``m2a infer``: anomaly heatmaps and overlays for image files (and raw outputs with --save-raw)."""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from m2a_core.backends import BACKENDS
from m2a_core.classes import UNKNOWN_SOURCES
from m2a_core.errors import M2AError
from m2a_core.imageio import read_rgb, write_npz, write_png
from m2a_core.visualize import anomaly_overlay, colorize_scores


def add_predictor_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs the predictor."""
    parser.add_argument("--weights", required=True,
                        help="m2a weights (.safetensors, see 'm2a convert'), or an 'm2a export' .onnx for the "
                             "onnxruntime and tensorrt backends")
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ... (default cpu)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16", "int8"), default="fp32",
                        help="torch: fp32, bf16, fp16 (CUDA); tensorrt: fp32, fp16, int8")
    parser.add_argument("--tta", action="store_true", help="average with the horizontally flipped view (official)")
    parser.add_argument("--no-refine", action="store_true", help="skip the refinement mask (deviation)")
    parser.add_argument("--short-side", type=int, default=1024,
                        help="resize so the short side is this (official 1024); 0 keeps the input size (deviation)")
    parser.add_argument("--max-size", type=int, default=2048, help="cap on the long side after resizing")
    parser.add_argument("--resize", choices=("pil", "device"), default="pil",
                        help="pil: official uint8 PIL bilinear; device: bilinear on the torch device (deviation)")


def build_predictor(args: argparse.Namespace):
    from m2a_core.predictor import Predictor

    device = args.device
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise M2AError(f"--device {device} asked for, but CUDA is not available on this machine")
    predictor = Predictor.from_weights(
        args.weights, device=device, backend=args.backend, precision=args.precision, tta=args.tta,
        refine=not args.no_refine,
        short_side=args.short_side or None, max_size=args.max_size or None, resize=args.resize)
    openset = openset_options(args, predictor.config.classes, predictor.options)
    if openset:
        predictor.options = replace(predictor.options, **openset)
    return predictor


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("infer", help="anomaly heatmaps and overlays for images")
    add_predictor_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--save-raw", action="store_true",
                        help="also write <stem>.npz with anomaly, anomaly_no_refine, semseg, pred_logits, pred_masks")
    add_openset_arguments(parser)
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    parser.set_defaults(func=run)


def add_openset_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("open-set outputs")
    group.add_argument("--openset", action="store_true",
                       help="also write open-set labels (<stem>_labels.png, <stem>_labels_color.png) and panoptic "
                            "segments (<stem>_instances.json, <stem>_panoptic.png); --save-raw adds labels and "
                            "instances to the npz")
    group.add_argument("--calibration", default=None,
                       help="calibration JSON from 'm2a calibrate' (default: <weights stem>.calibration.json)")
    group.add_argument("--threshold", type=float, default=None,
                       help="open-set score threshold instead of a calibration file (unknown where score >= it)")
    group.add_argument("--panoptic-resolution", choices=("full", "mask"), default="full",
                       help="panoptic at full resolution or at 1/4 with the id map upsampled (faster)")
    group.add_argument("--instance-source", choices=UNKNOWN_SOURCES, default="anomaly",
                       help="unknown instances: connected components of the unknown pixels (anomaly, as the node) "
                            "or the paper's background mining (background)")


def openset_options(args: argparse.Namespace, classes: str, current=None) -> dict:
    """Predictor options for --openset: the threshold from --threshold or the calibration file (with a warning
    when the file was made with other inference options than ``current``: its threshold may not carry over)."""
    if not getattr(args, "openset", False):
        return {}
    if args.threshold is not None:
        threshold, score = args.threshold, "anomaly"
    else:
        from m2a_core.openset.calibration import calibration_for_weights

        calibration = calibration_for_weights(args.weights, classes, args.calibration)
        threshold, score = calibration.threshold, calibration.score
        if current is not None:
            differ = sorted(k for k in ("short_side", "max_size", "resize", "tta", "refine")
                            if k in calibration.predictor_options
                            and calibration.predictor_options[k] != getattr(current, k))
            if differ:
                print(f"m2a: warning: the calibration was made with other {', '.join(differ)} than this run; "
                      "its threshold may not give the calibrated TPR", file=sys.stderr)
    from m2a_core.openset.panoptic import PanopticParams

    return {"openset_threshold": threshold, "openset_score": score, "panoptic": True,
            "panoptic_resolution": args.panoptic_resolution,
            "panoptic_params": PanopticParams(unknown_source=args.instance_source, anomaly_threshold=threshold)}


def run(args: argparse.Namespace) -> int:
    # Read every input first: a typo in the last file name should not cost a long run.
    paths = [Path(p) for p in args.images]
    for path in paths:
        if not path.is_file():
            raise M2AError(f"image {path} does not exist")
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        raise M2AError("two input images share a file name stem; outputs would overwrite each other")
    predictor = build_predictor(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in tqdm(paths, desc="m2a infer", unit="img", disable=len(paths) < 2):
        image = read_rgb(path)
        pred = predictor(image)
        write_png(out / f"{path.stem}_anomaly.png", colorize_scores(pred.anomaly))
        write_png(out / f"{path.stem}_overlay.png", anomaly_overlay(image, pred.anomaly))
        extra = {}
        if args.openset:
            write_openset_outputs(out, path.stem, pred, predictor)
            extra = {"labels": pred.labels, "instances": pred.instances}
        if args.save_raw:
            write_npz(out / f"{path.stem}.npz", anomaly=pred.anomaly, anomaly_no_refine=pred.anomaly_no_refine,
                      semseg=pred.semseg, pred_logits=pred.pred_logits, pred_masks=pred.pred_masks, **extra)
    print(f"wrote {len(paths)} result(s) to {out}")
    return 0


def write_openset_outputs(out: Path, stem: str, pred, predictor) -> None:
    import json

    from m2a_core.checkpoint import atomic_write
    from m2a_core.classes import UNKNOWN_ID
    from m2a_core.openset.panoptic import colorize_panoptic, segments_json
    from m2a_core.visualize import colorize_labels

    class_set = predictor.class_set
    write_png(out / f"{stem}_labels.png", pred.labels)
    write_png(out / f"{stem}_labels_color.png", colorize_labels(pred.labels, class_set))
    write_png(out / f"{stem}_panoptic.png", colorize_panoptic(pred.instances, pred.segments, class_set))
    options = predictor.options
    document = {
        "image": stem, "height": int(pred.instances.shape[0]), "width": int(pred.instances.shape[1]),
        "classes": class_set.name, "unknown_id": UNKNOWN_ID, "openset_threshold": options.openset_threshold,
        "openset_score": options.openset_score, "bbox_format": "xywh",
        "segments": segments_json(pred.segments, class_set),
    }
    text = json.dumps(document, indent=1) + "\n"
    atomic_write(out / f"{stem}_instances.json", lambda tmp: Path(tmp).write_text(text))
