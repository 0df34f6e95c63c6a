"""The node's per-frame work (conversion, predictor, output messages) outside a running node.

The bag tools must produce what ``m2a_anomaly`` publishes, so nothing here re-implements it: the
predictor comes from ``anomaly_node.load_predictor`` with the node's parameter values, frames are
converted by ``m2a_ros.conversions``, and the open-set request and the output messages are built by the
node's own methods (``AnomalyNode.request_open_set`` / ``render_outputs`` / ``render_settings``), bound
to ``NodePipeline`` which carries the attributes they read (``predictor``, ``values``, ``openset_score``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from m2a_core.errors import M2AError

# What the node publishes, relative to its name (AnomalyNode.on_configure), with the ROS message type.
OUTPUT_TOPICS = {
    "anomaly": ("anomaly", "sensor_msgs/msg/Image"),
    "anomaly_color": ("anomaly/color", "sensor_msgs/msg/Image"),
    "labels": ("labels", "sensor_msgs/msg/Image"),
    "labels_color": ("labels/color", "sensor_msgs/msg/Image"),
    "overlay": ("overlay", "sensor_msgs/msg/Image"),
    "unknown_instances": ("unknown_instances", "visualization_msgs/msg/MarkerArray"),
    "detections": ("detections", "vision_msgs/msg/Detection2DArray"),
}
IMAGE_TYPES = {"sensor_msgs/msg/Image": "raw", "sensor_msgs/msg/CompressedImage": "compressed"}


def node_values(weights: str | None = None, params_file: str | None = None,
                overrides: dict[str, object] | None = None) -> dict[str, object]:
    """The node's parameter values: defaults, then a node parameter file, then overrides; all validated."""
    import yaml

    from m2a_ros.parameters import DEFAULTS, validate

    values = dict(DEFAULTS)
    if params_file:
        try:
            document = yaml.safe_load(Path(params_file).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise M2AError(f"cannot read parameter file {params_file}: {exc}") from None
        sections = [v.get("ros__parameters") for v in document.values() if isinstance(v, dict)]
        sections = [s for s in sections if isinstance(s, dict)]
        if not sections:
            raise M2AError(f"parameter file {params_file} has no '<node>: ros__parameters:' section")
        for section in sections:
            values.update(section)
    values.update(overrides or {})
    if weights:
        values["weights"] = str(weights)
    for name, value in values.items():
        if isinstance(DEFAULTS.get(name), float) and isinstance(value, int) and not isinstance(value, bool):
            values[name] = value = float(value)
        reason = validate(name, value, values)
        if reason:
            raise M2AError(f"bad node parameter: {reason}")
    return values


def header_stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


@dataclass
class FrameResult:
    stamp_ns: int
    rgb: np.ndarray
    prediction: object
    messages: dict[str, object]                          # output name -> rclpy message
    timings_s: dict[str, float] = field(default_factory=dict)


class FrameFailure(Exception):
    """One frame the node would drop; ``kind`` as in the node's diagnostics counters."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class NodePipeline:
    """Frames -> the node's output messages, with the node's predictor and parameters."""

    def __init__(self, values: dict[str, object]) -> None:
        from m2a_ros.anomaly_node import AnomalyNode, StartupError, load_predictor, vision_msgs_available
        from m2a_ros.parameters import OUTPUTS

        self._request_open_set = AnomalyNode.request_open_set
        self._render_outputs = AnomalyNode.render_outputs
        self._render_settings = AnomalyNode.render_settings
        self.values = dict(values)
        self.openset_score = "anomaly"
        try:
            self.predictor = load_predictor(self.values)
        except StartupError as exc:
            raise M2AError(str(exc)) from None
        if self.values["calibration_file"]:
            self._apply_calibration(str(self.values["calibration_file"]))
        self.wanted = {o for o in OUTPUTS if o in self.values["publish"]
                       and (o != "detections" or vision_msgs_available())}

    def _apply_calibration(self, path: str) -> None:
        """As the node's configure: the calibration's threshold and score map replace 'threshold'."""
        from m2a_core.openset.calibration import calibration_for_weights

        calibration = calibration_for_weights(str(self.values["weights"]), self.predictor.class_set.name,
                                              None if path == "auto" else path)
        self.openset_score = calibration.score
        self.values["threshold"] = float(calibration.threshold)

    # The node's methods read these.
    def render_settings(self):
        return self._render_settings(self)

    def request_open_set(self, wanted: set[str]) -> None:
        self._request_open_set(self, wanted)

    def process(self, kind: str, msg) -> FrameResult:
        """One deserialized Image/CompressedImage through conversion, the model and every wanted output."""
        from m2a_ros.conversions import ImageConversionError, compressed_to_rgb, image_to_rgb

        started = time.perf_counter()
        try:
            max_pixels = int(self.values["max_pixels"])
            rgb = image_to_rgb(msg, max_pixels) if kind == "raw" else compressed_to_rgb(msg, max_pixels)
        except ImageConversionError as exc:
            raise FrameFailure(exc.kind, str(exc)) from None
        converted = time.perf_counter()
        self.request_open_set(self.wanted)
        try:
            prediction = self.predictor(rgb)
        except Exception as exc:  # as the node: one frame failing is counted, the run goes on
            raise FrameFailure("model", f"{type(exc).__name__}: {exc}") from None
        predicted = time.perf_counter()
        messages = self._render_outputs(self, msg.header, rgb, prediction, self.wanted)
        rendered = time.perf_counter()
        timings = {"convert": converted - started, "predict": predicted - converted, "render": rendered - predicted,
                   **{f"model_{k}": v for k, v in prediction.timings.items()}}
        return FrameResult(header_stamp_ns(msg.header), rgb, prediction, messages, timings)


def message_class(msgtype: str):
    """rclpy class of 'pkg/msg/Name'."""
    import importlib

    package, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        raise M2AError(f"message type {msgtype} is not available to rclpy here (source its ROS package)") from None
