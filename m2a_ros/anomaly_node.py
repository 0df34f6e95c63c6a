"""``m2a_anomaly``: camera frames in; anomaly heatmap, open-set labels, unknown instances and diagnostics out.

A managed (lifecycle) node. ``configure`` validates the parameters and loads the model (a supervisor can do
this before driving), ``activate`` subscribes to the camera, ``deactivate`` unsubscribes, ``cleanup``
releases the model. With ``autostart`` (the default) the node configures and activates itself at start,
and a configure failure (missing weights, unusable backend, bad parameters) is one log line and exit
status 1.

The node only wires topics to library calls: ``m2a_ros.conversions`` (messages <-> numpy),
``m2a_ros.node_predictor`` (the ``m2a_core`` predictor its parameters describe, and the per-call open-set
request: ``m2a_core.openset`` labels and unknown instances only for outputs someone receives),
``m2a_ros.outputs`` (output topics; pictures, markers, detections of one frame). Inference runs on a
``LatestFrameWorker`` thread: the executor never blocks, the newest frame is always the next one processed, and
frames replaced while the model is busy are counted as skipped, never queued.
"""
from __future__ import annotations

import os
import sys
import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter as RosParameter
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from m2a_ros import diagnostics
from m2a_ros.conversions import ImageConversionError, compressed_to_rgb, image_to_rgb
from m2a_ros.latest_frame_worker import LatestFrameWorker
from m2a_ros.node_predictor import StartupError, load_calibration, load_predictor, openset_request
from m2a_ros.outputs import (
    CLASS_INFO_TOPIC,
    OUTPUT_TOPICS,
    RenderSettings,
    available_outputs,
    class_info_json,
    frame_messages,
    message_class,
)
from m2a_ros.parameters import DEFAULTS, PARAMETERS, RUNTIME, validate
from m2a_ros.qos import camera_input_qos, diagnostics_qos, latched_qos, output_qos

NODE_NAME = "m2a_anomaly"
LOG_THROTTLE_S = 5.0


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
        return RenderSettings.from_values(self.values)

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
                self._apply_calibration()
        except StartupError as exc:
            self.predictor = None
            self.get_logger().fatal(f"cannot configure: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.publishers_by_output = {
            name: self.create_publisher(message_class(OUTPUT_TOPICS[name].msgtype), f"~/{OUTPUT_TOPICS[name].topic}",
                                        output_qos())
            for name in available_outputs()}
        self.class_info_publisher = self.create_publisher(String, f"~/{CLASS_INFO_TOPIC.topic}", latched_qos())
        self.class_info_publisher.publish(String(data=class_info_json(self.predictor.class_set)))
        self.get_logger().info(
            f"configured: {self.values['weights']} on {self.values['backend']}/{self.values['device']}, "
            f"classes {self.predictor.class_set.name}, threshold {self.values['threshold']}")
        return TransitionCallbackReturn.SUCCESS

    def _apply_calibration(self) -> None:
        """Threshold and score map from the 'calibration_file', checked against the weights and classes."""
        calibration = load_calibration(self.values, self.predictor)
        if calibration.mismatched:
            self.get_logger().warning(f"the calibration was made with other {', '.join(calibration.mismatched)} "
                                      "than this node uses: its threshold may not give the calibrated "
                                      "true-positive rate")
        self.openset_score = calibration.score
        self.values["threshold"] = calibration.threshold
        self.set_parameters([RosParameter("threshold", value=calibration.threshold)])

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
        started = time.perf_counter()
        try:
            prediction = predictor(rgb, **self.openset_request(wanted))
        except Exception as exc:  # the model failing on one frame must not end the node
            self._fail(diagnostics.MODEL_FAILURE, f"{type(exc).__name__}: {exc}")
            return
        inference_s = time.perf_counter() - started
        messages = frame_messages(msg.header, rgb, prediction, wanted, self.render_settings(), predictor.class_set)
        self.publish_outputs(messages)
        latency = (self.get_clock().now() - Time.from_msg(msg.header.stamp)).nanoseconds * 1e-9
        self.stats.record_processed(time.monotonic(), latency, inference_s)

    def openset_request(self, wanted: set[str]) -> dict:
        """Per-call predictor options for exactly the open-set outputs someone receives (current parameters)."""
        return openset_request(self.values, wanted, self.openset_score)

    def publish_outputs(self, messages: dict[str, object], seconds: dict[str, float] | None = None) -> None:
        """Publish every message on its output; with ``seconds``, each publish call's duration is stored there
        (``m2a bench node``). One thread: rclpy's publish holds the GIL, threads made it slower."""
        for name, message in messages.items():
            started = time.perf_counter()
            self.publishers_by_output[name].publish(message)
            if seconds is not None:
                seconds[name] = time.perf_counter() - started

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

    from m2a_ros.memory import keep_freed_memory

    keep_freed_memory()  # per-frame arrays reuse freed pages (m2a_ros.memory: ~3x faster rendering)
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
