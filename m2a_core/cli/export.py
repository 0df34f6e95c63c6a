"""``m2a export``: the network as ONNX for ONNX Runtime and TensorRT."""
from __future__ import annotations

import argparse

from m2a_core.checkpoint import load_model
from m2a_core.export import DEFAULT_OPSET, export_onnx, padded_input_size


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export", help="export the network to ONNX (static shape; TensorRT 10 compatible)",
        description="Export the network (normalised padded image -> pred_logits, pred_masks) to ONNX. "
                    "--height/--width are the network input size after resizing; they are rounded up to a "
                    "multiple of 32 (1024x2048 for Cityscapes-size frames with the official resize).")
    parser.add_argument("--weights", required=True, help="m2a weights file (.safetensors)")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--dynamic-batch", action="store_true", help="leave the batch axis dynamic")
    parser.add_argument("--out", required=True, help="output .onnx file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = load_model(args.weights)
    export_onnx(model, args.out, args.height, args.width, opset=args.opset, dynamic_batch=args.dynamic_batch)
    height, width = padded_input_size(args.height, args.width, model.config.size_divisibility)
    print(f"wrote {args.out}: input images [{'B' if args.dynamic_batch else 1}, 3, {height}, {width}], "
          f"opset {args.opset}")
    return 0
