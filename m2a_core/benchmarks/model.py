"""``m2a bench model``: median latency of one forward pass and of its stages on the current device."""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from m2a_core.config import ModelConfig


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("model", help="latency of one network forward pass and its stages")
    parser.add_argument("--weights", default=None, help="weights file (default: the official R50 size, random weights)")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs (after one warm-up run)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.set_defaults(func=run)


def _timed(fn, sync) -> tuple[object, float]:
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - start


def measure(model: torch.nn.Module, batch: torch.Tensor, repeat: int) -> dict[str, list[float]]:
    """Seconds per stage for each run: backbone, pixel decoder, transformer decoder, total."""
    sync = torch.cuda.synchronize if batch.device.type == "cuda" else (lambda: None)
    runs: dict[str, list[float]] = {"backbone": [], "pixel_decoder": [], "transformer_decoder": [], "total": []}
    with torch.inference_mode():
        for index in range(repeat + 1):
            features, t_backbone = _timed(lambda: model.backbone(batch), sync)
            (mask_features, multi_scale), t_pixel = _timed(lambda: model.pixel_decoder(features), sync)  # noqa: B023
            _, t_decoder = _timed(lambda: model.predictor(multi_scale, mask_features), sync)  # noqa: B023
            if index == 0:
                continue  # warm-up: allocator, kernels, caches
            for key, value in (("backbone", t_backbone), ("pixel_decoder", t_pixel),
                               ("transformer_decoder", t_decoder),
                               ("total", t_backbone + t_pixel + t_decoder)):
                runs[key].append(value)
    return runs


def run(args: argparse.Namespace) -> int:
    from m2a_core.checkpoint import load_model
    from m2a_core.modeling import Mask2Anomaly

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.weights:
        model = load_model(args.weights, device)
    else:
        model = Mask2Anomaly(ModelConfig()).to(device).eval()
    pad = model.config.size_divisibility
    height, width = -(-args.height // pad) * pad, -(-args.width // pad) * pad
    batch = torch.randn(1, 3, height, width, device=device)
    runs = measure(model, batch, args.repeat)
    print(f"m2a bench model: {height}x{width}, device {device}, threads {torch.get_num_threads()}, "
          f"{args.repeat} runs, ResNet-{model.config.backbone_depth}")
    print(f"{'stage':<22}{'median ms':>12}{'min ms':>10}{'max ms':>10}")
    for stage, values in runs.items():
        print(f"{stage:<22}{statistics.median(values) * 1e3:>12.1f}{min(values) * 1e3:>10.1f}"
              f"{max(values) * 1e3:>10.1f}")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")
    return 0
