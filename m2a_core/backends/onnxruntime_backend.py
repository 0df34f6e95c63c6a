"""ONNX Runtime backend over an ``m2a export`` graph: CPU, or the CUDA provider when present."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from m2a_core.errors import M2AError
from m2a_core.export import INPUT_NAME, OUTPUT_NAMES, read_onnx_config


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise M2AError("the onnxruntime backend needs the onnxruntime package (pip install onnxruntime)") from None
        self.config, self.input_size = read_onnx_config(path)
        wanted = "CUDAExecutionProvider" if str(device).startswith("cuda") else "CPUExecutionProvider"
        available = ort.get_available_providers()
        if wanted not in available:
            raise M2AError(f"onnxruntime has no {wanted} here (available: {', '.join(available)})")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        providers = [wanted] + (["CPUExecutionProvider"] if wanted != "CPUExecutionProvider" else [])
        self.session = ort.InferenceSession(str(Path(path)), options, providers=providers)
        batch_dim = self.session.get_inputs()[0].shape[0]
        self.static_batch = batch_dim if isinstance(batch_dim, int) else None
        # Results come back as CPU tensors; the predictor's inference then runs there too.
        self.device = torch.device("cpu")

    def run(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = tuple(int(v) for v in batch.shape[-2:])
        if self.input_size is not None and size != self.input_size:
            raise M2AError(
                f"this ONNX model was exported for a {self.input_size[0]}x{self.input_size[1]} padded input, "
                f"got {size[0]}x{size[1]}: export it for that size (m2a export --height/--width) or set the "
                f"predictor's resize options so frames reach the exported size")
        images = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        step = self.static_batch or len(images)  # a static-batch graph runs the batch in pieces
        outputs = [self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: images[i:i + step]})
                   for i in range(0, len(images), step)]
        logits = np.concatenate([o[0] for o in outputs])
        masks = np.concatenate([o[1] for o in outputs])
        return torch.from_numpy(logits), torch.from_numpy(masks)
