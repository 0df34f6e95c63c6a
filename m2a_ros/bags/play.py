"""``m2a_bag_play``: publish a bag's messages over ROS 2 with their recorded timing.

    m2a_bag_play --bag IN [--rate 0.5] [--loop] [--topics /camera/image ...] [--remap /camera/image:=/image]

For the live node where ``ros2 bag play`` (rosbag2_py) is not installed. Messages are published as
recorded (serialized bytes, headers and stamps untouched) at ``log time / rate`` from the first
message; a publisher that cannot keep up is reported (``max lateness``), never silently sped up.
``--wait-for-subscribers N`` holds the first message until N subscribers of every played topic are
matched (discovery takes a moment, and a camera frame published before it is lost).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from m2a_core.errors import M2AError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="m2a_bag_play", description="Publish a bag's messages with their "
                                                                      "recorded timing.")
    parser.add_argument("--bag", required=True, help="rosbag2 folder (mcap or sqlite3) or .mcap/.db3 file")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (2: twice as fast)")
    parser.add_argument("--loop", action="store_true", help="start over at the end (until interrupted)")
    parser.add_argument("--topics", nargs="+", default=None, help="topics to play (default: all)")
    parser.add_argument("--remap", nargs="+", default=[], metavar="FROM:=TO", help="publish FROM under TO")
    parser.add_argument("--qos", choices=("reliable", "best_effort"), default="reliable",
                        help="publisher reliability (reliable also reaches best-effort subscribers)")
    parser.add_argument("--depth", type=int, default=10, help="publisher history depth")
    parser.add_argument("--wait-for-subscribers", type=int, default=0, metavar="N",
                        help="wait until every played topic has N subscribers before the first message")
    parser.add_argument("--wait-timeout", type=float, default=30.0, help="seconds to wait for subscribers")
    parser.add_argument("--start-delay", type=float, default=0.0, help="seconds to wait before the first message")
    parser.add_argument("--linger", type=float, default=0.5,
                        help="seconds to stay up after the last message: best-effort subscribers (a camera node's "
                             "sensor-data QoS) cannot acknowledge, and exiting at once can lose what is in flight")
    return parser


def parse_remaps(items: list[str]) -> dict[str, str]:
    remaps = {}
    for item in items:
        source, sep, target = item.partition(":=")
        if not sep or not source.startswith("/") or not target.startswith("/"):
            raise M2AError(f"--remap takes /FROM:=/TO, got {item!r}")
        remaps[source] = target
    return remaps


@dataclass
class PlayStats:
    published: dict[str, int] = field(default_factory=dict)
    max_lateness_s: float = 0.0
    wall_s: float = 0.0
    problem: str | None = None


def play(bag, publish: Callable[[str, bytes], None], rate: float = 1.0, loop: bool = False,
         topics: list[str] | None = None, should_stop: Callable[[], bool] = lambda: False,
         on_published: Callable[[object, float], None] | None = None) -> PlayStats:
    """Publish ``bag``'s messages through ``publish(topic, data)`` at their log times divided by ``rate``.

    ``on_published(message, wall_time)`` is called after each one (live evaluation records send times).
    A damaged bag plays up to the damage; ``PlayStats.problem`` says where it stopped.
    """
    from tqdm import tqdm

    from m2a_ros.bags.storage import BagTruncated

    if not (rate > 0 and math.isfinite(rate)):
        raise M2AError(f"--rate must be a positive number, got {rate}")
    selected = list(topics or bag.topics)
    stats = PlayStats({t: 0 for t in selected})
    started = time.monotonic()
    total = sum(bag.counts.get(t) or 0 for t in selected) or None
    with tqdm(total=total, desc="play", unit="msg") as progress:
        while True:
            first_log_time = None
            loop_start = time.monotonic()
            try:
                for message in bag.messages(selected):
                    if should_stop():
                        return stats
                    if first_log_time is None:
                        first_log_time = message.log_time
                    target = loop_start + (message.log_time - first_log_time) * 1e-9 / rate
                    while (wait := target - time.monotonic()) > 0:
                        time.sleep(min(wait, 0.05))
                        if should_stop():
                            return stats
                    stats.max_lateness_s = max(stats.max_lateness_s, time.monotonic() - target)
                    publish(message.topic, message.data)
                    if on_published is not None:
                        on_published(message, time.time())
                    stats.published[message.topic] += 1
                    progress.update(1)
            except BagTruncated as exc:
                stats.problem = str(exc)
                loop = False
            stats.wall_s = time.monotonic() - started
            if not loop or first_log_time is None:
                return stats


class BagPublisher:
    """rclpy publishers for a bag's topics (serialized messages published as they are)."""

    def __init__(self, node, bag, topics: list[str], remaps: dict[str, str], reliable: bool = True,
                 depth: int = 10) -> None:
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        from m2a_ros.outputs import message_class

        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                         reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)
        self.reliable = reliable
        self.publishers = {topic: node.create_publisher(message_class(bag.topics[topic]),
                                                        remaps.get(topic, topic), qos) for topic in topics}

    def publish(self, topic: str, data: bytes) -> None:
        self.publishers[topic].publish(data)

    def wait_for_delivery(self, timeout_s: float) -> None:
        """Reliable topics: wait until every subscriber acknowledged what was published, so exiting right
        after the last message cannot lose it (measured: the last frame went missing without this)."""
        from rclpy.duration import Duration

        if self.reliable:
            for publisher in self.publishers.values():
                publisher.wait_for_all_acked(Duration(seconds=timeout_s))

    def wait_for_subscribers(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while any(p.get_subscription_count() < count for p in self.publishers.values()):
            if time.monotonic() > deadline:
                missing = [p.topic_name for p in self.publishers.values() if p.get_subscription_count() < count]
                raise M2AError(f"no {count} subscriber(s) on {', '.join(missing)} after {timeout_s:.0f} s")
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    """Console script ``m2a_bag_play``."""
    args, ros_args = build_parser().parse_known_args(argv)
    try:
        return _run(args, ros_args)
    except M2AError as exc:
        print(f"m2a_bag_play: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, ros_args: list[str]) -> int:
    from m2a_ros.bags.session import ros_session
    from m2a_ros.bags.storage import open_bag

    if args.depth < 1:
        raise M2AError(f"--depth must be >= 1, got {args.depth}")
    if not (args.linger >= 0 and math.isfinite(args.linger)):
        raise M2AError(f"--linger must be a number of seconds >= 0, got {args.linger}")
    if not (args.rate > 0 and math.isfinite(args.rate)):
        raise M2AError(f"--rate must be a positive number, got {args.rate}")
    bag = open_bag(args.bag)
    topics = args.topics or sorted(bag.topics)
    unknown = [t for t in topics if t not in bag.topics]
    if unknown:
        raise M2AError(f"{args.bag}: no topic {unknown[0]!r}; it has {', '.join(sorted(bag.topics))}")
    remaps = parse_remaps(args.remap)
    with ros_session("m2a_bag_play", ros_args) as session:
        publisher = BagPublisher(session.node, bag, topics, remaps, args.qos == "reliable", args.depth)
        if args.wait_for_subscribers:
            publisher.wait_for_subscribers(args.wait_for_subscribers, args.wait_timeout)
        time.sleep(max(0.0, args.start_delay))
        stats = play(bag, publisher.publish, args.rate, args.loop, topics, should_stop=lambda: not session.ok())
        publisher.wait_for_delivery(args.wait_timeout)
        if session.ok():
            time.sleep(args.linger)
    if session.interrupted:
        return 0
    summary = ", ".join(f"{t}: {n}" for t, n in stats.published.items())
    print(f"published {summary} in {stats.wall_s:.2f} s; max lateness {1e3 * stats.max_lateness_s:.1f} ms")
    if stats.problem:
        print(f"warning: the bag is damaged; played up to it: {stats.problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
