"""``m2a bench <what>``: benchmarks that print numbers (latency, throughput, memory)."""
from __future__ import annotations

import argparse
from importlib import import_module

# Each module exposes add_bench_parser(subparsers).
BENCHES = ("m2a_core.benchmarks.model", "m2a_core.benchmarks.infer", "m2a_core.benchmarks.metrics",
           "m2a_core.benchmarks.openset", "m2a_core.benchmarks.ros_node")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="benchmarks: latency, throughput and memory")
    benches = parser.add_subparsers(dest="bench", required=True, metavar="WHAT")
    for module in BENCHES:
        import_module(module).add_bench_parser(benches)
