"""The Mask2Anomaly network, one concept per module."""
from m2a_core.modeling.mask2anomaly import Mask2Anomaly

__all__ = ["Mask2Anomaly"]
