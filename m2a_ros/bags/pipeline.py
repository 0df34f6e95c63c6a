"""The node's per-frame work (conversion, predictor, output messages) outside a running node.

The bag tools must produce what ``m2a_anomaly`` publishes, so nothing here re-implements it: the predictor,
its calibration and its per-frame open-set request come from ``m2a_ros.node_predictor`` with the node's
parameter values, frames are converted by ``m2a_ros.conversions``, and the output messages and their topics
come from ``m2a_ros.outputs`` (``frame_messages``, ``OUTPUT_TOPICS``): the same calls the node makes.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from m2a_core.errors import M2AError

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
        from m2a_ros.node_predictor import StartupError, load_calibration, load_predictor
        from m2a_ros.outputs import RenderSettings, available_outputs

        self.values = dict(values)
        self.openset_score = "anomaly"
        try:
            self.predictor = load_predictor(self.values)
            if self.values["calibration_file"]:  # as the node's configure: its threshold replaces 'threshold'
                calibration = load_calibration(self.values, self.predictor)
                if calibration.mismatched:  # the node logs the same warning
                    print(f"warning: the calibration was made with other {', '.join(calibration.mismatched)} "
                          "than these node parameters: its threshold may not give the calibrated true-positive "
                          "rate", file=sys.stderr)
                self.openset_score = calibration.score
                self.values["threshold"] = calibration.threshold
        except StartupError as exc:
            raise M2AError(str(exc)) from None
        self.settings = RenderSettings.from_values(self.values)
        self.wanted = {o for o in available_outputs() if o in self.values["publish"]}

    def render_settings(self):
        return self.settings

    def process(self, kind: str, msg) -> FrameResult:
        """One deserialized Image/CompressedImage through conversion, the model and every wanted output."""
        from m2a_ros.conversions import ImageConversionError, compressed_to_rgb, image_to_rgb
        from m2a_ros.node_predictor import openset_request
        from m2a_ros.outputs import frame_messages

        started = time.perf_counter()
        try:
            max_pixels = int(self.values["max_pixels"])
            rgb = image_to_rgb(msg, max_pixels) if kind == "raw" else compressed_to_rgb(msg, max_pixels)
        except ImageConversionError as exc:
            raise FrameFailure(exc.kind, str(exc)) from None
        converted = time.perf_counter()
        try:
            prediction = self.predictor(rgb, **openset_request(self.values, self.wanted, self.openset_score))
        except Exception as exc:  # as the node: one frame failing is counted, the run goes on
            raise FrameFailure("model", f"{type(exc).__name__}: {exc}") from None
        predicted = time.perf_counter()
        messages = frame_messages(msg.header, rgb, prediction, self.wanted, self.settings, self.predictor.class_set)
        rendered = time.perf_counter()
        timings = {"convert": converted - started, "predict": predicted - converted, "render": rendered - predicted,
                   **{f"model_{k}": v for k, v in prediction.timings.items()}}
        return FrameResult(header_stamp_ns(msg.header), rgb, prediction, messages, timings)
