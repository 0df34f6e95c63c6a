"""``m2a build-engine``: build (or verify) the cached TensorRT engine offline, before driving."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from m2a_core.backends.tensorrt_backend import DEFAULT_CACHE, ENGINE_PRECISIONS, EngineCache, build_engine, engine_key


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("build-engine", help="build the TensorRT engine for an ONNX export into the cache")
    parser.add_argument("--onnx", required=True, help="an 'm2a export' .onnx file (static shape)")
    parser.add_argument("--precision", choices=ENGINE_PRECISIONS, default="fp16")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help=f"engine cache folder (default {DEFAULT_CACHE})")
    parser.add_argument("--int8-calib", default=None, help="text file listing calibration images (int8)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    images = None
    if args.int8_calib:
        images = [line.strip() for line in Path(args.int8_calib).read_text().splitlines() if line.strip()]
    key = engine_key(args.onnx, torch.device(args.device), args.precision, args.batch)
    cache = EngineCache(args.cache)
    _, built = cache.get_or_build(key, lambda: build_engine(args.onnx, args.precision, key.input_shape, images))
    state = "built" if built else "already cached and valid"
    print(f"engine {cache.engine_path(key)} {state} ({key.precision}, {key.gpu_name}, TensorRT {key.tensorrt_version})")
    return 0
