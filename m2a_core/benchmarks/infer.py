"""``m2a bench infer``: end-to-end predictor latency per backend, its stages, and a backend-vs-backend ratio.

Both backends of ``--vs`` run in the same process on the same image, so their ratio is free of
machine-to-machine noise. Stages: preprocess, network (for torch split into backbone, pixel decoder and
transformer decoder with forward hooks), postprocess (the paper's inference at full resolution).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from m2a_core.backends import BACKENDS, make_backend
from m2a_core.backends.onnxruntime_backend import OnnxRuntimeBackend
from m2a_core.checkpoint import load_model, save_weights
from m2a_core.config import ModelConfig
from m2a_core.export import export_onnx
from m2a_core.predictor import Predictor, PredictorOptions


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("infer", help="predictor latency per backend, stage split, --vs ratio")
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument("--vs", choices=BACKENDS, default=None, help="a second backend measured in the same run")
    parser.add_argument("--weights", default=None,
                        help=".safetensors weights (default: official R50 size with random weights)")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs after one warm-up")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch and onnxruntime (0: default)")
    parser.set_defaults(func=run)


class StageTimer:
    """Forward hooks that time the network's three stages (torch backend only)."""

    STAGES = ("backbone", "pixel_decoder", "predictor")

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.seconds: dict[str, float] = {}
        self.handles = []
        for name in self.STAGES:
            module = getattr(model, name)
            self.handles.append(module.register_forward_pre_hook(self._start(name)))
            self.handles.append(module.register_forward_hook(self._stop(name)))

    def _start(self, name):
        def hook(module, args):
            self.sync()
            self.seconds[name] = -time.perf_counter()
        return hook

    def _stop(self, name):
        def hook(module, args, output):
            self.sync()
            self.seconds[name] += time.perf_counter()
        return hook


def measure(predictor: Predictor, image: np.ndarray, repeat: int) -> dict[str, list[float]]:
    model = getattr(predictor.backend, "model", None)
    timer = StageTimer(model, predictor.device) if model is not None else None
    runs: dict[str, list[float]] = {}
    for index in range(repeat + 1):
        start = time.perf_counter()
        prediction = predictor(image)
        total = time.perf_counter() - start
        if index == 0:
            continue
        stages = dict(prediction.timings)
        if timer is not None:
            names = {"predictor": "transformer_decoder"}
            stages.update({f"  {names.get(k, k)}": v for k, v in timer.seconds.items()})
        stages["total"] = total
        for key, value in stages.items():
            runs.setdefault(key, []).append(value)
    return runs


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def run(args: argparse.Namespace) -> int:
    from m2a_core.modeling import Mask2Anomaly

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    image = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    options = PredictorOptions(short_side=None)
    backends = [args.backend] + ([args.vs] if args.vs and args.vs != args.backend else [])
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(args.weights) if args.weights else Path(tmp) / "random.safetensors"
        if not args.weights:
            save_weights(Mask2Anomaly(ModelConfig()), weights)
        medians = {}
        print(f"m2a bench infer: {args.height}x{args.width} image, device {device}, precision {args.precision}, "
              f"torch threads {torch.get_num_threads()}, {args.repeat} runs after a warm-up")
        for name in backends:
            path = weights
            if name != "torch":
                path = Path(tmp) / "model.onnx"
                if not path.exists():
                    export_onnx(load_model(weights), path, args.height, args.width)
            if name == "onnxruntime":
                backend = OnnxRuntimeBackend(path, args.device, threads=args.threads)
            else:
                backend = make_backend(name, path, args.device, precision=args.precision)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            runs = measure(Predictor(backend, options), image, args.repeat)
            medians[name] = statistics.median(runs["total"])
            print(f"\nbackend {name}: median {medians[name] * 1e3:.1f} ms, {1 / medians[name]:.2f} frames/s, "
                  f"peak {'GPU' if device.type == 'cuda' else 'process RSS'} memory "
                  f"{peak_memory_mib(device):.0f} MiB")
            print(f"{'stage':<24}{'median ms':>11}{'min ms':>10}{'max ms':>10}")
            for stage, values in runs.items():
                print(f"{stage:<24}{statistics.median(values) * 1e3:>11.1f}{min(values) * 1e3:>10.1f}"
                      f"{max(values) * 1e3:>10.1f}")
        if len(backends) == 2:
            a, b = backends
            print(f"\nratio {a}/{b} (median total latency): {medians[a] / medians[b]:.2f}")
    return 0
