"""The node's parameters: names, defaults, descriptions and validation, in one table.

``PARAMETERS`` is the single source for the node's declarations, the README table and ``config/anomaly.yaml``
(a test checks the three agree). ``RUNTIME`` parameters may change while the node runs (through the
parameter callback); the others shape the model and are accepted only while the lifecycle node is
unconfigured (they take effect on the next ``configure``). ``validate`` returns the reason a value is
rejected, or None.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from m2a_core.classes import UNKNOWN_SOURCES
from m2a_ros.outputs import OUTPUT_TOPICS

BACKENDS = ("torch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")  # the backend says which of these it supports
OUTPUTS = tuple(OUTPUT_TOPICS)  # every output the node can publish, in the table's order


@dataclass(frozen=True)
class Parameter:
    name: str
    default: object
    description: str
    runtime: bool = False


PARAMETERS: tuple[Parameter, ...] = (
    Parameter("weights", "", "model weights: .safetensors (torch) or an 'm2a export' .onnx (onnxruntime, tensorrt)"),
    Parameter("backend", "torch", "network backend: torch, onnxruntime or tensorrt"),
    Parameter("device", "cpu", "device: cpu, cuda, cuda:N"),
    Parameter("precision", "fp32", "network precision: fp32, fp16, bf16 (torch) or int8 (tensorrt); an unsupported "
              "one is a configure error"),
    Parameter("short_side", 1024, "inference resolution: short side resized to this (0: the camera's size)"),
    Parameter("max_size", 2048, "inference resolution: long side at most this (0: no limit)"),
    Parameter("tta", False, "average the anomaly score with the horizontally flipped view (2x the network time)"),
    Parameter("refine", True, "apply the paper's refinement mask to the anomaly score"),
    Parameter("threshold", 0.5, "anomaly score at or above which a pixel is labelled unknown (254) in ~/labels",
              runtime=True),
    Parameter("calibration_file", "", "'m2a calibrate' output ('auto': the one beside the weights); when set, its "
              "threshold replaces 'threshold' on configure (a later 'threshold' change overrides it)"),
    Parameter("panoptic_resolution", "mask", "unknown-instance mining at 'mask' (1/4 side, fast) or 'full' "
              "resolution"),
    Parameter("instance_source", "anomaly", "unknown instances from: 'anomaly' (connected components of the "
              "unknown pixels, score >= threshold) or 'background' (the paper's rule, mined from what no known mask "
              "claims)", runtime=True),
    Parameter("min_instance_area", 100, "smallest unknown instance in pixels at the input resolution", runtime=True),
    Parameter("instance_opening", 3, "'anomaly' instances: side of the square opening applied to the unknown pixels "
              "first, so thin boundary lines do not join objects (odd; 1: none)", runtime=True),
    Parameter("max_instances", 3, "most unknown instances per frame (paper: 2-3)", runtime=True),
    Parameter("publish", list(OUTPUTS), "outputs to publish (any of: " + ", ".join(OUTPUTS) + "); an output "
              "nobody subscribes to is not computed either way", runtime=True),
    Parameter("colormap", "inferno", "matplotlib colour map of ~/anomaly/color and ~/overlay", runtime=True),
    Parameter("score_min", 0.0, "anomaly score drawn as the colour map's first colour", runtime=True),
    Parameter("score_max", 1.0, "anomaly score drawn as the colour map's last colour", runtime=True),
    Parameter("overlay_alpha", 0.5, "heatmap opacity in ~/overlay (0..1)", runtime=True),
    Parameter("max_rate", 0.0, "most frames processed per second (0: as fast as the model runs)", runtime=True),
    Parameter("compressed_input", False, "also subscribe to '<image>/compressed' (JPEG or PNG)"),
    Parameter("max_pixels", 4096 * 4096, "frames with more pixels are rejected"),
    Parameter("marker_scale", 0.001, "RViz markers: metres per pixel of the box drawn in the camera frame"),
    Parameter("marker_depth", 1.0, "RViz markers: distance (m) of the image plane the boxes are drawn on"),
    Parameter("latency_warn_ms", 500.0, "diagnostics WARN when latency p95 (now - capture stamp) exceeds this",
              runtime=True),
    Parameter("diagnostics_period", 1.0, "seconds between /diagnostics messages"),
    Parameter("autostart", True, "configure and activate at start; false: wait for a lifecycle manager"),
)
DEFAULTS = {p.name: p.default for p in PARAMETERS}
RUNTIME = frozenset(p.name for p in PARAMETERS if p.runtime)


def _colormap_ok(name: str) -> bool:
    import matplotlib

    return name in matplotlib.colormaps


def validate(name: str, value: object, current: dict[str, object] | None = None) -> str | None:
    """The reason ``value`` is not acceptable for ``name`` (given the other ``current`` values), or None."""
    current = current or DEFAULTS
    if name not in DEFAULTS:
        return f"unknown parameter {name!r}"
    expected = type(DEFAULTS[name])
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is list:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            return f"{name} must be a list of strings"
    elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        return f"{name} must be a {expected.__name__}, got {type(value).__name__} {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} must be finite, got {value}"
    if name == "backend" and value not in BACKENDS:
        return f"backend must be one of {', '.join(BACKENDS)}, got {value!r}"
    if name == "precision" and value not in PRECISIONS:
        return f"precision must be one of {', '.join(PRECISIONS)}, got {value!r}"
    if name == "device" and not (value == "cpu" or value == "cuda" or
                                 (str(value).startswith("cuda:") and str(value)[5:].isdigit())):
        return f"device must be cpu, cuda or cuda:N, got {value!r}"
    if name in ("short_side", "max_size", "min_instance_area", "max_instances") and value < 0:  # type: ignore[operator]
        return f"{name} must be >= 0, got {value}"
    if name in ("max_pixels",) and value < 1:  # type: ignore[operator]
        return f"{name} must be >= 1, got {value}"
    if name == "panoptic_resolution" and value not in ("mask", "full"):
        return f"panoptic_resolution must be 'mask' or 'full', got {value!r}"
    if name == "instance_opening" and (value < 1 or value % 2 == 0):  # type: ignore[operator]
        return f"instance_opening must be an odd number >= 1, got {value}"
    if name == "instance_source" and value not in UNKNOWN_SOURCES:
        return f"instance_source must be one of {', '.join(UNKNOWN_SOURCES)}, got {value!r}"
    if name == "publish":
        unknown = sorted(set(value) - set(OUTPUTS))  # type: ignore[arg-type]
        if unknown:
            return f"publish: unknown outputs {unknown}; choose from {', '.join(OUTPUTS)}"
    if name == "colormap" and not _colormap_ok(str(value)):
        return f"colormap {value!r} is not a matplotlib colour map"
    if name == "score_min" and value >= current["score_max"]:  # type: ignore[operator]
        return f"score_min ({value}) must be below score_max ({current['score_max']})"
    if name == "score_max" and value <= current["score_min"]:  # type: ignore[operator]
        return f"score_max ({value}) must be above score_min ({current['score_min']})"
    if name == "overlay_alpha" and not 0.0 <= value <= 1.0:  # type: ignore[operator]
        return f"overlay_alpha must be in [0, 1], got {value}"
    if name in ("max_rate", "latency_warn_ms") and value < 0:  # type: ignore[operator]
        return f"{name} must be >= 0, got {value}"
    if name in ("marker_scale", "marker_depth", "diagnostics_period") and value <= 0:  # type: ignore[operator]
        return f"{name} must be > 0, got {value}"
    return None


def readme_table() -> str:
    """The README's parameter table (Markdown)."""
    rows = ["| parameter | default | changes at run time | meaning |", "| --- | --- | --- | --- |"]
    for p in PARAMETERS:
        default = ", ".join(p.default) if isinstance(p.default, list) else repr(p.default)
        rows.append(f"| `{p.name}` | `{default}` | {'yes' if p.runtime else 'on configure'} | {p.description} |")
    return "\n".join(rows)
