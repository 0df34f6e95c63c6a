"""m2a_core: Mask2Anomaly in plain PyTorch, with no ROS dependency.

The model (``m2a_core.modeling``), checkpoint conversion (``m2a_core.checkpoint``),
the paper's inference (``m2a_core.inference``) and the predictor that the ROS node,
the bag tools and the CLI all share (``m2a_core.predictor``).
"""

__version__ = "0.1.0"
