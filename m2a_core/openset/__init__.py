"""Open-set outputs of Mask2Anomaly (paper Sec. 5 and 6): semantic labels with an "unknown" class,
panoptic segments with unknown instances, and the threshold calibration both rely on.

Everything here takes torch tensors on the model's device and does not depend on the predictor, so the
ROS node, the CLI, the bag tools and evaluation share one implementation.
"""
from m2a_core.openset.calibration import Calibration, load_calibration, save_calibration
from m2a_core.openset.panoptic import PanopticParams, PanopticResult, openset_panoptic, panoptic_from_outputs
from m2a_core.openset.semantic import openset_semantic

__all__ = [
    "Calibration", "PanopticParams", "PanopticResult", "load_calibration", "openset_panoptic", "openset_semantic",
    "panoptic_from_outputs", "save_calibration",
]
