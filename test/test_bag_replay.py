"""m2a_bag_play and m2a_bag_record as separate processes over Fast DDS, and a replay through the real node.

Each test runs on a random ROS_DOMAIN_ID with localhost discovery. Frames are small and few; timing is
checked only from below (a replay can be late on a busy machine, never early).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image

from m2a_core.checkpoint import save_weights
from m2a_core.predictor import Predictor
from m2a_ros.bags.storage import BagWriter, open_bag
from m2a_ros.conversions import image_to_array

from helpers import BAG_TEST_DOMAINS, TINY, make_model, random_image, ros_domain

# Message definitions rosbags does not ship come from the ROS install's share folders (m2a_ros.bags.storage).
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)

WORKTREE = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 48, 80
STEP_NS = 100_000_000                      # frames recorded at 10 Hz
FIRST_STAMP = 1_700_000_000_000_000_000
STARTUP_TIMEOUT_S = 90.0


def stamp(index: int) -> int:
    return FIRST_STAMP + index * STEP_NS


def frame(index: int) -> np.ndarray:
    return random_image(100 + index, HEIGHT, WIDTH)


def write_camera_bag(path: Path, storage: str, frames: int) -> Path:
    with BagWriter(path, storage) as writer:
        for index in range(frames):
            msg = Image()
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp(index), 1_000_000_000)
            msg.header.frame_id = "camera_optical"
            msg.height, msg.width, msg.encoding, msg.step = HEIGHT, WIDTH, "rgb8", WIDTH * 3
            msg.data = frame(index).tobytes()
            writer.write("/camera/image", "sensor_msgs/msg/Image", stamp(index) + 1_000_000, serialize_message(msg))
    return path


@pytest.fixture()
def ros_context():
    """A private DDS domain; the processes started by the test inherit it."""
    with ros_domain(BAG_TEST_DOMAINS, "LOCALHOST") as context:
        yield context


class Process:
    def __init__(self, command: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, cwd=WORKTREE)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


class Listener:
    """The test's subscriber: every message of one topic with its arrival time."""

    def __init__(self, context, topic: str) -> None:
        self.node = rclpy.create_node(f"bag_test_listener_{random.randint(0, 10**6)}", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.received: list[tuple[float, Image]] = []
        self.lock = threading.Lock()
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(Image, topic, self._on_message, qos)
        self.running = True
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _on_message(self, msg: Image) -> None:
        with self.lock:
            self.received.append((time.monotonic(), msg))

    def _spin(self) -> None:
        while self.running:
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self.running = False
        self.thread.join(5)
        self.node.destroy_node()


def module_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_play_delivers_every_frame_in_order_with_timing(tmp_path, ros_context, storage):
    frames, rate = 6, 2.0
    bag = write_camera_bag(tmp_path / "drive", storage, frames)
    listener = Listener(ros_context, "/front/image")
    player = Process(module_command("m2a_ros.bags.play", "--bag", str(bag), "--rate", str(rate),
                                    "--remap", "/camera/image:=/front/image", "--wait-for-subscribers", "1"),
                     tmp_path / "play.log")
    try:
        assert player.wait(STARTUP_TIMEOUT_S) == 0, player.log()
        deadline = time.monotonic() + 10
        while len(listener.received) < frames and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        player.stop()
        listener.close()
    received = listener.received
    assert [stamp_of(m) for _, m in received] == [stamp(i) for i in range(frames)], player.log()
    for index, (_, msg) in enumerate(received):
        np.testing.assert_array_equal(image_to_array(msg), frame(index))
    # Recorded spacing / rate, never faster. Timed from the second frame: the first can arrive late, because the
    # player may see the subscriber matched before the subscriber sees the player (discovery is asymmetric) and
    # the reliable writer then resends it (measured: 35 ms late under load, so a first-to-last span fell short).
    span = received[-1][0] - received[1][0]
    assert span >= 0.9 * (frames - 2) * STEP_NS * 1e-9 / rate
    assert f"/camera/image: {frames}" in player.log()


def test_replay_through_the_node_process_and_record_its_outputs(tmp_path, ros_context):
    """Bag -> m2a_bag_play -> m2a_anomaly_node -> m2a_bag_record, all separate processes over DDS."""
    import yaml

    frames = 5
    weights = tmp_path / "tiny.safetensors"
    save_weights(make_model(TINY, 5), weights)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "weights": str(weights), "short_side": 64, "max_size": 128, "publish": ["anomaly"]}}}))
    bag = write_camera_bag(tmp_path / "drive", "mcap", frames)
    node = Process(module_command("m2a_ros.anomaly_node", "--ros-args", "--params-file", str(params),
                                  "-r", "image:=/camera/image"), tmp_path / "node.log")
    recorder = player = None
    watcher = rclpy.create_node("bag_test_watcher", context=ros_context)
    try:
        # The recorder stops by itself after the last frame's output: no guessed waiting time.
        recorder = Process(module_command("m2a_ros.bags.record", "--out", str(tmp_path / "outputs"),
                                          "--topics", "/m2a_anomaly/anomaly", "--max-messages", str(frames),
                                          "--discovery-timeout", str(STARTUP_TIMEOUT_S)), tmp_path / "record.log")
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        # The node computes an output only for a subscriber: start playing once the recorder is matched.
        while not watcher.get_subscriptions_info_by_topic("/m2a_anomaly/anomaly"):
            assert time.monotonic() < deadline, node.log() + recorder.log()
            time.sleep(0.1)
        # 0.5 s between frames: the tiny model keeps up on a busy CPU, so no frame is skipped.
        player = Process(module_command("m2a_ros.bags.play", "--bag", str(bag), "--rate", "0.2",
                                        "--wait-for-subscribers", "1"), tmp_path / "play.log")
        assert player.wait(STARTUP_TIMEOUT_S) == 0, player.log()
        try:
            recorded = recorder.wait(STARTUP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            recorded = "timed out"
        assert recorded == 0, f"recorder: {recorded}\n" + node.log() + recorder.log() + player.log()
    finally:
        for process in (player, recorder, node):
            if process is not None:
                process.stop()
        watcher.destroy_node()
    outputs = open_bag(tmp_path / "outputs")
    messages = list(outputs.messages(["/m2a_anomaly/anomaly"]))
    anomaly = [deserialize_message(m.data, Image) for m in messages]
    assert [stamp_of(m) for m in anomaly] == [stamp(i) for i in range(frames)], node.log() + recorder.log()
    predictor = Predictor.from_weights(weights, short_side=64, max_size=128)
    for index, msg in enumerate(anomaly):
        np.testing.assert_array_equal(image_to_array(msg), predictor(frame(index)).anomaly.astype(np.float32))
    assert [m.log_time for m in messages] == sorted(m.log_time for m in messages)


def ground_truth(index: int) -> np.ndarray:
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    labels[10:24, 20 + 4 * index:44 + 4 * index] = 1
    labels[-2:] = 255
    return labels


def write_labelled_bag(path: Path, frames: int, same_log_time: bool = False) -> Path:
    with BagWriter(path, "mcap") as writer:
        for index in range(frames):
            log_time = stamp(0 if same_log_time else index) + 1_000_000
            for topic, array, encoding in (("/camera/image", frame(index), "rgb8"),
                                           ("/ground_truth", ground_truth(index), "mono8")):
                msg = Image()
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp(index), 1_000_000_000)
                msg.height, msg.width, msg.encoding = HEIGHT, WIDTH, encoding
                msg.step = int(array.strides[0])
                msg.data = array.tobytes()
                writer.write(topic, "sensor_msgs/msg/Image", log_time, serialize_message(msg))
    return path


@pytest.fixture()
def running_node(tmp_path, ros_context):
    """An m2a_anomaly node process on /camera/image (tiny model); yields its weights."""
    import yaml

    weights = tmp_path / "tiny.safetensors"
    save_weights(make_model(TINY, 6), weights)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "weights": str(weights), "short_side": 64, "max_size": 128, "threshold": 0.3, "min_instance_area": 10}}}))
    node = Process(module_command("m2a_ros.anomaly_node", "--ros-args", "--params-file", str(params),
                                  "-r", "image:=/camera/image"), tmp_path / "node.log")
    try:
        yield weights, node
    finally:
        node.stop()


def test_live_replay_evaluation_equals_offline(tmp_path, running_node):
    from m2a_core.metrics.evaluate import evaluate_anomaly
    from m2a_ros.bags.evaluate import main as bag_eval

    weights, node = running_node
    frames = 4
    bag = write_labelled_bag(tmp_path / "drive", frames)
    out = tmp_path / "live"
    status = bag_eval(["--live", "--bag", str(bag), "--image-topic", "/camera/image", "--labels-topic",
                       "/ground_truth", "--rate", "0.2", "--discovery-timeout", str(STARTUP_TIMEOUT_S),
                       "--out", str(out)])
    assert status == 0, node.log()
    report = json.loads((out / "report.json").read_text())
    assert report["live"]["published"] == report["live"]["received"] == frames, node.log()
    assert report["live"]["skipped"] == 0
    assert report["ground_truth"]["matched_frames"] == frames
    latency = (out / "latency.csv").read_text().splitlines()
    assert len(latency) == frames + 1 and all(float(row.split(",")[-1]) > 0 for row in latency[1:])
    predictor = Predictor.from_weights(weights, short_side=64, max_size=128)
    expected, _ = evaluate_anomaly(lambda: ((str(i), predictor(frame(i)).anomaly, ground_truth(i))
                                            for i in range(frames)))
    written = json.loads((out / "metrics.json").read_text())
    for key in ("AuPRC", "FPR95", "AUROC", "sIoU"):
        assert written[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-12), key
    # The result bag holds the input frames and the node's outputs placed at the input's log times.
    result = open_bag(out / "result_bag")
    inputs = {m.log_time for m in result.messages(["/camera/image"])}
    for topic in ("/m2a_anomaly/anomaly", "/m2a_anomaly/overlay", "/m2a_anomaly/labels"):
        assert {m.log_time for m in result.messages([topic])} == inputs, topic


def test_live_replay_counts_the_frames_the_node_skips(tmp_path, running_node):
    from m2a_ros.bags.evaluate import main as bag_eval

    _, node = running_node
    frames = 10
    # All frames at one log time: published back to back, faster than any model; the node's newest-frame
    # worker must skip some of them, and the ones it processes come out in order.
    bag = write_labelled_bag(tmp_path / "burst", frames, same_log_time=True)
    out = tmp_path / "live"
    assert bag_eval(["--live", "--bag", str(bag), "--image-topic", "/camera/image", "--discovery-timeout",
                     str(STARTUP_TIMEOUT_S), "--drain-timeout", "3", "--out", str(out)]) == 0, node.log()
    live = json.loads((out / "report.json").read_text())["live"]
    assert live["published"] == frames
    assert live["received"] >= 1 and live["skipped"] >= 1
    assert live["received"] + live["skipped"] == frames
    assert set(live["skipped_stamps"]) <= {stamp(i) for i in range(frames)}
    result = open_bag(out / "result_bag")
    stamps = [stamp_of(deserialize_message(m.data, Image)) for m in result.messages(["/m2a_anomaly/anomaly"])]
    assert stamps == sorted(stamps) and len(stamps) == live["received"]


def test_play_loops_and_stops_at_a_damaged_bag(tmp_path):
    from m2a_ros.bags.play import play

    frames = 4
    bag = write_camera_bag(tmp_path / "drive", "mcap", frames)
    published: list[tuple[str, bytes]] = []
    stats = play(open_bag(bag), lambda topic, data: published.append((topic, data)), rate=50.0, loop=True,
                 should_stop=lambda: len(published) >= 3 * frames)
    originals = [m.data for m in open_bag(bag).messages(["/camera/image"])]
    assert [data for _, data in published] == originals * 3  # byte-identical, in order, loop after loop
    assert stats.problem is None and stats.published == {"/camera/image": 3 * frames}

    mcap = next(bag.glob("*.mcap"))
    with open(mcap, "r+b") as handle:
        handle.truncate(mcap.stat().st_size * 6 // 10)
    published.clear()
    stats = play(open_bag(bag), lambda topic, data: published.append((topic, data)), rate=50.0, loop=True)
    assert 0 < len(published) < frames and [d for _, d in published] == originals[:len(published)]
    assert "truncated" in stats.problem  # a damaged bag is played once, up to the damage, then reported


def test_ros_session_applies_ros_args_and_shuts_rclpy_down_after_an_interrupt_or_an_error(ros_context):
    from m2a_ros.bags.session import ros_session

    # Our own options stay out of rclpy: only the --ros-args part reaches it (here a node rename).
    with ros_session("m2a_bag_session_test", ["-r", "__node:=renamed_by_ros_args"]) as session:
        assert session.node.get_name() == "renamed_by_ros_args" and session.ok()
        raise KeyboardInterrupt  # Ctrl-C: ends the block quietly, reported through ``interrupted``
    assert session.interrupted and not session.ok()

    with pytest.raises(ValueError, match="not an interrupt"):
        with ros_session("m2a_bag_session_test", []) as session:
            raise ValueError("not an interrupt")
    assert not session.interrupted and not session.ok()  # shut down anyway, so the next tool can init again


@pytest.mark.parametrize("option,value", [("--rate", "0"), ("--depth", "0"), ("--linger", "-1"), ("--linger", "nan")])
def test_play_rejects_bad_options_in_one_line(tmp_path, capsys, option, value):
    from m2a_ros.bags import play

    assert play.main(["--bag", str(tmp_path / "missing"), option, value]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("m2a_bag_play: error:") and option in error and "\n" not in error
