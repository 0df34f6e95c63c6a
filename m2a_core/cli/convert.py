"""``m2a convert SRC OUT``: official or torchvision checkpoints into our safetensors weights."""
from __future__ import annotations

import argparse

from m2a_core.checkpoint import convert_official


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "convert", help="convert an official Mask2Anomaly checkpoint (.pth/.pkl) to m2a weights",
        description="Convert an official detectron2 Mask2Anomaly checkpoint (.pth holding {'model': state_dict} "
                    "or a bare state_dict, or a .pkl numpy dict) into an m2a safetensors weights file. Every "
                    "entry is checked; the unused fusion_layer and criterion.empty_weight are dropped.")
    parser.add_argument("src", help="official checkpoint (.pth, .pt or .pkl)")
    parser.add_argument("out", help="output weights file (.safetensors)")
    parser.add_argument("--classes", default=None,
                        help="class set of the checkpoint (default: cityscapes for 19 classes)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = convert_official(args.src, args.out, classes=args.classes)
    print(f"wrote {args.out}: ResNet-{config.backbone_depth}, {config.num_queries} queries, "
          f"{config.num_classes} classes ({config.classes})")
    return 0
