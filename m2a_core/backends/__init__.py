"""Network backends behind the one predictor interface: ``run(batch) -> (pred_logits, pred_masks)``.

``torch`` (CPU/CUDA, ``m2a_core.backends.torch_backend``), ``onnxruntime`` and ``tensorrt`` take the same
normalised padded batch and return the same tensors, so preprocessing and the paper's inference are shared.
"""
from __future__ import annotations

from pathlib import Path

from m2a_core.errors import M2AError

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def make_backend(name: str, weights: str | Path, device: str = "cpu", precision: str = "fp32", **options):
    """Build a backend by name. torch reads .safetensors; onnxruntime and tensorrt read an .onnx export."""
    if name == "torch":
        from m2a_core.backends.torch_backend import TorchBackend

        return TorchBackend.from_weights(weights, device, precision=precision, **options)
    if name == "onnxruntime":
        from m2a_core.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(weights, device)
    if name == "tensorrt":
        from m2a_core.backends.tensorrt_backend import TensorRTBackend

        return TensorRTBackend.from_onnx(weights, device, precision=precision, **options)
    raise M2AError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
