"""Write the open-set COCO panoptic training splits (5 / 10 / 20 % unknown thing classes, paper Sec. 7).

    python training/make_openset_coco.py datasets/coco/annotations/panoptic_train2017.json --unknown 5 10 20
"""
from __future__ import annotations

import argparse
import sys

from m2a_core.errors import M2AError
from m2a_core.training.coco import UNKNOWN_SPLITS, make_openset_split


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("panoptic_json", help="COCO panoptic_train2017.json (its PNG folder next to it)")
    parser.add_argument("--unknown", type=int, nargs="+", default=sorted(UNKNOWN_SPLITS),
                        choices=sorted(UNKNOWN_SPLITS), help="percentages of unknown classes")
    args = parser.parse_args(argv)
    try:
        for percent in args.unknown:
            print(f"{percent} % unknown: {make_openset_split(args.panoptic_json, percent)}")
    except M2AError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
