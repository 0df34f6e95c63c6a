"""What the node publishes for one frame, built from the frame and the library's results (no ROS node state).

``OUTPUT_TOPICS`` names every output (topic under the node's name, message type, image encoding);
``frame_messages`` builds the messages of one frame (the pictures rendered in parallel row bands, straight into
the messages' buffers). Pictures come from ``m2a_core.visualize``; this module
adds only what is specific to the node's outputs: unknown-instance contours and boxes on the overlay, RViz
markers and vision_msgs detections. The node (``m2a_ros.anomaly_node``), the bag tools
(``m2a_ros.bags.pipeline``) and ``m2a_ros.bench_node`` all call these functions, so a bag's result topics are
what the node publishes and the benchmark measures the node's code.
"""
from __future__ import annotations

import json
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from m2a_core.classes import IGNORE_ID, UNKNOWN_ID, ClassSet
from m2a_core.errors import M2AError
from m2a_core.visualize import blend, colorize_labels, colorize_scores, is_tensor
from m2a_ros.bands import submit_bands


@dataclass(frozen=True)
class OutputTopic:
    topic: str                # under the node's name: the node publishes '~/<topic>'
    msgtype: str              # ROS message type, 'package/msg/Name'
    encoding: str | None      # sensor_msgs/Image encoding; None for other messages


OUTPUT_TOPICS: dict[str, OutputTopic] = {
    "anomaly": OutputTopic("anomaly", "sensor_msgs/msg/Image", "32FC1"),
    "anomaly_color": OutputTopic("anomaly/color", "sensor_msgs/msg/Image", "rgb8"),
    "labels": OutputTopic("labels", "sensor_msgs/msg/Image", "mono8"),
    "labels_color": OutputTopic("labels/color", "sensor_msgs/msg/Image", "rgb8"),
    "overlay": OutputTopic("overlay", "sensor_msgs/msg/Image", "rgb8"),
    "unknown_instances": OutputTopic("unknown_instances", "visualization_msgs/msg/MarkerArray", None),
    "detections": OutputTopic("detections", "vision_msgs/msg/Detection2DArray", None),
}
CLASS_INFO_TOPIC = OutputTopic("class_info", "std_msgs/msg/String", None)   # latched, once per configure


def message_class(msgtype: str):
    """rclpy class of 'package/msg/Name'; ``M2AError`` where that package is not installed."""
    import importlib

    package, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        raise M2AError(f"message type {msgtype} is not available to rclpy here (source its ROS package)") from None


def available_outputs() -> list[str]:
    """Outputs whose message type is installed: all but ``detections`` where vision_msgs is missing."""
    available = []
    for name, output in OUTPUT_TOPICS.items():
        try:
            message_class(output.msgtype)
        except M2AError:
            continue
        available.append(name)
    return available


INSTANCE_COLOR = (0, 255, 255)    # cyan: unknown-instance contours and boxes (not in the class palette)


@dataclass(frozen=True)
class RenderSettings:
    colormap: str = "inferno"
    score_min: float = 0.0
    score_max: float = 1.0
    overlay_alpha: float = 0.5
    marker_scale: float = 0.001
    marker_depth: float = 1.0

    @classmethod
    def from_values(cls, values: dict) -> RenderSettings:
        """The settings in the node's parameter values (``m2a_ros.parameters``)."""
        return cls(colormap=values["colormap"], score_min=values["score_min"], score_max=values["score_max"],
                   overlay_alpha=values["overlay_alpha"], marker_scale=values["marker_scale"],
                   marker_depth=values["marker_depth"])


def unknown_segments(segments: list[dict]) -> list[dict]:
    return [s for s in segments if s.get("unknown")]


def instance_contour(id_map: np.ndarray, segment_id: int, bbox: list[int]) -> tuple[tuple[slice, slice], np.ndarray]:
    """(window, bool mask in it): pixels of one segment that touch another id or the image border (4-neighbours).

    Works inside the segment's box plus a one-pixel margin, so small instances cost little on large frames.
    """
    height, width = id_map.shape
    x, y, w, h = bbox
    y0, y1, x0, x1 = max(y - 1, 0), min(y + h + 1, height), max(x - 1, 0), min(x + w + 1, width)
    window = id_map[y0:y1, x0:x1]
    edge = np.zeros(window.shape, bool)
    edge[1:, :] |= window[1:, :] != window[:-1, :]
    edge[:-1, :] |= window[:-1, :] != window[1:, :]
    edge[:, 1:] |= window[:, 1:] != window[:, :-1]
    edge[:, :-1] |= window[:, :-1] != window[:, 1:]
    # The window's own border is the image border only where the margin was cut off.
    if y0 == 0:
        edge[0, :] = True
    if y1 == height:
        edge[-1, :] = True
    if x0 == 0:
        edge[:, 0] = True
    if x1 == width:
        edge[:, -1] = True
    return (slice(y0, y1), slice(x0, x1)), edge & (window == segment_id)


def draw_box(image: np.ndarray, bbox: list[int], color: tuple[int, int, int], thickness: int = 2) -> None:
    """Draw a COCO box [x, y, w, h] (pixels, inclusive of its first and last row and column) in place."""
    height, width = image.shape[:2]
    x0, y0, w, h = bbox
    x1, y1 = min(x0 + w - 1, width - 1), min(y0 + h - 1, height - 1)
    t = max(1, thickness)
    image[y0:min(y0 + t, y1 + 1), x0:x1 + 1] = color
    image[max(y1 - t + 1, y0):y1 + 1, x0:x1 + 1] = color
    image[y0:y1 + 1, x0:min(x0 + t, x1 + 1)] = color
    image[y0:y1 + 1, max(x1 - t + 1, x0):x1 + 1] = color


def draw_instances(image: np.ndarray, id_map: np.ndarray | None, instances: list[dict]) -> None:
    """The unknown instances' contours and boxes, drawn in place (a handful of sparse pixels)."""
    if id_map is None or not instances:
        return
    for segment in instances:
        window, contour = instance_contour(id_map, segment["id"], segment["bbox"])
        image[window][contour] = INSTANCE_COLOR
    for segment in instances:
        draw_box(image, segment["bbox"], INSTANCE_COLOR)


def _into(pixels: np.ndarray, tensor) -> None:
    """Copy a tensor (any device) into a message's pixels: the one device-to-host copy of a picture."""
    import torch

    torch.from_numpy(pixels).copy_(tensor)


def _host(values):
    return values.cpu().numpy() if is_tensor(values) else values


def _render_on_device(rgb: np.ndarray, prediction, settings: RenderSettings, class_set: ClassSet,
                      pictures: dict[str, np.ndarray]) -> None:
    """The pictures from a prediction whose maps are torch tensors (the model's device): coloured and blended
    there, each copied back once into its message."""
    heat = None
    if "anomaly_color" in pictures or "overlay" in pictures:
        heat = colorize_scores(prediction.anomaly, settings.score_min, settings.score_max, settings.colormap)
    if "anomaly_color" in pictures:
        _into(pictures["anomaly_color"], heat)
    if "overlay" in pictures:
        import torch

        frame = torch.from_numpy(np.ascontiguousarray(rgb)).to(heat.device)
        _into(pictures["overlay"], blend(frame, heat, settings.overlay_alpha))
    if "labels_color" in pictures:
        _into(pictures["labels_color"], colorize_labels(prediction.labels, class_set))


def frame_messages(header, rgb: np.ndarray, prediction, wanted: set[str] | frozenset[str],
                   settings: RenderSettings, class_set: ClassSet) -> dict[str, object]:
    """Every wanted output of one frame as a ROS message, each with ``header`` unchanged.

    ``prediction`` is the predictor's result for ``rgb``, with the open-set outputs the wanted ones need
    (``m2a_ros.node_predictor.openset_request``). The pictures are rendered straight into their messages'
    buffers, band by band of rows in parallel (``m2a_ros.bands``); a band's heatmap colours are computed once, for
    both ``anomaly_color`` and ``overlay``, and only when one of them is wanted. Where the prediction's maps are
    torch tensors (kept on the model's GPU), the pictures are made on that device instead and copied back once.
    """
    from m2a_ros.conversions import image_message

    instances = unknown_segments(prediction.segments or [])
    messages: dict[str, object] = {}
    height, width = tuple(prediction.anomaly.shape)
    pictures: dict[str, np.ndarray] = {}
    for name in wanted & {"anomaly_color", "labels_color", "overlay"}:
        messages[name], pictures[name] = image_message(header, OUTPUT_TOPICS[name].encoding, height, width)
    on_device = is_tensor(prediction.anomaly)
    heat = pictures.get("anomaly_color")
    if heat is None and "overlay" in pictures and not on_device:
        heat = np.empty((height, width, 3), np.uint8)   # the overlay's heatmap, not published itself

    def render(rows: slice) -> None:
        if heat is not None:
            colorize_scores(prediction.anomaly[rows], settings.score_min, settings.score_max, settings.colormap,
                            out=heat[rows])
        if "overlay" in pictures:
            blend(rgb[rows], heat[rows], settings.overlay_alpha, out=pictures["overlay"][rows])
        if "labels_color" in pictures:
            colorize_labels(prediction.labels[rows], class_set, out=pictures["labels_color"][rows])

    bands: list[Future] = []
    if on_device:
        _render_on_device(rgb, prediction, settings, class_set, pictures)
    elif pictures:
        bands = submit_bands(render, height)
    # The raw outputs are copies: made here while the bands render.
    for name, values in (("anomaly", prediction.anomaly), ("labels", prediction.labels)):
        if name in wanted:
            messages[name], pixels = image_message(header, OUTPUT_TOPICS[name].encoding, height, width)
            if is_tensor(values):
                _into(pixels, values)
            else:
                np.copyto(pixels, values, casting="same_kind")
    if "unknown_instances" in wanted:
        messages["unknown_instances"] = marker_array(header, instances, settings)
    if "detections" in wanted:
        messages["detections"] = detection_array(header, instances)
    for band in bands:
        band.result()   # re-raises a band's error here
    if "overlay" in pictures:
        draw_instances(pictures["overlay"], _host(prediction.instances), instances)
    return {name: messages[name] for name in OUTPUT_TOPICS if name in messages}   # a stable publishing order


def class_info_json(class_set: ClassSet) -> str:
    """Class names and colours of the label image, published once (transient local) on ~/class_info."""
    return json.dumps({
        "class_set": class_set.name,
        "names": list(class_set.names),
        "colors": [list(c) for c in class_set.colors],
        "thing_ids": sorted(class_set.thing_ids),
        "unknown_id": UNKNOWN_ID,
        "ignore_id": IGNORE_ID,
    })


def marker_array(header, instances: list[dict], settings: RenderSettings):
    """DELETEALL, then one LINE_STRIP box per unknown instance drawn in the camera (optical) frame.

    The node has no depth, so the box is the pixel box on a plane ``marker_depth`` metres in front of the
    camera, ``marker_scale`` metres per pixel (x right, y down, as in an optical frame): RViz shows where in
    the image the instance is, not its 3D position.
    """
    from geometry_msgs.msg import Point
    from visualization_msgs.msg import Marker, MarkerArray

    clear = Marker()
    clear.header = header
    clear.action = Marker.DELETEALL
    markers = [clear]
    for segment in instances:
        x, y, w, h = segment["bbox"]
        s, z = settings.marker_scale, settings.marker_depth
        corners = [(x, y), (x + w, y), (x + w, y + h), (x, y + h), (x, y)]
        marker = Marker()
        marker.header = header
        marker.ns = "unknown_instances"
        marker.id = int(segment["id"])
        marker.type = Marker.LINE_STRIP
        marker.action = Marker.ADD
        marker.pose.orientation.w = 1.0
        marker.scale.x = 2.0 * s
        marker.color.r, marker.color.g, marker.color.b, marker.color.a = 0.0, 1.0, 1.0, 1.0
        marker.points = [Point(x=float(u * s), y=float(v * s), z=float(z)) for u, v in corners]
        marker.text = f"unknown {segment['score']:.2f} ({segment['area']} px)"
        markers.append(marker)
    array = MarkerArray()
    array.markers = markers
    return array


def detection_array(header, instances: list[dict]):
    """vision_msgs/Detection2DArray (vision_msgs >= 4, Humble on), or None where vision_msgs is absent."""
    try:
        from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose
    except ImportError:
        return None
    array = Detection2DArray()
    array.header = header
    for segment in instances:
        x, y, w, h = segment["bbox"]
        detection = Detection2D()
        detection.header = header
        detection.id = str(segment["id"])
        detection.bbox.center.position.x = x + w / 2.0
        detection.bbox.center.position.y = y + h / 2.0
        detection.bbox.size_x, detection.bbox.size_y = float(w), float(h)
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = "unknown"
        hypothesis.hypothesis.score = float(segment["score"])
        detection.results = [hypothesis]
        array.detections.append(detection)
    return array
