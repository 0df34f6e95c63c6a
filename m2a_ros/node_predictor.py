"""The node's parameters -> the library predictor, and what each frame asks of it (no ROS node state).

``load_predictor`` builds the ``m2a_core`` predictor the parameters describe, ``load_calibration`` reads the
threshold and score map of an 'm2a calibrate' file, and ``openset_request`` gives the per-call predictor
options for the outputs someone receives. The node and the bag tools (``m2a_ros.bags.pipeline``) both call
these, so a bag evaluation runs exactly the model the node would.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

LABEL_OUTPUTS = frozenset({"labels", "labels_color"})
INSTANCE_OUTPUTS = frozenset({"overlay", "unknown_instances", "detections"})  # need the unknown instances
# Inference options a calibration's threshold depends on: another value may move its true-positive rate.
CALIBRATED_OPTIONS = ("short_side", "max_size", "resize", "tta", "refine")


class StartupError(Exception):
    """The node cannot run with this configuration; the message says why."""


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
    backend = values["backend"]
    options = {
        "tta": values["tta"], "refine": values["refine"],
        "short_side": values["short_side"] or None, "max_size": values["max_size"] or None,
        "backend": backend, "precision": values["precision"],
    }
    try:
        return Predictor.from_weights(weights, device=device, **options)
    except M2AError as exc:
        raise StartupError(str(exc)) from None
    except ImportError as exc:
        raise StartupError(f"backend {backend!r} is not usable here: {exc}") from None
    except (RuntimeError, ValueError, OSError) as exc:
        raise StartupError(f"cannot load {weights} with backend {backend!r} on {device}: {exc}") from None


@dataclass(frozen=True)
class NodeCalibration:
    threshold: float           # replaces the 'threshold' parameter
    score: str                 # the score map the threshold applies to: anomaly or anomaly_no_refine
    mismatched: list[str]      # inference options the calibration was made with other values of


def load_calibration(values: dict, predictor) -> NodeCalibration:
    """The 'calibration_file' parameter ('auto': the file beside the weights) checked against the weights and
    the predictor's class set; ``StartupError`` with the reason otherwise."""
    from m2a_core.errors import M2AError
    from m2a_core.openset.calibration import calibration_for_weights

    path = str(values["calibration_file"])
    try:
        calibration = calibration_for_weights(str(values["weights"]), predictor.class_set.name,
                                              None if path == "auto" else path)
    except M2AError as exc:
        raise StartupError(str(exc)) from None
    current = predictor.options
    mismatched = sorted(k for k, v in calibration.predictor_options.items()
                        if k in CALIBRATED_OPTIONS and v != getattr(current, k))
    return NodeCalibration(float(calibration.threshold), calibration.score, mismatched)


def openset_request(values: dict, wanted: set[str] | frozenset[str], openset_score: str = "anomaly") -> dict:
    """Predictor options for one call (``predictor(rgb, **request)``): exactly the open-set outputs the
    ``wanted`` outputs need (labels with the current threshold, unknown instances with the current limits),
    nothing for the others."""
    from m2a_core.openset import PanopticParams

    return {
        "openset_threshold": values["threshold"] if wanted & LABEL_OUTPUTS else None,
        "openset_score": openset_score,
        "panoptic": bool(wanted & INSTANCE_OUTPUTS),
        "panoptic_params": PanopticParams(min_component_area=values["min_instance_area"],
                                          max_components=values["max_instances"],
                                          unknown_source=values["instance_source"],
                                          anomaly_threshold=values["threshold"],
                                          opening_size=values["instance_opening"]),
        "panoptic_resolution": values["panoptic_resolution"],
    }
