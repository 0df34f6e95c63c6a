"""The anomaly node as a vehicle runs it: its own process, real rclpy over Fast DDS, real frames.

Every test talks to the node only through topics and services, from a test node in this process, on a random
ROS_DOMAIN_ID with localhost discovery. Expected values come from the library (``Predictor``,
``m2a_core.openset``, ``m2a_core.visualize``) run here on the same frames.
"""
from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from PIL import Image as PILImage
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String
from visualization_msgs.msg import Marker, MarkerArray

from m2a_core.checkpoint import save_weights, sha256_file
from m2a_core.classes import CITYSCAPES, UNKNOWN_ID
from m2a_core.modeling import Mask2Anomaly
from m2a_core.openset import Calibration, PanopticParams, save_calibration
from m2a_core.predictor import Predictor
from m2a_core.visualize import anomaly_overlay, colorize_labels, colorize_scores
from m2a_ros.conversions import image_to_array
from m2a_ros.qos import latched_qos, output_qos

from helpers import NODE_TEST_DOMAINS, TINY, random_image, ros_domain

WORKTREE = Path(__file__).resolve().parents[1]
NODE = "/m2a_anomaly"
IMAGE_TOPICS = {"anomaly": "32FC1", "anomaly/color": "rgb8", "labels": "mono8", "labels/color": "rgb8",
                "overlay": "rgb8"}
FRAME_ID = "camera_front_optical"
HEIGHT, WIDTH = 48, 80
PREDICTOR_OPTIONS = {"short_side": 64, "max_size": 128}
THRESHOLD = 0.33              # inside this model's score range on these frames: both labels occur
MIN_INSTANCE_AREA, MAX_INSTANCES = 10, 3
STARTUP_TIMEOUT_S = 90.0      # torch import and model load on two busy cores


def node_command() -> list[str]:
    """The installed console script when this checkout's package is installed, else the module itself."""
    script = Path(sys.executable).with_name("m2a_anomaly_node")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "m2a_ros.anomaly_node"]


@pytest.fixture(scope="module")
def ros_env():
    """Localhost discovery: small frames only (see test_camera_size_frames_cross_processes)."""
    with ros_domain(NODE_TEST_DOMAINS, "LOCALHOST") as context:
        yield context


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("node_model") / "tiny.safetensors"
    torch.manual_seed(0)
    save_weights(Mask2Anomaly(TINY), path)
    return path


def write_params(path: Path, **values) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
    return path


class NodeProcess:
    def __init__(self, params_file: Path, log_path: Path, extra: tuple[str, ...] = ()) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([*node_command(), "--ros-args", "--params-file", str(params_file), *extra],
                                        stdout=self._log, stderr=subprocess.STDOUT, cwd=WORKTREE)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


class Harness:
    """The test's side: publishers of camera frames, subscribers of every output, service clients."""

    def __init__(self, context, node: str = NODE, image_topic: str = "/camera/image") -> None:
        self.node_name = node
        self.node = rclpy.create_node(f"m2a_node_test_{node.strip('/')}", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.images: dict[str, dict[tuple[int, int], Image]] = {t: {} for t in IMAGE_TOPICS}
        self.arrival: dict[tuple[int, int], float] = {}
        self.markers: dict[tuple[int, int], MarkerArray] = {}
        self.diagnostics: list[DiagnosticStatus] = []
        self.class_info: list[str] = []
        self.image_pub = self.node.create_publisher(Image, image_topic, qos_profile_sensor_data)
        self.compressed_pub = self.node.create_publisher(CompressedImage, f"{image_topic}/compressed",
                                                         qos_profile_sensor_data)
        self.subscriptions = [self.node.create_subscription(Image, f"{node}/{topic}",
                                                            lambda m, t=topic: self._on_image(t, m), output_qos())
                              for topic in IMAGE_TOPICS]
        self.subscriptions.append(self.node.create_subscription(
            MarkerArray, f"{node}/unknown_instances", self._on_markers, output_qos()))
        self.subscriptions.append(self.node.create_subscription(
            DiagnosticArray, "/diagnostics", self._on_diagnostics, 10))
        self.subscriptions.append(self.node.create_subscription(
            String, f"{node}/class_info", lambda m: self.class_info.append(m.data), latched_qos()))
        self.set_parameters = self.node.create_client(SetParameters, f"{node}/set_parameters")
        self.get_state = self.node.create_client(GetState, f"{node}/get_state")
        self.change_state = self.node.create_client(ChangeState, f"{node}/change_state")
        self._spinning = True
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while self._spinning:
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self._spinning = False
        self.thread.join(5)
        self.executor.shutdown()
        self.node.destroy_node()

    def _on_image(self, topic: str, msg: Image) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        with self.lock:
            self.images[topic][key] = msg
            if topic == "anomaly":
                self.arrival[key] = time.time()

    def _on_markers(self, msg: MarkerArray) -> None:
        if msg.markers:
            stamp = msg.markers[0].header.stamp
            with self.lock:
                self.markers[(stamp.sec, stamp.nanosec)] = msg

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self.lock:
            self.diagnostics.extend(s for s in msg.status if self.node_name.strip("/") in s.name)

    def latest_diagnostics(self) -> tuple[int, str, dict[str, str]]:
        self.wait_for(lambda: self.diagnostics, 10, "a /diagnostics message from the node")
        with self.lock:
            status = self.diagnostics[-1]
        return status.level[0], status.message, {kv.key: kv.value for kv in status.values}

    def wait_for(self, condition, timeout: float, what: str, process: NodeProcess | None = None) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if condition():
                return
            if process is not None and not process.alive():
                pytest.fail(f"node exited with {process.process.returncode} while waiting for {what}:\n{process.log()}")
            time.sleep(0.05)
        log = f"\nnode log:\n{process.log()}" if process is not None else ""
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{log}")

    def connected(self) -> bool:
        return (self.image_pub.get_subscription_count() > 0
                and all(s.get_publisher_count() > 0 for s in self.subscriptions[:len(IMAGE_TOPICS) + 1]))

    def header(self) -> Header:
        return Header(stamp=self.node.get_clock().now().to_msg(), frame_id=FRAME_ID)

    def outputs_for(self, key: tuple[int, int]) -> dict[str, Image] | None:
        with self.lock:
            if all(key in self.images[t] for t in IMAGE_TOPICS) and key in self.markers:
                return {t: self.images[t][key] for t in IMAGE_TOPICS}
        return None

    def send_until_processed(self, make_msg, process: NodeProcess, compressed: bool = False,
                             timeout: float = 30.0, what: str = "a published frame") -> tuple[Header, dict[str, Image]]:
        """Publish a frame (fresh stamp each time) until the node's outputs for one of them arrive."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            header = self.header()
            (self.compressed_pub if compressed else self.image_pub).publish(make_msg(header))
            key = (header.stamp.sec, header.stamp.nanosec)
            until = time.time() + 2.0
            while time.time() < until:
                outputs = self.outputs_for(key)
                if outputs is not None:
                    return header, outputs
                time.sleep(0.02)
            if not process.alive():
                pytest.fail(f"node exited with {process.process.returncode}:\n{process.log()}")
        with self.lock:
            seen = {topic: len(v) for topic, v in self.images.items()}
            diagnostics = {kv.key: kv.value for kv in self.diagnostics[-1].values} if self.diagnostics else {}
        pytest.fail(f"no outputs for {what} within {timeout:.0f} s (outputs seen: {seen}; node diagnostics: "
                    f"{diagnostics})\nnode log:\n{process.log()}")

    def call(self, client, request, timeout: float = 10.0):
        if not client.wait_for_service(timeout_sec=timeout):
            pytest.fail(f"service {client.srv_name} not available")
        future = client.call_async(request)
        deadline = time.time() + timeout
        while not future.done() and time.time() < deadline:
            time.sleep(0.02)
        assert future.done(), f"service {client.srv_name} did not answer"
        return future.result()

    def set_parameter(self, name: str, value) -> tuple[bool, str]:
        if isinstance(value, bool):
            pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
        elif isinstance(value, float):
            pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        else:
            pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        result = self.call(self.set_parameters, SetParameters.Request(parameters=[Parameter(name=name, value=pv)]))
        return result.results[0].successful, result.results[0].reason


def image_msg(header: Header, rgb: np.ndarray, encoding: str = "rgb8") -> Image:
    data = rgb[..., ::-1] if encoding == "bgr8" else rgb
    return Image(header=header, height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, step=rgb.shape[1] * 3,
                 data=np.ascontiguousarray(data).tobytes())


def png_msg(header: Header, rgb: np.ndarray) -> CompressedImage:
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, format="PNG")
    return CompressedImage(header=header, format="rgb8; png compressed rgb8", data=buffer.getvalue())


def base_params(model: Path, **overrides) -> dict:
    values = {"weights": str(model), "short_side": PREDICTOR_OPTIONS["short_side"],
              "max_size": PREDICTOR_OPTIONS["max_size"], "threshold": THRESHOLD, "compressed_input": True,
              "min_instance_area": MIN_INSTANCE_AREA, "max_instances": MAX_INSTANCES, "max_pixels": 100_000,
              "diagnostics_period": 0.2, "latency_warn_ms": 5000.0}
    values.update(overrides)
    return values


@pytest.fixture(scope="module")
def running(ros_env, weights, tmp_path_factory):
    """One node process for the module (started from its YAML file), and the test harness."""
    folder = tmp_path_factory.mktemp("node_run")
    params = write_params(folder / "anomaly.yaml", **base_params(weights))
    process = NodeProcess(params, folder / "node.log", ("-r", "image:=/camera/image"))
    harness = Harness(ros_env)
    try:
        harness.wait_for(harness.connected, STARTUP_TIMEOUT_S, "the node's topics to connect", process)
        yield harness, process
    finally:
        harness.close()
        process.stop()


@pytest.fixture(scope="module")
def expected(weights):
    """The library's results for a frame: the predictor with the same options the node was given."""
    predictors: dict[float, Predictor] = {}

    def compute(rgb: np.ndarray, threshold: float = THRESHOLD):
        if threshold not in predictors:
            predictors[threshold] = Predictor.from_weights(
                weights, **PREDICTOR_OPTIONS, openset_threshold=threshold, panoptic=True,
                panoptic_params=PanopticParams(min_component_area=MIN_INSTANCE_AREA, max_components=MAX_INSTANCES,
                                               unknown_source="anomaly", anomaly_threshold=threshold),
                panoptic_resolution="mask")
        pred = predictors[threshold](rgb)
        return pred, pred.labels, [s for s in pred.segments if s["unknown"]]

    return compute


def check_outputs(header: Header, outputs: dict[str, Image], markers: MarkerArray, rgb: np.ndarray, expected,
                  threshold: float = THRESHOLD) -> None:
    pred, labels, instances = expected(rgb, threshold)
    for topic, encoding in IMAGE_TOPICS.items():
        msg = outputs[topic]
        assert msg.header == header, topic
        assert msg.encoding == encoding and (msg.height, msg.width) == rgb.shape[:2], topic
    np.testing.assert_allclose(image_to_array(outputs["anomaly"]), pred.anomaly, atol=1e-5)
    np.testing.assert_array_equal(image_to_array(outputs["anomaly/color"]), colorize_scores(pred.anomaly))
    got_labels = image_to_array(outputs["labels"])
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_array_equal(image_to_array(outputs["labels/color"]), colorize_labels(labels, CITYSCAPES))
    # Overlay: the library's heatmap overlay, except on the unknown instances' contours and boxes (cyan).
    overlay = image_to_array(outputs["overlay"])
    reference = anomaly_overlay(rgb, pred.anomaly, alpha=0.5)
    cyan = np.all(overlay == (0, 255, 255), axis=-1)
    np.testing.assert_array_equal(overlay[~cyan], reference[~cyan])
    for segment in instances:
        x, y, w, h = segment["bbox"]
        assert cyan[y, x:x + w].all() and cyan[y + h - 1, x:x + w].all()
        assert cyan[y:y + h, x].all() and cyan[y:y + h, x + w - 1].all()
    if not instances:
        assert not cyan.any()
    # Markers: DELETEALL then one box per unknown instance, in the camera frame with the input header.
    assert markers.markers[0].action == Marker.DELETEALL
    boxes = markers.markers[1:]
    assert len(boxes) == len(instances)
    for marker, segment in zip(boxes, instances, strict=True):
        assert marker.header == header and marker.type == Marker.LINE_STRIP and marker.id == segment["id"]
        x, y, w, h = segment["bbox"]
        corners = [(round(p.x / 0.001), round(p.y / 0.001)) for p in marker.points]
        assert corners == [(x, y), (x + w, y), (x + w, y + h), (x, y + h), (x, y)]


def test_outputs_equal_the_library_for_every_input_kind(running, expected):
    harness, process = running
    # (the RGB image the node should see, the message that carries it, compressed?)
    grey = random_image(4, HEIGHT, WIDTH)[..., 0]
    cells = np.repeat(np.repeat(random_image(5, HEIGHT // 2, WIDTH // 2), 2, 0), 2, 1)  # one colour per 2x2
    mosaic = cells[..., 1].copy()                  # RGGB: G everywhere but R top-left, B bottom-right
    mosaic[0::2, 0::2], mosaic[1::2, 1::2] = cells[0::2, 0::2, 0], cells[1::2, 1::2, 2]
    frames = [
        (random_image(1, HEIGHT, WIDTH), lambda h, im: image_msg(h, im, "rgb8"), False),
        (random_image(2, HEIGHT, WIDTH), lambda h, im: image_msg(h, im, "bgr8"), False),
        (random_image(3, HEIGHT, WIDTH), png_msg, True),
        (np.repeat(grey[..., None], 3, 2), lambda h, im: Image(
            header=h, height=HEIGHT, width=WIDTH, encoding="mono16", step=WIDTH * 2,
            data=(grey.astype("<u2") * 257).tobytes()), False),
        (cells, lambda h, im: Image(header=h, height=HEIGHT, width=WIDTH, encoding="bayer_rggb8", step=WIDTH,
                                    data=mosaic.tobytes()), False),
    ]
    for rgb, make, compressed in frames:
        header, outputs = harness.send_until_processed(lambda h, im=rgb, f=make: f(h, im), process, compressed,
                                                       what=f"a {rgb.shape[1]}x{rgb.shape[0]} frame")
        markers = harness.markers[(header.stamp.sec, header.stamp.nanosec)]
        check_outputs(header, outputs, markers, rgb, expected)
        labels = image_to_array(outputs["labels"])
        assert (labels == UNKNOWN_ID).any() and (labels != UNKNOWN_ID).any(), "threshold should split this frame"
    # Class names and colours, latched: a late subscriber gets them too.
    harness.wait_for(lambda: harness.class_info, 10, "~/class_info")
    info = json.loads(harness.class_info[-1])
    assert info["names"] == list(CITYSCAPES.names) and info["unknown_id"] == UNKNOWN_ID
    assert [tuple(c) for c in info["colors"]] == list(CITYSCAPES.colors)
    # Diagnostics come every 0.2 s: wait for one that has seen the three frames.
    harness.wait_for(lambda: int(harness.latest_diagnostics()[2]["frames processed"]) >= 3, 5,
                     "diagnostics counting the three frames")
    level, message, values = harness.latest_diagnostics()
    for key in ("backend", "device", "model", "input rate (Hz)", "processed rate (Hz)", "frames skipped (busy)",
                "latency p50 (ms)", "latency p95 (ms)", "inference p50 (ms)"):
        assert key in values, key
    assert values["backend"] == "torch" and values["device"] == "cpu" and values["model"] == "tiny.safetensors"


def _bad_frames(header: Header) -> list[tuple[str, object, str]]:
    """(failure kind the node should count, message, topic) for every failure class."""
    good = random_image(4, 8, 8)
    nan = np.full((6, 6), 0.5, np.float32)
    nan[2, 3] = np.nan
    return [
        ("encoding", Image(header=header, height=8, width=8, encoding="yuv422", step=16, data=bytes(128)), "raw"),
        ("step", Image(header=header, height=8, width=8, encoding="rgb8", step=20, data=bytes(160)), "raw"),
        ("step", Image(header=header, height=8, width=8, encoding="rgb8", step=24, data=good.tobytes()[:100]), "raw"),
        ("size", Image(header=header, height=0, width=0, encoding="rgb8", step=0, data=b""), "raw"),
        ("size", Image(header=header, height=400, width=400, encoding="mono8", step=400, data=bytes(160000)), "raw"),
        ("nan", Image(header=header, height=6, width=6, encoding="32FC1", step=24, data=nan.tobytes()), "raw"),
        ("compressed", CompressedImage(header=header, format="jpeg", data=b"\xff\xd8\xff\xe0 not a jpeg"),
         "compressed"),
    ]


def test_malformed_barrage_is_counted_and_the_next_good_frame_is_right(running, expected):
    harness, process = running
    harness.wait_for(lambda: harness.diagnostics, 10, "diagnostics")
    before = harness.latest_diagnostics()[2]
    failed_before = int(before["frames failed"])
    expected_counts: dict[str, int] = {}
    for index, (kind, msg, topic) in enumerate(_bad_frames(harness.header())):
        expected_counts[kind] = expected_counts.get(kind, 0) + 1
        # One at a time: the node is idle, so each is converted (and rejected) rather than replaced.
        target = failed_before + index + 1
        deadline = time.time() + 10
        while int(harness.latest_diagnostics()[2]["frames failed"]) < target and time.time() < deadline:
            (harness.compressed_pub if topic == "compressed" else harness.image_pub).publish(msg)
            time.sleep(0.3)
        assert int(harness.latest_diagnostics()[2]["frames failed"]) >= target, (kind, process.log())
        assert process.alive(), process.log()
    level, message, values = harness.latest_diagnostics()
    for kind, count in expected_counts.items():
        assert int(values.get(f"failed: {kind}", 0)) >= count, (kind, values)
    assert level == DiagnosticStatus.WARN[0] and "frames failed" in message, message
    rgb = random_image(5, HEIGHT, WIDTH)
    header, outputs = harness.send_until_processed(lambda h: image_msg(h, rgb), process)
    check_outputs(header, outputs, harness.markers[(header.stamp.sec, header.stamp.nanosec)], rgb, expected)
    assert "Traceback" not in process.log()


def test_faster_input_than_inference_skips_frames_and_keeps_latency_bounded(running):
    harness, process = running
    rgb = random_image(6, HEIGHT, WIDTH)
    skipped_before = int(harness.latest_diagnostics()[2]["frames skipped (busy)"])
    sent: list[tuple[int, int]] = []
    start = time.time()
    while time.time() - start < 3.0:  # ~200 Hz: several frames per inference
        header = harness.header()
        harness.image_pub.publish(image_msg(header, rgb))
        sent.append((header.stamp.sec, header.stamp.nanosec))
        time.sleep(0.005)
    last_sent = time.time()
    time.sleep(1.5)
    with harness.lock:
        processed = [key for key in sent if key in harness.arrival]
        latencies = [harness.arrival[key] - (key[0] + key[1] * 1e-9) for key in processed]
        last_arrival = max(harness.arrival[key] for key in processed) if processed else 0.0
    assert processed, f"no frame of the burst was processed:\n{process.log()}"
    assert len(processed) < len(sent) / 2, (len(processed), len(sent))
    # No queue: every output is at most a couple of inference times old, and output stops soon after input.
    assert max(latencies) < 1.5, sorted(latencies)[-5:]
    assert last_arrival - last_sent < 1.0
    harness.wait_for(lambda: int(harness.latest_diagnostics()[2]["frames skipped (busy)"]) > skipped_before, 5,
                     "skipped frames in diagnostics")
    values = harness.latest_diagnostics()[2]
    assert float(values["latency p95 (ms)"]) < 1500.0
    assert float(values["input rate (Hz)"]) > float(values["processed rate (Hz)"]) or \
        float(values["processed rate (Hz)"]) == 0.0


def test_runtime_parameters_validate_and_take_effect(running, expected):
    harness, process = running
    rejected = {
        "overlay_alpha": (2.0, "overlay_alpha must be in [0, 1]"),
        "score_min": (5.0, "score_min (5.0) must be below score_max (1.0)"),
        "colormap": ("no_such_map", "not a matplotlib colour map"),
        "weights": ("/elsewhere.safetensors", "takes effect on configure"),
        "threshold": ("high", "threshold must be a float"),
    }
    for name, (value, reason) in rejected.items():
        ok, message = harness.set_parameter(name, value)
        assert not ok and reason in message, (name, message)
    ok, message = harness.set_parameter("threshold", 0.3)
    assert ok, message
    try:
        rgb = random_image(7, HEIGHT, WIDTH)
        header, outputs = harness.send_until_processed(lambda h: image_msg(h, rgb), process)
        check_outputs(header, outputs, harness.markers[(header.stamp.sec, header.stamp.nanosec)], rgb, expected,
                      threshold=0.3)
        harness.wait_for(lambda: harness.latest_diagnostics()[2]["threshold"] == "0.3000", 5,
                         "the new threshold in diagnostics")
        # max_rate: frames beyond it are dropped before inference and counted.
        assert harness.set_parameter("max_rate", 2.0)[0]
        dropped = int(harness.latest_diagnostics()[2]["frames dropped (max_rate)"])
        before = len(harness.arrival)
        start = time.time()
        while time.time() - start < 2.0:
            harness.image_pub.publish(image_msg(harness.header(), rgb))
            time.sleep(0.02)
        time.sleep(0.5)
        assert len(harness.arrival) - before <= 6, "max_rate 2 Hz allows at most ~5 frames in 2 s"
        harness.wait_for(lambda: int(harness.latest_diagnostics()[2]["frames dropped (max_rate)"]) > dropped + 50, 5,
                         "frames dropped by max_rate in diagnostics")
    finally:
        assert harness.set_parameter("threshold", THRESHOLD)[0]
        assert harness.set_parameter("max_rate", 0.0)[0]


def write_calibration(path: Path, weights: Path, threshold: float, sha256: str | None = None) -> Path:
    save_calibration(Calibration(threshold=threshold, tpr=0.95, achieved_tpr=0.95, fpr=0.1, num_images=1,
                                 num_anomaly_pixels=10, num_inlier_pixels=90,
                                 weights_sha256=sha256 or sha256_file(weights), classes="cityscapes"), path)
    return path


def test_lifecycle_supervisor_loads_the_model_before_driving(ros_env, weights, tmp_path, expected):
    calibration = write_calibration(tmp_path / "tiny.calibration.json", weights, 0.31)
    params = write_params(tmp_path / "anomaly.yaml", **base_params(weights, autostart=False,
                                                                   calibration_file=str(calibration)))
    # Its own name: the module's autostarted node is still running.
    process = NodeProcess(params, tmp_path / "node.log", ("-r", "image:=/camera/managed", "-r", "__node:=m2a_managed"))
    harness = Harness(ros_env, "/m2a_managed", "/camera/managed")
    try:
        harness.wait_for(lambda: harness.get_state.service_is_ready(), STARTUP_TIMEOUT_S, "get_state", process)
        state = harness.call(harness.get_state, GetState.Request()).current_state
        assert state.id == State.PRIMARY_STATE_UNCONFIGURED
        assert harness.image_pub.get_subscription_count() == 0
        for transition, state_id in ((Transition.TRANSITION_CONFIGURE, State.PRIMARY_STATE_INACTIVE),
                                     (Transition.TRANSITION_ACTIVATE, State.PRIMARY_STATE_ACTIVE)):
            result = harness.call(harness.change_state, ChangeState.Request(transition=Transition(id=transition)),
                                  timeout=60)
            assert result.success, process.log()
            assert harness.call(harness.get_state, GetState.Request()).current_state.id == state_id
            if state_id == State.PRIMARY_STATE_INACTIVE:
                time.sleep(0.5)
                assert harness.image_pub.get_subscription_count() == 0, "inactive node must not take frames"
        harness.wait_for(harness.connected, 30, "the active node's topics", process)
        rgb = random_image(8, HEIGHT, WIDTH)
        header, outputs = harness.send_until_processed(lambda h: image_msg(h, rgb), process)
        # The calibration file's threshold replaced the parameter's.
        check_outputs(header, outputs, harness.markers[(header.stamp.sec, header.stamp.nanosec)], rgb, expected,
                      threshold=0.31)
        result = harness.call(harness.change_state,
                              ChangeState.Request(transition=Transition(id=Transition.TRANSITION_DEACTIVATE)))
        assert result.success
        harness.wait_for(lambda: harness.image_pub.get_subscription_count() == 0, 10, "unsubscribe on deactivate")
    finally:
        harness.close()
        process.stop()


@pytest.mark.parametrize("overrides, message", [
    ({"weights": "/does/not/exist.safetensors"}, "weights file /does/not/exist.safetensors does not exist"),
    ({"weights": ""}, "parameter 'weights' is not set"),
    ({"backend": "caffe"}, "backend must be one of torch, onnxruntime, tensorrt"),
    ({"threshold": "high"}, "threshold must be a float"),
    ({"overlay_alpha": 3.0}, "overlay_alpha must be in [0, 1]"),
    ({"diagnostics_period": -1.0}, "diagnostics_period must be > 0"),
    ({"backend": "tensorrt"}, "the tensorrt backend needs NVIDIA TensorRT"),
    ({"calibration_file": "OTHER"}, "was made for other weights"),
    ({"calibration_file": "/no/such.json"}, "no calibration file /no/such.json"),
])
def test_startup_failures_are_one_clear_line_and_nonzero_exit(ros_env, weights, tmp_path, overrides, message):
    if overrides.get("calibration_file") == "OTHER":
        overrides = {"calibration_file": str(write_calibration(tmp_path / "c.json", weights, 0.5, "0" * 64))}
    params = write_params(tmp_path / "bad.yaml", **base_params(weights, **overrides))
    process = NodeProcess(params, tmp_path / "node.log")
    try:
        process.process.wait(STARTUP_TIMEOUT_S)
    finally:
        process.stop()
    log = process.log()
    assert process.process.returncode == 1, log
    fatal = [line for line in log.splitlines() if "FATAL" in line]
    assert len(fatal) == 1 and message in fatal[0], log
    assert "Traceback" not in log


def test_outputs_nobody_receives_are_not_computed(ros_env, weights):
    """In process: the open-set work the predictor is asked for (per call) follows the subscriptions and
    'publish'; the predictor's own options never change."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter as RosParameter

    from m2a_ros.anomaly_node import AnomalyNode

    node = AnomalyNode("m2a_wanted", context=ros_env, parameter_overrides=[
        RosParameter("weights", value=str(weights)), RosParameter("autostart", value=False),
        RosParameter("publish", value=["anomaly", "labels", "unknown_instances"])])
    listener = rclpy.create_node("m2a_wanted_listener", context=ros_env)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.wanted_outputs() == set()
        defaults = node.predictor.options
        asked = {}

        def listen(topic: str, expected: set[str], kind=Image) -> set[str]:
            listener.create_subscription(kind, f"/m2a_wanted/{topic}", lambda m: None, output_qos())
            deadline = time.time() + 10
            while time.time() < deadline and node.wanted_outputs() != expected:
                time.sleep(0.02)
            wanted = node.wanted_outputs()
            # The options the node's next predictor call runs with.
            asked["options"] = node.predictor.resolve_options(**node.openset_request(wanted))
            return wanted

        assert listen("anomaly", {"anomaly"}) == {"anomaly"}
        assert asked["options"].openset_threshold is None and not asked["options"].panoptic
        assert listen("labels", {"anomaly", "labels"}) == {"anomaly", "labels"}
        assert asked["options"].openset_threshold == 0.5 and not asked["options"].panoptic
        # overlay is subscribed but not in 'publish': still not computed
        listener.create_subscription(Image, "/m2a_wanted/overlay", lambda m: None, output_qos())
        everything = {"anomaly", "labels", "unknown_instances"}
        assert listen("unknown_instances", everything, MarkerArray) == everything
        time.sleep(0.3)  # the overlay subscription has long been discovered: still not wanted
        assert node.wanted_outputs() == everything
        assert asked["options"].panoptic and asked["options"].openset_threshold == 0.5
        assert asked["options"].panoptic_params == PanopticParams(min_component_area=100, max_components=3,
                                                                  unknown_source="anomaly", anomaly_threshold=0.5)
        assert node.predictor.options == defaults and not defaults.panoptic  # nothing shared was changed
    finally:
        listener.destroy_node()
        node._stop_input()
        node.destroy_node()


def test_camera_size_frames_cross_processes(weights, expected, tmp_path):
    """A 1024x2048 rgb8 frame (6 MB) in, five full-size images out, between processes.

    Measured here: with Fast DDS's LARGE_DATA builtin transports such frames arrive; with
    ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST they do not (whatever the transports), so this test discovers
    over the system default range, isolated by its random domain id.
    """
    with ros_domain(NODE_TEST_DOMAINS, "SYSTEM_DEFAULT") as context:
        params = write_params(tmp_path / "anomaly.yaml", **base_params(weights, max_pixels=4096 * 4096))
        process = NodeProcess(params, tmp_path / "node.log", ("-r", "image:=/camera/image"))
        harness = Harness(context)
        try:
            harness.wait_for(harness.connected, STARTUP_TIMEOUT_S, "the node's topics to connect", process)
            rgb = random_image(6, 1024, 2048)
            header, outputs = harness.send_until_processed(lambda h: image_msg(h, rgb), process,
                                                           what="a 2048x1024 frame")
            check_outputs(header, outputs, harness.markers[(header.stamp.sec, header.stamp.nanosec)], rgb, expected)
        finally:
            harness.close()
            process.stop()
