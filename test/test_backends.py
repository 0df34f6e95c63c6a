"""The torch backend's fast-path options on CPU, and backend selection errors."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from m2a_core.backends import make_backend
from m2a_core.backends.torch_backend import TorchBackend
from m2a_core.errors import M2AError
from m2a_core.predictor import Predictor, PredictorOptions

from helpers import TINY, make_model, random_image


@pytest.fixture(scope="module")
def model():
    return make_model(TINY, 2, force_class=8)


def run(backend, image):
    return Predictor(backend, PredictorOptions(short_side=None))(image)


def test_channels_last_gives_the_same_result(model):
    image = random_image(0, 64, 96)
    a = run(TorchBackend(model), image)
    b = run(TorchBackend(model, channels_last=True), image)
    np.testing.assert_allclose(a.pred_masks, b.pred_masks, atol=1e-4)


def test_bf16_autocast_keeps_the_pixel_decoder_in_fp32(model):
    image = random_image(1, 64, 96)
    seen = {}
    hook = model.pixel_decoder.register_forward_hook(
        lambda module, args, out: seen.update(dtype=out[0].dtype))
    try:
        low = run(TorchBackend(model, precision="bf16"), image)
    finally:
        hook.remove()
    assert seen["dtype"] == torch.float32
    full = run(TorchBackend(model), image)
    assert low.pred_masks.dtype == np.float32
    # bf16 keeps 8 mantissa bits: close, not equal, to fp32
    scale = np.abs(full.pred_masks).max()
    assert 0 < np.abs(low.pred_masks - full.pred_masks).max() < 0.1 * scale



@pytest.mark.slow
def test_compile_matches_eager_and_compiles_once_per_shape():
    """``compile=True`` on CPU (TorchInductor, C++ kernels built with the system compiler).

    The smallest model the config allows: compiling the usual TINY one took ~120 s on a busy 2-core machine
    (no warm inductor cache), this one ~50 s of CPU; the compiled code path is the same.
    """
    from torch._dynamo.utils import counters

    smallest = dataclasses.replace(TINY, encoder_layers=0, decoder_layers=1, num_queries=4)
    model = make_model(smallest, 5, force_class=3)
    images = [random_image(seed, 64, 96) for seed in (10, 11)]
    torch._dynamo.reset()
    counters.clear()
    compiled = TorchBackend(model, compile=True)
    for image in images:
        np.testing.assert_allclose(run(compiled, image).pred_masks, run(TorchBackend(model), image).pred_masks,
                                   atol=1e-4)
    # One graph for the whole forward, reused for the second image of the same size: compiled, not
    # silently run eager, and no graph break (each would split the GPU graph and cost a Python round trip).
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["graph_break"]

def test_unsupported_options_are_clear_errors(model, tmp_path):
    with pytest.raises(M2AError, match="fp16 needs a CUDA device"):
        TorchBackend(model, precision="fp16")
    with pytest.raises(M2AError, match="precision must be one of"):
        TorchBackend(model, precision="fp8")
    with pytest.raises(M2AError, match="cuda_graph needs a CUDA device"):
        TorchBackend(model, cuda_graph=True)
    with pytest.raises(M2AError, match="unknown backend"):
        make_backend("openvino", tmp_path / "x")
    if not torch.cuda.is_available():
        with pytest.raises(M2AError, match="CUDA is not available"):
            TorchBackend(model, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI and dev machines are CPU-only)")
def test_cuda_graph_and_fp16_match_eager(model):
    image = random_image(2, 64, 96)
    eager = run(TorchBackend(model, "cuda"), image)
    graph = Predictor(TorchBackend(model, "cuda", cuda_graph=True), PredictorOptions(short_side=None))
    np.testing.assert_allclose(graph(image).pred_masks, eager.pred_masks, atol=1e-4)
    np.testing.assert_allclose(graph(image).pred_masks, eager.pred_masks, atol=1e-4)  # replay, not capture
    half = run(TorchBackend(model, "cuda", precision="fp16"), image)
    assert np.abs(half.pred_masks - eager.pred_masks).max() < 0.05 * np.abs(eager.pred_masks).max()
