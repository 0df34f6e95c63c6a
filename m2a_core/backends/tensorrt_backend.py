"""TensorRT backend (TensorRT 10+ Python API): engine build, cache, validation and execution.

Engines are specific to the ONNX graph, the TensorRT version, the GPU (name and compute capability), the
precision and the input shape. ``EngineKey`` holds exactly those; ``EngineCache`` stores one engine per key
in a directory (``<digest>.engine`` plus ``<digest>.json`` recording the key and the engine's sha256, both
written atomically), validates both files on load and rebuilds, with a log line saying why, when anything is
missing, corrupt or does not match. The cache logic needs no GPU and is tested everywhere; building and
running an engine needs ``tensorrt`` and CUDA (``test/test_tensorrt.py`` marks those tests ``gpu``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from m2a_core.checkpoint import atomic_write, sha256_file
from m2a_core.errors import M2AError
from m2a_core.export import INPUT_NAME, OUTPUT_NAMES, read_onnx_config

LOG = logging.getLogger("m2a.tensorrt")
ENGINE_PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_CACHE = Path(os.environ.get("M2A_ENGINE_CACHE", Path.home() / ".cache" / "m2a" / "engines"))


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    input_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.precision not in ENGINE_PRECISIONS:
            raise M2AError(f"TensorRT precision must be one of {ENGINE_PRECISIONS}, got {self.precision!r}")

    def to_dict(self) -> dict:
        return {**asdict(self), "input_shape": list(self.input_shape)}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:24]


class EngineCache:
    """One serialized engine per ``EngineKey`` in ``directory``; never hands out a file it cannot vouch for."""

    def __init__(self, directory: str | os.PathLike = DEFAULT_CACHE) -> None:
        self.directory = Path(directory)

    def engine_path(self, key: EngineKey) -> Path:
        return self.directory / f"{key.digest()}.engine"

    def meta_path(self, key: EngineKey) -> Path:
        return self.directory / f"{key.digest()}.json"

    def check(self, key: EngineKey) -> str | None:
        """None when a valid engine for ``key`` is cached, else the reason it cannot be used."""
        engine, meta = self.engine_path(key), self.meta_path(key)
        if not engine.is_file() or not meta.is_file():
            return f"no cached engine for this key in {self.directory}"
        try:
            record = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            return f"cache record {meta.name} is unreadable ({exc})"
        if record.get("key") != key.to_dict():
            changed = sorted(k for k, v in key.to_dict().items() if record.get("key", {}).get(k) != v)
            return f"cache record {meta.name} was made for a different {', '.join(changed) or 'key'}"
        if record.get("engine_sha256") != sha256_file(engine):
            return f"engine file {engine.name} does not match its record (truncated or corrupt)"
        return None

    def load(self, key: EngineKey) -> bytes | None:
        reason = self.check(key)
        if reason is not None:
            LOG.info("TensorRT engine cache miss: %s", reason)
            return None
        return self.engine_path(key).read_bytes()

    def store(self, key: EngineKey, engine: bytes) -> Path:
        """Write the engine, then its record: a crash between the two leaves a miss, never a bad hit."""
        path = self.engine_path(key)
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(engine))
        record = {"key": key.to_dict(), "engine_sha256": hashlib.sha256(engine).hexdigest(), "bytes": len(engine)}
        atomic_write(self.meta_path(key), lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1)))
        return path

    def get_or_build(self, key: EngineKey, build: Callable[[], bytes]) -> tuple[bytes, bool]:
        """(engine bytes, whether it was built now). A rebuild is logged with its reason."""
        engine = self.load(key)
        if engine is not None:
            return engine, False
        LOG.warning("building TensorRT engine (%s, %s, input %s) for %s: %s", key.precision, key.gpu_name,
                    "x".join(map(str, key.input_shape)), self.directory, self.check(key))
        engine = build()
        if not engine:
            raise M2AError("TensorRT returned an empty engine")
        self.store(key, engine)
        return engine, True


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise M2AError("the tensorrt backend needs NVIDIA TensorRT 10+ (pip install tensorrt) and a CUDA GPU; "
                       "use backend torch or onnxruntime on this machine") from None
    if int(trt.__version__.split(".")[0]) < 10:
        raise M2AError(f"TensorRT {trt.__version__} is too old: m2a needs TensorRT 10 or newer")
    return trt


def current_gpu(device: torch.device) -> tuple[str, str]:
    if device.type != "cuda" or not torch.cuda.is_available():
        raise M2AError(f"the tensorrt backend needs a CUDA device, got {device} (CUDA available: "
                       f"{torch.cuda.is_available()})")
    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


def engine_key(onnx_path: str | os.PathLike, device: torch.device, precision: str, batch: int = 1) -> EngineKey:
    trt = import_tensorrt()
    _, size = read_onnx_config(onnx_path)
    if size is None:
        raise M2AError(f"{onnx_path} has no static input size: export it with 'm2a export --height H --width W'")
    gpu_name, capability = current_gpu(device)
    return EngineKey(sha256_file(onnx_path), trt.__version__, gpu_name, capability, precision, (batch, 3, *size))


def build_engine(onnx_path: str | os.PathLike, precision: str, input_shape: tuple[int, ...],
                 calibration_images: list[str] | None = None, workspace_gib: float = 4.0) -> bytes:
    """Parse the ONNX graph and build a serialized engine (GPU needed)."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise M2AError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
        # The official model keeps the deformable pixel decoder in fp32; so do we.
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        for index in range(network.num_layers):
            layer = network.get_layer(index)
            if "pixel_decoder" in layer.name:
                layer.precision = trt.float32
    if precision == "int8":
        if not calibration_images:
            raise M2AError("int8 needs calibration images (--int8-calib LIST)")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _make_calibrator(trt, onnx_path, calibration_images, input_shape)
    profile_shape = tuple(input_shape)
    if any(d < 0 for d in network.get_input(0).shape):
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, profile_shape, profile_shape, profile_shape)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise M2AError(f"TensorRT failed to build an engine for {onnx_path} (see the TensorRT log above)")
    return bytes(serialized)


def _make_calibrator(trt, onnx_path, images: list[str], input_shape: tuple[int, ...]):
    """Entropy calibrator feeding preprocessed calibration images one batch at a time."""
    from m2a_core.imageio import read_rgb
    from m2a_core.preprocess import normalize_and_pad, resize_pil, to_tensor

    config, _ = read_onnx_config(onnx_path)
    height, width = input_shape[2], input_shape[3]

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.paths = list(images)
            self.device_input = torch.empty(input_shape, device="cuda")

        def get_batch_size(self) -> int:
            return input_shape[0]

        def get_batch(self, names):
            if not self.paths:
                return None
            image = resize_pil(read_rgb(self.paths.pop(0)), (height, width))
            batch = normalize_and_pad([to_tensor(image, "cpu")], config.pixel_mean, config.pixel_std)
            self.device_input.copy_(batch.expand(input_shape))
            return [int(self.device_input.data_ptr())]

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, cache) -> None:
            pass  # the engine cache keeps the built engine; the calibration table is not needed again

    return Calibrator()


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, engine: bytes, device: torch.device, onnx_path: str | os.PathLike) -> None:
        trt = import_tensorrt()
        self.config, size = read_onnx_config(onnx_path)
        self.device = device
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(engine)
        if self.engine is None:
            raise M2AError("TensorRT could not deserialize the engine (built by another TensorRT version?)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if sorted(names) != sorted([INPUT_NAME, *OUTPUT_NAMES]):
            raise M2AError(f"engine tensors {names} are not those of an m2a export")
        self.context = self.engine.create_execution_context()
        self.input_shape = tuple(self.engine.get_tensor_shape(INPUT_NAME))
        self.context.set_input_shape(INPUT_NAME, self.input_shape)
        self.outputs = {name: torch.empty(tuple(self.context.get_tensor_shape(name)), device=device)
                        for name in OUTPUT_NAMES}
        self.stream = torch.cuda.Stream(device)
        self.run(torch.zeros(self.input_shape, device=device))  # warm-up before reporting ready

    @classmethod
    def from_onnx(cls, onnx_path: str | os.PathLike, device: str = "cuda", precision: str = "fp16",
                  cache_dir: str | os.PathLike = DEFAULT_CACHE, calibration_images: list[str] | None = None,
                  batch: int = 1) -> TensorRTBackend:
        torch_device = torch.device(device)
        key = engine_key(onnx_path, torch_device, precision, batch)
        engine, _ = EngineCache(cache_dir).get_or_build(
            key, lambda: build_engine(onnx_path, precision, key.input_shape, calibration_images))
        return cls(engine, torch_device, onnx_path)

    def run(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        step = self.input_shape[0]
        if batch.shape[0] != step and batch.shape[0] % step == 0 and tuple(batch.shape[1:]) == self.input_shape[1:]:
            parts = [self._run(batch[i:i + step]) for i in range(0, batch.shape[0], step)]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        return self._run(batch)

    def _run(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(batch.shape) != self.input_shape:
            raise M2AError(f"this TensorRT engine takes inputs of shape {self.input_shape}, got {tuple(batch.shape)}")
        images = batch.to(self.device, torch.float32).contiguous()
        self.context.set_tensor_address(INPUT_NAME, images.data_ptr())
        for name, tensor in self.outputs.items():
            self.context.set_tensor_address(name, tensor.data_ptr())
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise M2AError("TensorRT execution failed")
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return self.outputs["pred_logits"].clone(), self.outputs["pred_masks"].clone()
