"""ONNX export of the network, checked against the operators TensorRT 10 parses.

The graph takes the normalised, padded image batch ``images`` [B, 3, H, W] and returns ``pred_logits``
[B, Q, K+1] and ``pred_masks`` [B, Q, H/4, W/4]; preprocessing and the paper's inference stay in
``m2a_core`` and are shared by every backend. Shapes are static by default (what TensorRT optimises best);
``dynamic_batch`` leaves the batch axis free. The model config travels in the ONNX metadata so a
``.onnx`` file alone rebuilds a predictor, like our weights files.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from m2a_core.checkpoint import atomic_write
from m2a_core.config import ModelConfig
from m2a_core.errors import CheckpointError, M2AError

INPUT_NAME = "images"
OUTPUT_NAMES = ("pred_logits", "pred_masks")
DEFAULT_OPSET = 17
CONFIG_KEY = "m2a_config"

# ONNX operators the TensorRT 10 ONNX parser supports (onnx-tensorrt docs/operators.md, TensorRT 10.0).
TENSORRT10_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike Ceil
Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND
Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU
HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization
LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow
PRelu QuantizeLinear Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh
Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus
Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze
Upsample Where Xor
""".split())


class _NetworkOutputs(torch.nn.Module):
    """The model with tuple outputs (ONNX graphs have positional outputs)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(images, aux=False)
        return out["pred_logits"], out["pred_masks"]


def padded_input_size(height: int, width: int, divisibility: int = 32) -> tuple[int, int]:
    return -(-height // divisibility) * divisibility, -(-width // divisibility) * divisibility


def export_onnx(model: torch.nn.Module, path: str | os.PathLike, height: int, width: int,
                opset: int = DEFAULT_OPSET, dynamic_batch: bool = False) -> Path:
    """Export ``model`` for a padded network input of ``height`` x ``width`` (rounded up to 32); atomic."""
    import onnx

    if opset < 16:
        raise M2AError(f"opset {opset} is too old: GridSample needs opset 16 or newer")
    config: ModelConfig = model.config
    height, width = padded_input_size(height, width, config.size_divisibility)
    model = model.eval().cpu()
    example = torch.zeros(1, 3, height, width)
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}}
    path = Path(path)

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python ints from shapes: shapes are static
            torch.onnx.export(_NetworkOutputs(model), (example,), tmp, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic_axes,
                              do_constant_folding=True)
        graph = onnx.load(tmp)
        unsupported = sorted({node.op_type for node in graph.graph.node} - TENSORRT10_OPS)
        if unsupported:
            raise M2AError(f"the exported graph uses operators TensorRT 10 does not parse: {unsupported}")
        for key, value in ((CONFIG_KEY, config.to_json()), ("m2a_input_size", f"{height}x{width}")):
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(graph, tmp)

    atomic_write(path, write)
    return path


def read_onnx_config(path: str | os.PathLike) -> tuple[ModelConfig, tuple[int, int] | None]:
    """(model config, static input size or None) from an m2a ONNX file's metadata."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX file {path} does not exist")
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file for the user
        raise CheckpointError(f"{path} is not a readable ONNX model: {exc}") from None
    meta = {p.key: p.value for p in graph.metadata_props}
    if CONFIG_KEY not in meta:
        raise CheckpointError(f"{path} was not exported by 'm2a export' (no model config in its metadata)")
    size = None
    if meta.get("m2a_input_size"):
        h, w = meta["m2a_input_size"].split("x")
        size = (int(h), int(w))
    return ModelConfig.from_json(meta[CONFIG_KEY]), size
