"""``m2a bench node``: the ROS node's per-frame overhead beyond the model (``m2a_ros.bench_node``).

m2a_core never imports ROS: this runs the benchmark of ``m2a_ros`` in a child process with the same Python and
arguments (the options mirror ``m2a_ros.bench_node.build_parser``) and returns its exit status.
"""
from __future__ import annotations

import argparse
import subprocess
import sys


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("node", help="the ROS node's per-frame overhead beyond the model (needs rclpy)")
    parser.add_argument("--weights", default=None, help="weights file (default: a compact random model)")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--encoding", default="bgr8", choices=("rgb8", "bgr8", "mono8"), help="camera encoding")
    parser.add_argument("--repeat", type=int, default=20, help="timed frames (after two warm-up frames)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    command = [sys.executable, "-m", "m2a_ros.bench_node", "--height", str(args.height), "--width", str(args.width),
               "--encoding", args.encoding, "--repeat", str(args.repeat)]
    if args.weights:
        command += ["--weights", args.weights]
    return subprocess.call(command)
