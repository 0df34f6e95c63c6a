"""The predictor against an independent transcription of the official steps, on other seeds and sizes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from m2a_core.checkpoint import save_weights
from m2a_core.errors import M2AError
from m2a_core.predictor import Predictor, PredictorOptions, TorchBackend
from m2a_core.preprocess import resized_shape

from helpers import make_model, random_image
from official_reference import official_anomaly, official_decoder


@pytest.mark.parametrize(("seed", "force_class", "image_hw", "short_side", "max_size"), [
    (0, None, (90, 150), None, None),   # padding only
    (1, 8, (90, 150), None, None),      # refinement active
    (2, 8, (60, 100), 96, 200),         # resized up (PIL) and back down to the input size
    (3, None, (130, 70), 64, 96),       # portrait, resized down with the long side capped
])
def test_predictor_matches_official_steps(tiny_config, seed, force_class, image_hw, short_side, max_size):
    model = make_model(tiny_config, seed, force_class)
    predictor = Predictor(TorchBackend(model), PredictorOptions(short_side=short_side, max_size=max_size))
    image = random_image(seed, *image_hw)
    pred = predictor(image)

    batch, input_size = predictor.preprocess([image])
    with torch.no_grad():
        features = model.backbone(batch)
        mask_features, multi_scale = model.pixel_decoder(features)
    logits, masks = official_decoder(model.state_dict(), multi_scale, mask_features, tiny_config.decoder_layers,
                                     tiny_config.decoder_heads)
    np.testing.assert_allclose(pred.pred_logits, logits[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(pred.pred_masks, masks[0].numpy(), atol=1e-4)
    anomaly, no_refine, semseg, kept = official_anomaly(
        logits[0], masks[0], tuple(batch.shape[-2:]), input_size, image_hw, tiny_config.num_classes)
    assert pred.num_refine == kept
    if force_class is not None:
        assert kept > 1, "the forced class should make refinement active"
    np.testing.assert_allclose(pred.anomaly, anomaly.numpy(), atol=1e-4)
    np.testing.assert_allclose(pred.anomaly_no_refine, no_refine.numpy(), atol=1e-4)
    assert (pred.semseg == semseg.numpy()).mean() >= 0.999
    assert pred.anomaly.shape == image_hw and pred.anomaly.dtype == np.float32


def test_tta_averages_the_flipped_view(tiny_config):
    predictor = Predictor(TorchBackend(make_model(tiny_config, 4, 8)), PredictorOptions(short_side=None))
    tta = Predictor(predictor.backend, PredictorOptions(short_side=None, tta=True))
    image = random_image(5, 64, 96)
    single = predictor(image)
    flipped = predictor(np.ascontiguousarray(image[:, ::-1]))
    np.testing.assert_allclose(tta(image).anomaly, (single.anomaly + flipped.anomaly[:, ::-1]) / 2, atol=1e-6)


def test_batch_equals_one_by_one_for_mixed_sizes(tiny_config):
    predictor = Predictor(TorchBackend(make_model(tiny_config, 6, None)), PredictorOptions(short_side=None))
    images = [random_image(1, 64, 96), random_image(2, 70, 50), random_image(3, 64, 96)]
    batched = predictor.predict_batch(images)
    for image, result in zip(images, batched, strict=True):
        np.testing.assert_allclose(result.anomaly, predictor(image).anomaly, atol=1e-5)


def test_resized_shape_follows_detectron2():
    assert resized_shape(1024, 2048, 1024, 2048) == (1024, 2048)
    assert resized_shape(1024, 1500, 1024, 2048) == (1024, 1500)
    assert resized_shape(512, 1024, 1024, 2048) == (1024, 2048)
    assert resized_shape(1080, 1920, 1024, 2048) == (1024, 1820)   # 1920 * 1024 / 1080 = 1820.4
    assert resized_shape(600, 3000, 1024, 2048) == (410, 2048)     # capped: 1024 * 2048 / 5120 = 409.6
    assert resized_shape(2000, 1000, 1024, 2048) == (2048, 1024)
    assert resized_shape(77, 91, None, None) == (77, 91)


def test_bad_images_get_clear_errors(tiny_config):
    predictor = Predictor(TorchBackend(make_model(tiny_config, 0, None)))
    with pytest.raises(M2AError, match="uint8"):
        predictor(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(M2AError, match=r"\[H, W, 3\]"):
        predictor(np.zeros((8, 8), np.uint8))
    with pytest.raises(M2AError, match="empty"):
        predictor(np.zeros((0, 8, 3), np.uint8))


def test_from_weights_on_disk(tiny_config, tmp_path):
    model = make_model(tiny_config, 7, None)
    save_weights(model, tmp_path / "w.safetensors")
    predictor = Predictor.from_weights(tmp_path / "w.safetensors", short_side=None)
    direct = Predictor(TorchBackend(model), PredictorOptions(short_side=None))
    image = random_image(0, 64, 64)
    np.testing.assert_array_equal(predictor(image).anomaly, direct(image).anomaly)


def test_per_call_options_equal_a_predictor_built_with_them(tiny_config):
    """predictor(image, **overrides) / options=: as a predictor made with those options; its own stay unchanged."""
    base = PredictorOptions(short_side=None)
    shared = Predictor(TorchBackend(make_model(tiny_config, 7, 8)), base)
    image = random_image(8, 64, 96)
    cases = [{"openset_threshold": 0.3, "panoptic": True, "panoptic_resolution": "mask"},
             {"refine": False}, {"tta": True, "openset_threshold": 0.2, "openset_score": "anomaly_no_refine"}]
    for overrides in cases:
        expected = Predictor(shared.backend, PredictorOptions(short_side=None, **overrides))(image)
        by_keywords = shared(image, **overrides)
        by_options = shared.predict_batch([image], options=PredictorOptions(short_side=None, **overrides))[0]
        for got in (by_keywords, by_options):
            np.testing.assert_array_equal(got.anomaly, expected.anomaly)
            np.testing.assert_array_equal(got.anomaly_no_refine, expected.anomaly_no_refine)
            assert got.num_refine == expected.num_refine
            for name in ("labels", "instances"):
                if getattr(expected, name) is None:
                    assert getattr(got, name) is None, name
                else:
                    np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))
            assert got.segments == expected.segments
        assert shared.options == base
    plain = shared(image)
    assert plain.labels is None and plain.instances is None and plain.segments is None
    assert shared.resolve_options(refine=False).refine is False and shared.resolve_options() is base
    with pytest.raises(ValueError, match="openset_score must be"):
        shared(image, openset_score="semseg")
