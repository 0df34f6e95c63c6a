"""Build the AnomalyMix outlier pool from COCO instance annotations (official layout, see m2a_core.training.coco).

    python training/prepare_coco_outliers.py --instances datasets/coco/annotations/instances_train2017.json \
        --images datasets/coco/train2017 --out datasets/coco_outliers --num-images 300 --seed 0
"""
from __future__ import annotations

import argparse
import sys

from m2a_core.errors import M2AError
from m2a_core.training.coco import MIN_SIDE, prepare_outlier_pool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", required=True, help="COCO instances_train2017.json")
    parser.add_argument("--images", required=True, help="COCO train2017 image folder")
    parser.add_argument("--out", required=True, help="output pool folder (images/ and ood_annotations/)")
    parser.add_argument("--num-images", type=int, help="random sample size (paper: 300); default: all")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random sample")
    parser.add_argument("--min-side", type=int, default=MIN_SIDE, help="minimum image side in pixels")
    args = parser.parse_args(argv)
    try:
        stems = prepare_outlier_pool(args.instances, args.images, args.out, args.num_images, args.seed,
                                     args.min_side)
    except M2AError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(stems)} outlier images written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
