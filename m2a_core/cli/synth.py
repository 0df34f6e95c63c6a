"""``m2a synth``: write the built-in synthetic road world in public dataset layouts.

- ``m2a synth cityscapes --out DIR --train N --val M``: Cityscapes layout (leftImg8bit + gtFine trainIds);
- ``m2a synth anomaly --out DIR --num N``: anomaly benchmark in the Fishyscapes Lost&Found layout
  (0 inlier / 1 anomaly / 255 void) plus open-set class labels;
- ``m2a synth outliers --out DIR --num N``: AnomalyMix outlier pool (images + ood_annotations).

``--preview PNG`` writes a contact sheet of the first samples, read back through the dataset readers.
Prints the generation speed. Frame i depends only on (--seed, set, i).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from m2a_core.errors import M2AError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("synth", help="write the synthetic road world (Cityscapes, anomaly benchmark, outliers)")
    sets = parser.add_subparsers(dest="synth_set", required=True, metavar="SET")

    city = _set_parser(sets, "cityscapes", "Cityscapes-layout training/validation frames (no anomalies)",
                       run_cityscapes, frames=True)
    city.add_argument("--train", type=int, default=0, help="frames in the train split")
    city.add_argument("--val", type=int, default=0, help="frames in the val split")

    anomaly = _set_parser(sets, "anomaly", "anomaly benchmark, Fishyscapes Lost&Found layout (0/1/255)",
                          run_anomaly, frames=True, count="number of frames")
    anomaly.add_argument("--min-anomalies", type=int, default=1, help="fewest anomaly objects per frame")
    anomaly.add_argument("--max-anomalies", type=int, default=4, help="most anomaly objects per frame")

    outliers = _set_parser(sets, "outliers", "AnomalyMix outlier pool (images/ + ood_annotations/)",
                           run_outliers, frames=False, count="number of outlier objects")
    outliers.add_argument("--min-size", type=int, default=24, help="smallest object width in pixels")
    outliers.add_argument("--max-size", type=int, default=160, help="largest object width in pixels")


def _set_parser(sets: argparse._SubParsersAction, name: str, summary: str, run: Callable[[argparse.Namespace], int],
                frames: bool, count: str | None = None) -> argparse.ArgumentParser:
    """``m2a synth NAME`` with the arguments every set takes; ``frames`` adds the frame size, ``count`` a
    required ``--num`` (its help text). The set's own arguments are added by the caller."""
    parser = sets.add_parser(name, help=summary)
    parser.add_argument("--out", required=True, help="output folder (created; files are overwritten)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    parser.add_argument("--preview", default=None, help="also write a contact sheet of samples to this PNG")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes that draw and write in parallel (same files for any number)")
    if count is not None:
        parser.add_argument("--num", type=int, required=True, help=count)
    if frames:
        parser.add_argument("--height", type=int, default=512, help="frame height in pixels")
        parser.add_argument("--width", type=int, default=1024, help="frame width in pixels")
    parser.set_defaults(func=run)
    return parser


def _checked_output(args: argparse.Namespace) -> Path:
    """The output folder, after checking the arguments every set shares (seed, and --num where there is one)."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise M2AError(f"--out {out} exists and is not a folder")
    if args.seed < 0:
        raise M2AError(f"--seed must be >= 0, got {args.seed}")
    if getattr(args, "num", 1) < 1:
        raise M2AError(f"--num must be >= 1, got {args.num}")
    return out


def _write_preview(args: argparse.Namespace, draw: Callable[[str], None]) -> None:
    if args.preview:
        draw(args.preview)
        print(f"preview: {args.preview}")


def run_cityscapes(args: argparse.Namespace) -> int:
    from m2a_core.synthetic.preview import preview_cityscapes
    from m2a_core.synthetic.writer import write_cityscapes

    out = _checked_output(args)
    splits = {name: count for name, count in (("train", args.train), ("val", args.val)) if count}
    if not splits:
        raise M2AError("nothing to write: give --train N and/or --val M")
    stats = write_cityscapes(out, splits, args.height, args.width, args.seed, progress=not args.no_progress,
                             workers=args.workers)
    print(f"m2a synth cityscapes: {stats.summary('frames')} -> {out}")
    _write_preview(args, lambda path: preview_cityscapes(out, next(iter(splits)), path))
    return 0


def run_anomaly(args: argparse.Namespace) -> int:
    from m2a_core.synthetic.preview import preview_anomaly
    from m2a_core.synthetic.writer import write_anomaly_benchmark

    out = _checked_output(args)
    stats = write_anomaly_benchmark(out, args.num, args.height, args.width, args.seed, args.min_anomalies,
                                    args.max_anomalies, progress=not args.no_progress, workers=args.workers)
    print(f"m2a synth anomaly: {stats.summary('frames')} -> {out} (read it as --dataset fs_lost_and_found)")
    _write_preview(args, lambda path: preview_anomaly(out, path))
    return 0


def run_outliers(args: argparse.Namespace) -> int:
    from m2a_core.synthetic.preview import preview_outliers
    from m2a_core.synthetic.writer import write_outlier_pool

    out = _checked_output(args)
    stats = write_outlier_pool(out, args.num, args.seed, args.min_size, args.max_size,
                               progress=not args.no_progress, workers=args.workers)
    print(f"m2a synth outliers: {stats.summary('objects')} -> {out}")
    _write_preview(args, lambda path: preview_outliers(out, path))
    return 0
