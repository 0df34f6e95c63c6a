"""``m2a_bag_record``: capture topics (the node's outputs, the camera) into a rosbag2 bag.

    m2a_bag_record --out DIR --topics /m2a_anomaly/anomaly /m2a_anomaly/overlay [--storage mcap] \
                   [--duration 60] [--max-messages N]

For vehicles without ``ros2 bag record``. Messages are written as received (serialized bytes) with the
receive time as log time. Each topic's type is taken from the graph (it must appear within
``--discovery-timeout``); the subscription is reliable when every publisher offers reliable delivery,
best effort otherwise, so it matches both kinds. Stops on Ctrl-C, ``--duration`` or ``--max-messages``;
the bag is complete (metadata written) in every case.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from m2a_core.errors import M2AError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="m2a_bag_record", description="Record topics into a rosbag2 bag.")
    parser.add_argument("--out", required=True, help="bag folder to write (replaced when complete)")
    parser.add_argument("--topics", nargs="+", required=True, help="topics to record")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--compress", action="store_true", help="zstd-compressed chunks (mcap only)")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to record (0: until Ctrl-C)")
    parser.add_argument("--max-messages", type=int, default=0, help="stop after this many messages (0: no limit)")
    parser.add_argument("--discovery-timeout", type=float, default=10.0,
                        help="seconds for every topic to appear in the graph")
    parser.add_argument("--depth", type=int, default=100, help="subscription history depth")
    return parser


class BagRecorder:
    """Raw subscriptions to ``topics`` that hand (topic, msgtype, receive time ns, data) to ``sink``."""

    def __init__(self, node, topics: list[str], sink: Callable[[str, str, int, bytes], None],
                 discovery_timeout_s: float = 10.0, depth: int = 100, spin: Callable[[], None] | None = None) -> None:
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        from m2a_ros.outputs import message_class

        self.node = node
        types = self._discover(topics, discovery_timeout_s, spin)
        self.subscriptions = []
        for topic in topics:
            publishers = node.get_publishers_info_by_topic(topic)
            reliable = bool(publishers) and all(
                p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers)
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                             reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)
            msgtype = types[topic]
            self.subscriptions.append(node.create_subscription(
                message_class(msgtype), topic,
                lambda data, topic=topic, msgtype=msgtype: sink(topic, msgtype, time.time_ns(), data), qos, raw=True))

    def _discover(self, topics: list[str], timeout_s: float, spin) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while True:
            graph = dict(self.node.get_topic_names_and_types())
            missing = [t for t in topics if t not in graph]
            if not missing:
                break
            if time.monotonic() > deadline:
                raise M2AError(f"topic(s) {', '.join(missing)} did not appear within {timeout_s:.0f} s")
            if spin is not None:
                spin()
            time.sleep(0.1)
        types = {}
        for topic in topics:
            if len(graph[topic]) != 1:
                raise M2AError(f"topic {topic} has several types {graph[topic]}: cannot record it")
            types[topic] = graph[topic][0]
        return types


def main(argv: list[str] | None = None) -> int:
    """Console script ``m2a_bag_record``."""
    args, ros_args = build_parser().parse_known_args(argv)
    try:
        return _run(args, ros_args)
    except M2AError as exc:
        print(f"m2a_bag_record: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, ros_args: list[str]) -> int:
    import signal

    from m2a_ros.bags.session import ros_session
    from m2a_ros.bags.storage import BagWriter

    if args.duration < 0 or args.max_messages < 0 or args.depth < 1:
        raise M2AError("--duration and --max-messages must be >= 0, --depth >= 1")
    with ros_session("m2a_bag_record", ros_args) as session:
        executor = session.executor
        stop = {"now": False}
        # SIGTERM (a launch file or test stopping us) ends the recording like Ctrl-C: the bag is closed.
        signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
        writer = None
        try:
            writer = BagWriter(args.out, args.storage, args.compress)
            recorder = BagRecorder(session.node, list(args.topics), writer.write, args.discovery_timeout, args.depth,
                                   spin=lambda: executor.spin_once(timeout_sec=0.0))
            print(f"recording {', '.join(args.topics)} to {args.out}", flush=True)
            deadline = time.monotonic() + args.duration if args.duration else None
            while session.ok() and not stop["now"]:
                executor.spin_once(timeout_sec=0.05)
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if args.max_messages and writer.count >= args.max_messages:
                    break
            del recorder
        finally:
            # Also on Ctrl-C (handled by ros_session after this): the bag is complete in every case.
            if writer is not None:
                path = writer.close()
                print(f"wrote {writer.count} messages to {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
