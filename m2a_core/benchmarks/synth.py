"""``m2a bench synth``: time per frame of the synthetic road world (one core, no disk).

Draws frames of the requested size with and without anomalies and outlier-pool objects, and prints the
median and 90th percentile milliseconds of each. The target is well under 100 ms for a 512x1024 frame,
since training and the demo generate thousands of them.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from m2a_core.errors import M2AError


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("synth", help="time per frame of the synthetic road world generator")
    parser.add_argument("--frames", type=int, default=20, help="frames per measurement")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def _time(function, count: int) -> list[float]:
    times = []
    for index in range(count):
        start = time.perf_counter()
        function(index)
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def run(args: argparse.Namespace) -> int:
    from m2a_core.synthetic.outliers import outlier_example
    from m2a_core.synthetic.scene import generate_frame

    if args.frames < 1 or args.height < 32 or args.width < 32:
        raise M2AError("need --frames >= 1 and --height, --width >= 32")
    generate_frame(args.seed, args.height, args.width)  # warm-up (imports, first allocations)
    rows = [
        ("scene", _time(lambda i: generate_frame([args.seed, i], args.height, args.width), args.frames)),
        ("scene + 1-4 anomalies", _time(lambda i: generate_frame([args.seed, i], args.height, args.width,
                                                                  anomalies=1 + i % 4), args.frames)),
        ("outlier object", _time(lambda i: outlier_example(np.random.default_rng([args.seed, i])), args.frames)),
    ]
    print(f"synthetic world, {args.height}x{args.width}, {args.frames} frames each (ms)")
    print(f"{'what':<24}{'median':>10}{'p90':>10}{'per s':>10}")
    for name, times in rows:
        median = statistics.median(times)
        p90 = float(np.percentile(times, 90))
        print(f"{name:<24}{median:>10.1f}{p90:>10.1f}{1000.0 / median:>10.1f}")
    return 0
