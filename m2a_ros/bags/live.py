"""``m2a_bag_eval --live``: play a bag into the running node and evaluate what it publishes.

The bag's frames are published at their recorded timing (``--rate``) to the node's input topic; every
output the node publishes (``/<node>/anomaly``, ``.../overlay``, ...) is received and written to the result
bag at the log time of the input frame with the same header stamp. The node skips frames when the model
is slower than the camera (newest-frame worker): a published frame without an ``anomaly`` output within
``--drain-timeout`` of the end is counted as skipped. End-to-end latency is the arrival time of a frame's
``anomaly`` output minus the time its input was published (both in this process: no clock sync needed).
Metrics use the ``anomaly`` maps the node published, matched to ground truth as offline.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from m2a_core.errors import M2AError

PENDING_WITH_DATA = 256   # input frames kept for contact-sheet pictures while their output is awaited


# How long the node's output topics may take to all appear in the graph once the first one has.
GRAPH_SETTLE_S = 2.0
# How long to keep receiving after the last frame's anomaly output arrived.
OUTPUT_LINGER_S = 1.0


def _stamp_ns(msg) -> int | None:
    from m2a_ros.bags.pipeline import header_stamp_ns

    if hasattr(msg, "header"):
        return header_stamp_ns(msg.header)
    markers = getattr(msg, "markers", None)
    return header_stamp_ns(markers[0].header) if markers else None


def run_live(args) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message

    from m2a_ros.bags.evaluate import FrameBook, open_inputs
    from m2a_ros.bags.pipeline import IMAGE_TYPES
    from m2a_ros.bags.play import BagPublisher, play
    from m2a_ros.bags.storage import BagWriter
    from m2a_ros.conversions import ImageConversionError, compressed_to_rgb, image_to_array, image_to_rgb
    from m2a_ros.outputs import CLASS_INFO_TOPIC, OUTPUT_TOPICS, RenderSettings, available_outputs, message_class
    from m2a_ros.qos import latched_qos

    if args.weights or args.params_file or args.set:
        raise M2AError("--weights, --params-file and --set configure the offline run; with --live the running "
                       "node's own parameters apply")
    for name in ("rate", "discovery_timeout", "drain_timeout"):
        value = getattr(args, name)
        if not (value > 0 and np.isfinite(value)):
            raise M2AError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    bag, image_type, truth, label_problem = open_inputs(args)
    out = Path(args.out)
    prefix = "/" + args.node_name.strip("/")
    publish_topic = args.publish_topic or args.image_topic
    input_class = message_class(image_type)
    book = FrameBook(out, truth, args.worst, RenderSettings())
    lock = threading.Lock()
    pending: dict[int, list] = {}      # input stamp -> [publish wall time, log time, data or None]
    log_times: dict[int, int] = {}     # input stamp -> log time, to place outputs in the result bag
    received: set[int] = set()
    writer = BagWriter(out / "result_bag", args.storage, args.compress)

    def rgb_of(data: bytes | None):
        def rgb() -> np.ndarray:
            if data is None:
                return np.zeros((8, 8, 3), np.uint8)
            msg = deserialize_message(data, input_class)
            try:
                return image_to_rgb(msg) if IMAGE_TYPES[image_type] == "raw" else compressed_to_rgb(msg)
            except ImageConversionError:
                return np.zeros((8, 8, 3), np.uint8)
        return rgb

    def on_output(topic: str, msgtype: str, data: bytes) -> None:
        arrival = time.time()
        msg = deserialize_message(data, message_class(msgtype))
        stamp = _stamp_ns(msg)
        with lock:
            writer.write(topic, msgtype, log_times.get(stamp, time.time_ns()), data)
            if topic != f"{prefix}/anomaly" or stamp not in pending or stamp in received:
                return
            published, log_time, input_data = pending.pop(stamp)
            received.add(stamp)
            row = {"log_time_ns": log_time, "total_ms": 1e3 * (arrival - published)}
            book.add(stamp, image_to_array(msg).astype(np.float32), row, rgb_of(input_data))

    def on_published(message, wall_time: float) -> None:
        stamp = _stamp_ns(deserialize_message(message.data, input_class))
        with lock:
            writer.write(message.topic, message.msgtype, message.log_time, message.data)
            log_times[stamp] = message.log_time
            pending[stamp] = [wall_time, message.log_time, message.data]
            if len(pending) > PENDING_WITH_DATA:  # outputs that never came: forget their pictures
                for entry in list(pending.values())[:-PENDING_WITH_DATA]:
                    entry[2] = None

    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("m2a_bag_eval_live", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinning = threading.Event()
    spinning.set()

    def spin() -> None:
        while spinning.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    stats = None
    outputs: dict[str, str] = {}
    try:
        publisher = BagPublisher(node, bag, [args.image_topic], {args.image_topic: publish_topic})
        publisher.wait_for_subscribers(1, args.discovery_timeout)
        deadline = time.monotonic() + args.discovery_timeout
        while f"{prefix}/anomaly" not in dict(node.get_topic_names_and_types()):
            if time.monotonic() > deadline:
                raise M2AError(f"no {prefix}/anomaly topic after {args.discovery_timeout:.0f} s: is the node "
                               "running and active (--node-name)?")
            time.sleep(0.1)
        # The node creates all its publishers together, but discovery reports them one by one: give the rest
        # a moment to appear instead of taking the graph as it stands when the first one shows up.
        wanted = {f"{prefix}/{OUTPUT_TOPICS[name].topic}": OUTPUT_TOPICS[name].msgtype for name in available_outputs()}
        settle_until = time.monotonic() + GRAPH_SETTLE_S
        graph = dict(node.get_topic_names_and_types())
        while not set(wanted) <= set(graph) and time.monotonic() < settle_until:
            time.sleep(0.1)
            graph = dict(node.get_topic_names_and_types())
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
        outputs = {topic: msgtype for topic, msgtype in wanted.items() if topic in graph}
        for topic, msgtype in outputs.items():
            node.create_subscription(message_class(msgtype), topic,
                                     lambda data, t=topic, m=msgtype: on_output(t, m, data), qos, raw=True)
        class_info = f"{prefix}/{CLASS_INFO_TOPIC.topic}"
        node.create_subscription(message_class(CLASS_INFO_TOPIC.msgtype), class_info,
                                 lambda data: on_output(class_info, CLASS_INFO_TOPIC.msgtype, data),
                                 latched_qos(), raw=True)
        spinner.start()
        deadline = time.monotonic() + args.discovery_timeout  # the node's publishers must see us first
        while any(not node.get_publishers_info_by_topic(t) for t in outputs) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        stats = play(bag, publisher.publish, args.rate, topics=[args.image_topic], on_published=on_published)
        drain_until = time.monotonic() + args.drain_timeout
        while time.monotonic() < drain_until:
            with lock:
                if not pending:
                    break
            time.sleep(0.05)
        # 'pending' follows ~/anomaly, which the node publishes first; its other outputs of the last frame
        # come just after it (measured: the last overlay was sometimes missing from the result bag).
        time.sleep(min(OUTPUT_LINGER_S, args.drain_timeout))
    except KeyboardInterrupt:
        pass
    finally:
        spinning.clear()
        if spinner.is_alive():
            spinner.join(5)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        with lock:
            result_bag = writer.close()
    published = sum(stats.published.values()) if stats else 0
    skipped = sorted(pending)
    report = {
        "mode": "live", "bag": str(args.bag), "storage": bag.storage, "image_topic": args.image_topic,
        "read_by_scanning": bag.scanned, "open_problem": bag.open_problem,
        "read_problem": {"position": stats.problem, "reason": "damaged bag", "frames_read": published}
        if stats and stats.problem else None,
        "frames_read": published, "result_bag": str(result_bag), "outputs": sorted(outputs),
        "live": {"node": prefix, "rate": args.rate, "published": published, "received": len(received),
                 "skipped": len(skipped), "skipped_stamps": skipped[:50],
                 "max_publish_lateness_ms": 1e3 * stats.max_lateness_s if stats else None},
        "latency_title": "end-to-end latency (input published -> anomaly output received, over DDS)",
    }
    markdown = book.finish(args, report, label_problem)
    print(markdown, end="")
    return 0
