"""``m2a bench metrics``: time and peak memory per frame of the streaming evaluation metrics.

Synthetic frames (float32 scores with a smooth anomaly blob, labels 0/1/255) of the requested size go
through the exact accumulator, the SegmentMeIfYouCan binned curve and the component metrics. Peak
memory is what numpy allocated (tracemalloc) on top of one frame's inputs, so it shows what the
accumulators keep, which must not grow like the number of pixels seen.
"""
from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np

from m2a_core.errors import M2AError


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("metrics", help="time and peak memory per frame of the evaluation metrics")
    parser.add_argument("--frames", type=int, default=20, help="frames to stream (e.g. 1000 for a full set)")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--distinct", type=int, default=0,
                        help="quantise scores to this many distinct values (0: full float32 resolution)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def synthetic_frame(rng: np.random.Generator, height: int, width: int, distinct: int):
    labels = np.zeros((height, width), np.uint8)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    labels[top: top + height // 8, left: left + width // 8] = 1
    labels[: height // 16] = 255
    scores = rng.random((height, width), dtype=np.float32) * 0.7 + 0.3 * labels
    if distinct:
        scores = np.round(scores * (distinct - 1)) / (distinct - 1)
    return scores.astype(np.float32), labels


def run(args: argparse.Namespace) -> int:
    from m2a_core.metrics.pixel import PixelScoreAccumulator
    from m2a_core.metrics.smiyc import BinnedCurveAccumulator, ComponentAccumulator

    if args.frames < 1 or args.height < 8 or args.width < 8:
        raise M2AError("need --frames >= 1 and --height, --width >= 8")
    rng = np.random.default_rng(args.seed)
    exact, binned = PixelScoreAccumulator(), BinnedCurveAccumulator()
    components = ComponentAccumulator(0.8, "anomaly")
    times: dict[str, list[float]] = {"exact": [], "binned": [], "components": []}
    frame_bytes = args.height * args.width * 5
    tracemalloc.start()
    for _ in range(args.frames):
        scores, labels = synthetic_frame(rng, args.height, args.width, args.distinct)
        for name, step in (("exact", exact.update), ("binned", binned.update), ("components", components.update)):
            start = time.perf_counter()
            step(scores, labels)
            times[name].append(time.perf_counter() - start)
    start = time.perf_counter()
    exact.compute()
    binned.compute()
    components.compute()
    finish = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    pixels = args.frames * args.height * args.width
    print(f"{args.frames} frames of {args.height}x{args.width} ({pixels / 1e6:.1f} M pixels; "
          f"all of them as float32 + uint8 would take {pixels * 5 / 2**20:.0f} MiB)")
    for name, values in times.items():
        print(f"  {name:<11} {1e3 * statistics.median(values):8.1f} ms/frame (median)")
    print(f"  compute     {1e3 * finish:8.1f} ms once")
    print(f"  exact accumulator: {exact.num_rows:,} distinct values, {exact.nbytes / 2**20:.1f} MiB")
    print(f"  peak memory (numpy, tracemalloc): {peak / 2**20:.1f} MiB "
          f"(one frame's inputs: {frame_bytes / 2**20:.1f} MiB)")
    return 0
