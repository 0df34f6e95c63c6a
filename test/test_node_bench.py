"""``m2a bench node`` as a user runs it: a real subprocess printing the node's stage latencies."""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
from pathlib import Path

from m2a_core.benchmarks.ros_node import add_bench_parser
from m2a_ros.bench_node import build_parser

WORKTREE = Path(__file__).resolve().parents[1]


def test_bench_node_prints_stage_latencies():
    env = dict(os.environ, ROS_DOMAIN_ID=str(random.SystemRandom().randint(1, 100)),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               AMENT_PREFIX_PATH=os.environ.get("AMENT_PREFIX_PATH", sys.prefix),
               PYTHONPATH=os.pathsep.join(filter(None, [str(WORKTREE), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "m2a_core", "bench", "node", "--height", "64", "--width", "96",
                           "--repeat", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "outputs: anomaly, anomaly_color, labels, labels_color, overlay, unknown_instances" in done.stdout
    rows, outputs = {}, {}
    for line in done.stdout.splitlines():
        parts = line.rsplit(maxsplit=4)
        if len(parts) == 5 and parts[0].startswith(("convert", "render", "publish", "node overhead")):
            rows[parts[0].split(" (")[0]] = [float(v) for v in parts[1:]]
        elif len(parts) == 5 and parts[0] in ("anomaly", "anomaly_color", "labels", "labels_color", "overlay",
                                              "unknown_instances"):
            outputs[parts[0]] = [float(v) for v in parts[1:]]
    assert set(rows) == {"convert", "render", "publish", "node overhead"}, done.stdout
    for stage, (median, low, high, cpu) in rows.items():
        assert 0 <= low <= median <= high and cpu >= 0 and (stage != "node overhead" or low > 0), (stage, done.stdout)
    # Per output: render alone (median, min) and publish (median, min); every picture costs some time to render.
    assert len(outputs) == 6, done.stdout
    for name, (render, render_min, publish, publish_min) in outputs.items():
        assert 0 <= render_min <= render and 0 <= publish_min <= publish, (name, done.stdout)
    assert all(outputs[name][1] > 0 for name in ("anomaly_color", "labels_color", "overlay")), done.stdout
    assert "target: node overhead under 10 ms" in done.stdout


def test_m2a_bench_node_forwards_every_option_of_the_benchmark():
    sub = argparse.ArgumentParser().add_subparsers()
    add_bench_parser(sub)
    forwarded = {a.dest: a.default for a in sub.choices["node"]._actions if a.dest != "help"}
    own = {a.dest: a.default for a in build_parser()._actions if a.dest != "help"}
    assert forwarded == own
