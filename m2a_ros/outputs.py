"""What the node publishes for one frame, built from the frame and the library's results (no ROS state).

Pictures come from ``m2a_core.visualize``; this module adds only what is specific to the node's outputs:
unknown-instance contours and boxes on the overlay, RViz markers and vision_msgs detections.
The node and ``m2a_ros.bench_node`` both call these functions, so the benchmark measures the node's code.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from m2a_core.classes import IGNORE_ID, UNKNOWN_ID, ClassSet
from m2a_core.visualize import blend

INSTANCE_COLOR = (0, 255, 255)    # cyan: unknown-instance contours and boxes (not in the class palette)


@dataclass(frozen=True)
class RenderSettings:
    colormap: str = "inferno"
    score_min: float = 0.0
    score_max: float = 1.0
    overlay_alpha: float = 0.5
    marker_scale: float = 0.001
    marker_depth: float = 1.0


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


def render_overlay(rgb: np.ndarray, heat: np.ndarray, id_map: np.ndarray | None, instances: list[dict],
                   settings: RenderSettings) -> np.ndarray:
    """Camera image blended with the heatmap colours ``heat`` (as ``anomaly_overlay``), with the unknown
    instances' contours and boxes."""
    out = blend(rgb, heat, settings.overlay_alpha)
    if id_map is not None and instances:
        for segment in instances:
            window, contour = instance_contour(id_map, segment["id"], segment["bbox"])
            out[window][contour] = INSTANCE_COLOR
        for segment in instances:
            draw_box(out, segment["bbox"], INSTANCE_COLOR)
    return out


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
