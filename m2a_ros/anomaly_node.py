"""``m2a_anomaly``: camera frames in; anomaly heatmap, open-set labels, unknown instances and diagnostics out.

A managed (lifecycle) node. ``configure`` validates the parameters and loads the model (a supervisor can do
this before driving), ``activate`` subscribes to the camera, ``deactivate`` unsubscribes, ``cleanup``
releases the model. With ``autostart`` (the default) the node configures and activates itself at start,
and a configure failure (missing weights, unusable backend, bad parameters) is one log line and exit
status 1.

The node only wires topics to library calls: ``m2a_ros.conversions`` (messages <-> numpy),
``m2a_core.predictor`` (the model, with its opt-in ``m2a_core.openset`` labels and unknown instances),
``m2a_ros.outputs`` (pictures, markers, detections). Inference runs on a ``LatestFrameWorker`` thread: the
executor never blocks, the newest frame is always the next one processed, and frames replaced while the
model is busy are counted as skipped, never queued.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter as RosParameter
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from m2a_ros import diagnostics
from m2a_ros.conversions import ImageConversionError, array_to_image, compressed_to_rgb, image_to_rgb
from m2a_ros.latest_frame_worker import LatestFrameWorker
from m2a_ros.outputs import (
    RenderSettings,
    class_info_json,
    detection_array,
    marker_array,
    render_overlay,
    unknown_segments,
)
from m2a_ros.parameters import DEFAULTS, OUTPUTS, PARAMETERS, RUNTIME, validate
from m2a_ros.qos import camera_input_qos, diagnostics_qos, latched_qos, output_qos

NODE_NAME = "m2a_anomaly"
LABEL_OUTPUTS = frozenset({"labels", "labels_color"})
INSTANCE_OUTPUTS = frozenset({"overlay", "unknown_instances", "detections"})  # need the unknown instances
LOG_THROTTLE_S = 5.0


class StartupError(Exception):
    """The node cannot run with this configuration; the message says why."""


def vision_msgs_available() -> bool:
    try:
        import vision_msgs.msg  # noqa: F401
    except ImportError:
        return False
    return True


def load_predictor(values: dict):
    """The library predictor for the node's parameters; ``StartupError`` with a clear reason otherwise."""
    import torch

    from m2a_core.errors import M2AError
    from m2a_core.predictor import Predictor

    weights = values["weights"]
    if not weights:
        raise StartupError("parameter 'weights' is not set: give the model weights file")
    if not os.path.isfile(weights):
        raise StartupError(f"weights file {weights} does not exist")
    device = values["device"]
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise StartupError(f"device {device!r} asked for, but CUDA is not available on this machine")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise StartupError(f"device {device!r} asked for, but only {torch.cuda.device_count()} CUDA devices")
    options = {
        "tta": values["tta"], "refine": values["refine"],
        "short_side": values["short_side"] or None, "max_size": values["max_size"] or None,
    }
    backend = values["backend"]
    options.update(backend=backend, precision=values["precision"])
    try:
        return Predictor.from_weights(weights, device=device, **options)
    except M2AError as exc:
        raise StartupError(str(exc)) from None
    except ImportError as exc:
        raise StartupError(f"backend {backend!r} is not usable here: {exc}") from None
    except (RuntimeError, ValueError, OSError) as exc:
        raise StartupError(f"cannot load {weights} with backend {backend!r} on {device}: {exc}") from None


class AnomalyNode(LifecycleNode):
    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        for parameter in PARAMETERS:
            self.declare_parameter(parameter.name, parameter.default, ParameterDescriptor(
                description=parameter.description, dynamic_typing=True))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.stats = diagnostics.FrameStats()
        self.rate_limited = 0
        self.predictor = None
        self.openset_score = "anomaly"  # the score map the threshold applies to (a calibration file may say)
        self.worker: LatestFrameWorker | None = None
        self.publishers_by_output: dict[str, object] = {}
        self.class_info_publisher = None
        self.subscriptions_: list = []
        self.active = False
        self.idle = False
        self.values = self._read_values()
        self._last_accepted = 0.0
        self._lock = threading.Lock()
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", diagnostics_qos())
        # A bad period must not crash the constructor: configure reports it as a bad parameter.
        period = self.values["diagnostics_period"]
        if validate("diagnostics_period", period) is not None:
            period = DEFAULTS["diagnostics_period"]
        self.diagnostics_timer = self.create_timer(period, self.publish_diagnostics)

    # Parameters -------------------------------------------------------------------------------------------

    def _read_values(self) -> dict:
        values = {}
        for parameter in PARAMETERS:
            value = self.get_parameter(parameter.name).value
            if isinstance(parameter.default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if isinstance(parameter.default, list) and value is not None:
                value = list(value)
            values[parameter.name] = value
        return values

    def _on_set_parameters(self, parameters: list[RosParameter]) -> SetParametersResult:
        proposed = dict(self.values)
        for parameter in parameters:
            if parameter.name not in DEFAULTS:
                return SetParametersResult(successful=False, reason=f"unknown parameter {parameter.name!r}")
            proposed[parameter.name] = parameter.value
        for parameter in parameters:
            if parameter.name not in RUNTIME and self.predictor is not None:
                return SetParametersResult(successful=False, reason=(
                    f"{parameter.name} takes effect on configure: deactivate and clean up the node first"))
            reason = validate(parameter.name, parameter.value, proposed)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        with self._lock:
            for parameter in parameters:
                value = parameter.value
                if isinstance(DEFAULTS[parameter.name], float):
                    value = float(value)
                self.values[parameter.name] = list(value) if isinstance(value, (list, tuple)) else value
        return SetParametersResult(successful=True)

    def render_settings(self) -> RenderSettings:
        v = self.values
        return RenderSettings(colormap=v["colormap"], score_min=v["score_min"], score_max=v["score_max"],
                              overlay_alpha=v["overlay_alpha"], marker_scale=v["marker_scale"],
                              marker_depth=v["marker_depth"])

    # Lifecycle --------------------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.values = self._read_values()
            for name, value in self.values.items():
                reason = validate(name, value, self.values)
                if reason:
                    raise StartupError(f"bad parameter: {reason}")
            self.predictor = load_predictor(self.values)
            if self.values["calibration_file"]:
                self._apply_calibration(self.values["calibration_file"])
        except StartupError as exc:
            self.predictor = None
            self.get_logger().fatal(f"cannot configure: {exc}")
            return TransitionCallbackReturn.FAILURE
        outputs = [o for o in OUTPUTS if o != "detections" or vision_msgs_available()]
        topics = {"anomaly": ("~/anomaly", Image), "anomaly_color": ("~/anomaly/color", Image),
                  "labels": ("~/labels", Image), "labels_color": ("~/labels/color", Image),
                  "overlay": ("~/overlay", Image), "unknown_instances": ("~/unknown_instances", MarkerArray)}
        if "detections" in outputs:
            from vision_msgs.msg import Detection2DArray

            topics["detections"] = ("~/detections", Detection2DArray)
        self.publishers_by_output = {name: self.create_publisher(kind, topic, output_qos())
                                     for name, (topic, kind) in topics.items()}
        self.class_info_publisher = self.create_publisher(String, "~/class_info", latched_qos())
        self.class_info_publisher.publish(String(data=class_info_json(self.predictor.class_set)))
        self.get_logger().info(
            f"configured: {self.values['weights']} on {self.values['backend']}/{self.values['device']}, "
            f"classes {self.predictor.class_set.name}, threshold {self.values['threshold']}")
        return TransitionCallbackReturn.SUCCESS

    def _apply_calibration(self, path: str) -> None:
        """Threshold and score map from an 'm2a calibrate' file, checked against the weights and classes."""
        from m2a_core.errors import M2AError
        from m2a_core.openset.calibration import calibration_for_weights

        weights = self.values["weights"]
        try:
            calibration = calibration_for_weights(weights, self.predictor.class_set.name,
                                                  None if path == "auto" else path)
        except M2AError as exc:
            raise StartupError(str(exc)) from None
        current = self.predictor.options
        differ = sorted(k for k, v in calibration.predictor_options.items()
                        if hasattr(current, k) and k in ("short_side", "max_size", "resize", "tta", "refine")
                        and v != getattr(current, k))
        if differ:
            self.get_logger().warning(f"the calibration was made with other {', '.join(differ)} than this node "
                                      "uses: its threshold may not give the calibrated true-positive rate")
        self.openset_score = calibration.score
        self.values["threshold"] = float(calibration.threshold)
        self.set_parameters([RosParameter("threshold", value=float(calibration.threshold))])

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.worker = LatestFrameWorker(self._process, self._on_worker_error)
        self.subscriptions_ = [self.create_subscription(
            Image, "image", lambda msg: self._on_frame("raw", msg), camera_input_qos())]
        if self.values["compressed_input"]:
            # image_transport's naming: '<resolved image topic>/compressed', so one remap of 'image' moves both.
            topic = self.resolve_topic_name("image") + "/compressed"
            self.subscriptions_.append(self.create_subscription(
                CompressedImage, topic, lambda msg: self._on_frame("compressed", msg), camera_input_qos()))
        self.active = True
        self.get_logger().info(f"active: subscribed to {self.resolve_topic_name('image')}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_input()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_input()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_input()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _stop_input(self) -> None:
        self.active = False
        for subscription in self.subscriptions_:
            self.destroy_subscription(subscription)
        self.subscriptions_ = []
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def _release(self) -> None:
        for publisher in self.publishers_by_output.values():
            self.destroy_publisher(publisher)
        self.publishers_by_output = {}
        if self.class_info_publisher is not None:
            self.destroy_publisher(self.class_info_publisher)
            self.class_info_publisher = None
        self.predictor = None

    # Frames -----------------------------------------------------------------------------------------------

    def _on_frame(self, kind: str, msg) -> None:
        """Executor thread: count, rate-limit, hand the newest frame to the worker. Never blocks."""
        now = time.monotonic()
        self.stats.record_received(now)
        max_rate = self.values["max_rate"]
        if max_rate > 0 and now - self._last_accepted < 1.0 / max_rate:
            self.rate_limited += 1
            return
        self._last_accepted = now
        worker = self.worker
        if worker is not None:
            worker.submit((kind, msg))

    def wanted_outputs(self) -> set[str]:
        """Outputs enabled in 'publish' that someone subscribes to: the others are not computed."""
        enabled = set(self.values["publish"])
        return {name for name, publisher in self.publishers_by_output.items()
                if name in enabled and publisher.get_subscription_count() > 0}

    def _fail(self, kind: str, message: str) -> None:
        self.stats.record_failure(time.monotonic(), kind, message)
        self.get_logger().warning(f"frame dropped ({kind}): {message}", throttle_duration_sec=LOG_THROTTLE_S)

    def _on_worker_error(self, item, exc: BaseException) -> None:
        self._fail("internal", f"{type(exc).__name__}: {exc}")

    def _process(self, item: tuple[str, object]) -> None:
        """Worker thread: one frame through conversion, the model and every wanted output."""
        kind, msg = item
        predictor = self.predictor
        if predictor is None:
            return
        wanted = self.wanted_outputs()
        self.idle = not wanted
        if not wanted:
            return
        try:
            max_pixels = self.values["max_pixels"]
            rgb = image_to_rgb(msg, max_pixels) if kind == "raw" else compressed_to_rgb(msg, max_pixels)
        except ImageConversionError as exc:
            self._fail(exc.kind, str(exc))
            return
        self.request_open_set(wanted)
        started = time.perf_counter()
        try:
            prediction = predictor(rgb)
        except Exception as exc:  # the model failing on one frame must not end the node
            self._fail(diagnostics.MODEL_FAILURE, f"{type(exc).__name__}: {exc}")
            return
        inference_s = time.perf_counter() - started
        self.publish_outputs(self.render_outputs(msg.header, rgb, prediction, wanted))
        latency = (self.get_clock().now() - Time.from_msg(msg.header.stamp)).nanoseconds * 1e-9
        self.stats.record_processed(time.monotonic(), latency, inference_s)

    def request_open_set(self, wanted: set[str]) -> None:
        """Ask the predictor for exactly the open-set outputs someone receives (``m2a_core.openset``, on the
        model's device): labels with the current threshold, unknown instances with the current limits.

        The predictor is used by the worker thread only, so its options can change between frames.
        """
        from m2a_core.openset import PanopticParams

        predictor = self.predictor
        options = dataclasses.replace(
            predictor.options,
            openset_threshold=self.values["threshold"] if wanted & LABEL_OUTPUTS else None,
            openset_score=self.openset_score,
            panoptic=bool(wanted & INSTANCE_OUTPUTS),
            panoptic_params=PanopticParams(min_component_area=self.values["min_instance_area"],
                                           max_components=self.values["max_instances"]),
            panoptic_resolution=self.values["panoptic_resolution"])
        if options != predictor.options:
            predictor.options = options

    def render_outputs(self, header, rgb: np.ndarray, prediction, wanted: set[str]) -> dict[str, object]:
        """Every wanted output of one frame as a message, each with the input header unchanged."""
        from m2a_core.visualize import colorize_labels, colorize_scores

        settings = self.render_settings()
        labels = prediction.labels
        instances = unknown_segments(prediction.segments or [])
        messages: dict[str, object] = {}
        if "anomaly" in wanted:
            messages["anomaly"] = array_to_image(prediction.anomaly.astype(np.float32), "32FC1", header)
        heat = None
        if wanted & {"anomaly_color", "overlay"}:  # one colour map for both
            heat = colorize_scores(prediction.anomaly, settings.score_min, settings.score_max, settings.colormap)
        if "anomaly_color" in wanted:
            messages["anomaly_color"] = array_to_image(heat, "rgb8", header)
        if "labels" in wanted:
            messages["labels"] = array_to_image(labels, "mono8", header)
        if "labels_color" in wanted:
            messages["labels_color"] = array_to_image(colorize_labels(labels, self.predictor.class_set), "rgb8",
                                                      header)
        if "overlay" in wanted:
            messages["overlay"] = array_to_image(
                render_overlay(rgb, heat, prediction.instances, instances, settings), "rgb8", header)
        if "unknown_instances" in wanted:
            messages["unknown_instances"] = marker_array(header, instances, settings)
        if "detections" in wanted:
            messages["detections"] = detection_array(header, instances)
        return messages

    def publish_outputs(self, messages: dict[str, object]) -> None:
        for name, message in messages.items():
            self.publishers_by_output[name].publish(message)

    # Diagnostics ------------------------------------------------------------------------------------------

    def publish_diagnostics(self) -> None:
        limits = diagnostics.HealthLimits(latency_warn_s=self.values["latency_warn_ms"] / 1e3)
        worker = self.worker
        snapshot = self.stats.snapshot(time.monotonic(), limits.window_s, worker.skipped if worker else 0)
        level, message = diagnostics.assess(snapshot, limits, self.active, self.idle)
        predictor = self.predictor
        info = {
            "state": "active" if self.active else ("configured" if predictor is not None else "unconfigured"),
            "backend": self.values["backend"],
            "device": self.values["device"],
            "precision": self.values["precision"],
            "model": os.path.basename(self.values["weights"]),
            "classes": predictor.class_set.name if predictor is not None else "n/a",
            "threshold": f"{self.values['threshold']:.4f}",
            "frames dropped (max_rate)": str(self.rate_limited),
        }
        self.diagnostics_publisher.publish(diagnostics.diagnostic_array(
            self.get_clock().now().to_msg(), f"{self.get_fully_qualified_name()}: anomaly",
            f"{self.values['backend']}/{self.values['device']}", snapshot, info, level, message))


def main(args: list[str] | None = None) -> int:
    """Console script ``m2a_anomaly_node``: exit status 1 when the node cannot start."""
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=args)
    node = AnomalyNode()
    status = 0
    try:
        if node.values["autostart"]:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                status = 1
            elif node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("cannot activate")
                status = 1
        if status == 0:
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._stop_input()
        node.destroy_node()
        rclpy.try_shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
