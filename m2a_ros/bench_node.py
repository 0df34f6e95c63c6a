"""``m2a bench node`` / ``m2a_bench_node``: the node's per-frame cost beyond the model, at camera resolution.

Runs the real ``AnomalyNode`` in this process, with a subscriber to every output in another process (so every
output is computed and sent over DDS, and the subscriber's receiving competes for the CPU as a real one's would,
but not for this process's GIL), feeds it one camera frame's prediction repeatedly and times its stages:

- ``convert``: sensor_msgs/Image -> RGB array (``m2a_ros.conversions``),
- ``render``: colour maps, overlay, markers and the messages of every output (``m2a_core.visualize``,
  ``m2a_ros.outputs``),
- ``publish``: ``publish`` of every output to the subscriber process (over DDS).

The node's overhead is ``convert + render + publish`` (target: under 10 ms at 1024x2048). A second table splits the
cost per output: ``render alone`` is ``frame_messages`` asked for that output only (the heatmap colours that
``anomaly_color`` and ``overlay`` share are then counted in both), ``publish`` that output's share of the publish
stage. ``cpu`` is this process's CPU time during a stage (all its threads: the render threads add up); on a busy
machine the wall times grow, this much less. The model itself is run once (a compact random model with 100 queries
unless ``--weights`` is given; its outputs have the official shapes, its anomaly scores are replaced by a uniform
ramp over [score_min, score_max] so that every colour is drawn), so the numbers do not depend on the network's speed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

STAGES = ("convert", "render", "publish")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="m2a bench node", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="weights file (default: a compact random model)")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--encoding", default="bgr8", choices=("rgb8", "bgr8", "mono8"), help="camera encoding")
    parser.add_argument("--repeat", type=int, default=20, help="timed frames (after two warm-up frames)")
    return parser


def _compact_weights(folder: Path) -> Path:
    import torch

    from m2a_core.checkpoint import save_weights
    from m2a_core.config import ModelConfig
    from m2a_core.modeling import Mask2Anomaly

    config = ModelConfig(backbone_depth=18, conv_dim=32, mask_dim=32, hidden_dim=32, encoder_layers=1,
                         decoder_layers=3, decoder_ffn_dim=64, encoder_ffn_dim=64, num_queries=100, norm_groups=8,
                         encoder_heads=4, decoder_heads=4)
    torch.manual_seed(0)
    path = folder / "compact.safetensors"
    save_weights(Mask2Anomaly(config), path)
    return path


def _camera_message(rgb: np.ndarray, encoding: str):
    from sensor_msgs.msg import Image

    data = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "mono8": rgb[..., 0]}[encoding]
    data = np.ascontiguousarray(data)
    return Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, step=int(data.strides[0]),
                 data=data.tobytes())


@dataclass
class Measurement:
    wanted: list[str]
    stages: dict[str, list[float]] = field(default_factory=lambda: {stage: [] for stage in STAGES})
    cpu: dict[str, list[float]] = field(default_factory=lambda: {stage: [] for stage in STAGES})  # process CPU time
    render_alone: dict[str, list[float]] = field(default_factory=dict)   # per output
    publish: dict[str, list[float]] = field(default_factory=dict)        # per output


def measure(args: argparse.Namespace, weights: Path) -> Measurement:
    import rclpy
    from rclpy.parameter import Parameter

    from m2a_ros.anomaly_node import AnomalyNode
    from m2a_ros.conversions import image_to_rgb
    from m2a_ros.memory import keep_freed_memory
    from m2a_ros.outputs import OUTPUT_TOPICS, frame_messages

    keep_freed_memory()  # as the node's main() does
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = AnomalyNode("m2a_bench_node", context=context, parameter_overrides=[
        Parameter("weights", value=str(weights)), Parameter("short_side", value=0), Parameter("max_size", value=0),
        Parameter("autostart", value=False)])
    listener = None
    try:
        from rclpy.lifecycle import TransitionCallbackReturn

        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise SystemExit("m2a bench node: error: the node could not be configured (see the log above)")
        topics = [f"{publisher.topic_name}={OUTPUT_TOPICS[name].msgtype}"
                  for name, publisher in node.publishers_by_output.items()]
        listener = subprocess.Popen([sys.executable, "-c", "import sys; from m2a_ros.bench_node import listen; "
                                     "listen(sys.argv[1:])", *topics], stdin=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline and len(node.wanted_outputs()) < len(node.publishers_by_output):
            if listener.poll() is not None:
                raise SystemExit("m2a bench node: error: the subscriber process ended (see the log above)")
            time.sleep(0.05)
        wanted = node.wanted_outputs()
        rng = np.random.default_rng(0)
        rgb = rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
        message = _camera_message(rgb, args.encoding)
        print(f"running the model once on a {args.width}x{args.height} frame ...", file=sys.stderr)
        frame = image_to_rgb(message)
        # With every open-set output, as the node asks for them (m2a bench openset times those).
        prediction = node.predictor(frame, **node.openset_request(wanted))
        # A random model's scores sit in one corner of the colour map: a ramp draws every colour instead.
        settings = node.render_settings()
        prediction.anomaly = np.linspace(settings.score_min, settings.score_max, prediction.anomaly.size,
                                         dtype=np.float32).reshape(prediction.anomaly.shape)
        result = Measurement(sorted(wanted))
        result.publish = {name: [] for name in wanted}
        for index in range(args.repeat + 2):
            message.header.stamp = node.get_clock().now().to_msg()
            t0, c0 = time.perf_counter(), time.process_time()
            frame = image_to_rgb(message, node.values["max_pixels"])
            t1, c1 = time.perf_counter(), time.process_time()
            # What the node's worker does after the model (AnomalyNode._process).
            messages = frame_messages(message.header, frame, prediction, wanted, node.render_settings(),
                                      node.predictor.class_set)
            t2, c2 = time.perf_counter(), time.process_time()
            publish_seconds: dict[str, float] = {}
            node.publish_outputs(messages, publish_seconds)
            t3, c3 = time.perf_counter(), time.process_time()
            if index >= 2:
                for stage, seconds, cpu in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2), (c1 - c0, c2 - c1, c3 - c2),
                                               strict=True):
                    result.stages[stage].append(seconds)
                    result.cpu[stage].append(cpu)
                for name, seconds in publish_seconds.items():
                    result.publish[name].append(seconds)
        for name in sorted(wanted):
            times = result.render_alone.setdefault(name, [])
            for _ in range(max(3, args.repeat // 2)):
                t0 = time.perf_counter()
                frame_messages(message.header, frame, prediction, {name}, settings, node.predictor.class_set)
                times.append(time.perf_counter() - t0)
        return result
    finally:
        if listener is not None:
            listener.stdin.close()   # the subscriber's signal to end
            try:
                listener.wait(10)
            except subprocess.TimeoutExpired:
                listener.kill()
                listener.wait()
        node._stop_input()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def listen(topics: list[str]) -> None:
    """The subscriber process: raw subscriptions (bytes arrive, no Python messages are built) to each
    'topic=package/msg/Name', spun until standard input closes."""
    import threading

    import rclpy
    from rclpy.executors import ExternalShutdownException

    from m2a_ros.outputs import message_class
    from m2a_ros.qos import output_qos

    rclpy.init()
    node = rclpy.create_node("m2a_bench_listener")
    for spec in topics:
        topic, msgtype = spec.split("=")
        node.create_subscription(message_class(msgtype), topic, lambda msg: None, output_qos(), raw=True)
    threading.Thread(target=lambda: (sys.stdin.read(), rclpy.try_shutdown()), daemon=True).start()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.height < 1 or args.width < 1 or args.repeat < 1:
        print("m2a bench node: error: --height, --width and --repeat must be positive", file=sys.stderr)
        return 2
    # A private, local DDS domain: do not spray 6 MB frames over a vehicle's network.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    with tempfile.TemporaryDirectory() as folder:
        weights = Path(args.weights) if args.weights else _compact_weights(Path(folder))
        if not weights.is_file():
            print(f"m2a bench node: error: weights file {weights} does not exist", file=sys.stderr)
            return 2
        result = measure(args, weights)
    runs = result.stages
    print(f"m2a bench node: {args.width}x{args.height} {args.encoding}, {args.repeat} frames, "
          f"outputs: {', '.join(result.wanted)}")
    print(f"{'stage':<34}{'median ms':>12}{'min ms':>10}{'max ms':>10}{'cpu median ms':>15}")
    overhead = [sum(stage) for stage in zip(*(runs[s] for s in STAGES), strict=True)]
    totals = {
        "convert (camera msg -> RGB)": (runs["convert"], result.cpu["convert"]),
        "render (visualize + messages)": (runs["render"], result.cpu["render"]),
        "publish (all outputs)": (runs["publish"], result.cpu["publish"]),
        "node overhead (convert+render+pub)": (overhead,
                                               [sum(s) for s in zip(*(result.cpu[s] for s in STAGES), strict=True)]),
    }
    for stage, (values, cpu) in totals.items():
        print(f"{stage:<34}{statistics.median(values) * 1e3:>12.2f}{min(values) * 1e3:>10.2f}"
              f"{max(values) * 1e3:>10.2f}{statistics.median(cpu) * 1e3:>15.2f}")
    print(f"{'output':<20}{'render alone median ms':>24}{'min ms':>10}{'publish median ms':>20}{'min ms':>10}")
    for name in result.wanted:
        alone, sent = result.render_alone[name], result.publish[name]
        print(f"{name:<20}{statistics.median(alone) * 1e3:>24.2f}{min(alone) * 1e3:>10.2f}"
              f"{statistics.median(sent) * 1e3:>20.2f}{min(sent) * 1e3:>10.2f}")
    median = statistics.median(overhead) * 1e3
    print(f"target: node overhead under 10 ms: {'met' if median < 10.0 else 'NOT met'} ({median:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
