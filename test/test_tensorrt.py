"""TensorRT engine cache logic (no GPU needed) and the GPU path (runs only where CUDA and TensorRT exist)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from m2a_core.backends.tensorrt_backend import EngineCache, EngineKey, import_tensorrt
from m2a_core.errors import M2AError


def key(**changes) -> EngineKey:
    fields = dict(onnx_sha256="ab" * 32, tensorrt_version="10.3.0", gpu_name="NVIDIA H200", compute_capability="9.0",
                  precision="fp16", input_shape=(1, 3, 1024, 2048))
    fields.update(changes)
    return EngineKey(**fields)


class CountingBuilder:
    """Stands in for TensorRT's builder here: returns engine bytes derived from the key, counts calls."""

    def __init__(self, payload: bytes) -> None:
        self.payload, self.calls = payload, 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.payload


def test_every_key_field_selects_a_different_engine():
    digests = {key().digest()}
    for change in (dict(onnx_sha256="cd" * 32), dict(tensorrt_version="10.4.0"), dict(gpu_name="Orin"),
                   dict(compute_capability="8.7"), dict(precision="fp32"), dict(input_shape=(1, 3, 512, 1024))):
        digests.add(key(**change).digest())
    assert len(digests) == 7
    with pytest.raises(M2AError, match="precision"):
        key(precision="fp8")


def test_build_once_then_reuse(tmp_path):
    cache, builder = EngineCache(tmp_path), CountingBuilder(b"engine-bytes")
    assert cache.get_or_build(key(), builder) == (b"engine-bytes", True)
    assert cache.get_or_build(key(), builder) == (b"engine-bytes", False)
    assert builder.calls == 1
    record = json.loads(cache.meta_path(key()).read_text())
    assert record["engine_sha256"] == hashlib.sha256(b"engine-bytes").hexdigest()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_corrupt_truncated_or_mismatched_entries_are_rebuilt_with_a_reason(tmp_path, caplog):
    cache, builder = EngineCache(tmp_path), CountingBuilder(b"0123456789")
    cache.get_or_build(key(), builder)
    cache.engine_path(key()).write_bytes(b"01234")  # truncated
    assert "truncated or corrupt" in cache.check(key())
    with caplog.at_level(logging.INFO, logger="m2a.tensorrt"):
        assert cache.get_or_build(key(), builder) == (b"0123456789", True)
    assert "truncated or corrupt" in caplog.text and "building TensorRT engine" in caplog.text
    # A record written for another key (e.g. copied between machines) is refused and names the field.
    record = json.loads(cache.meta_path(key()).read_text())
    record["key"]["gpu_name"] = "Orin"
    cache.meta_path(key()).write_text(json.dumps(record))
    assert "gpu_name" in cache.check(key())
    cache.meta_path(key()).write_text("{not json")
    assert "unreadable" in cache.check(key())
    cache.get_or_build(key(), builder)
    assert builder.calls == 3 and cache.check(key()) is None


def test_a_failed_build_leaves_no_entry(tmp_path):
    cache = EngineCache(tmp_path)

    def failing() -> bytes:
        raise M2AError("TensorRT could not parse model.onnx: unsupported node")

    with pytest.raises(M2AError, match="could not parse"):
        cache.get_or_build(key(), failing)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(M2AError, match="empty engine"):
        cache.get_or_build(key(), lambda: b"")
    assert cache.check(key()) is not None


def _has_tensorrt() -> bool:
    try:
        import_tensorrt()
    except M2AError:
        return False
    return torch.cuda.is_available()


def test_without_tensorrt_the_backend_says_what_is_missing(tmp_path):
    if _has_tensorrt():
        pytest.skip("TensorRT is installed here: the missing-TensorRT error cannot occur")
    with pytest.raises(M2AError, match="TensorRT 10"):
        import_tensorrt()
    done = subprocess.run([sys.executable, "-m", "m2a_core", "build-engine", "--onnx", str(tmp_path / "m.onnx")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "TensorRT" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not _has_tensorrt(),
                    reason="needs a CUDA GPU and NVIDIA TensorRT 10+ (not installable on CPU-only machines)")
def test_tensorrt_engine_matches_torch(tmp_path):
    import numpy as np

    from m2a_core.backends.tensorrt_backend import TensorRTBackend
    from m2a_core.export import export_onnx
    from m2a_core.modeling import Mask2Anomaly
    from m2a_core.predictor import Predictor, PredictorOptions, TorchBackend

    from helpers import TINY, random_image

    model = Mask2Anomaly(TINY).eval()
    path = export_onnx(model, tmp_path / "m.onnx", 64, 96)
    options = PredictorOptions(short_side=None)
    trt = Predictor(TensorRTBackend.from_onnx(path, "cuda", precision="fp32", cache_dir=tmp_path / "cache"), options)
    ref = Predictor(TorchBackend(model, "cuda"), options)
    image = random_image(0, 64, 96)
    np.testing.assert_allclose(trt(image).pred_masks, ref(image).pred_masks, atol=1e-3)
