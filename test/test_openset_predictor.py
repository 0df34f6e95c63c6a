"""Open-set outputs through the predictor and ``m2a infer --openset``: opt-in, and equal to the library."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from m2a_core.checkpoint import sha256_file
from m2a_core.classes import CITYSCAPES, UNKNOWN_ID
from m2a_core.openset.calibration import Calibration, default_calibration_path, save_calibration
from m2a_core.openset.panoptic import PanopticParams, panoptic_from_outputs
from m2a_core.predictor import Predictor
from m2a_core.preprocess import resized_shape

from helpers import random_image, scipy_opening

OPTIONS = {"short_side": 64, "max_size": 128}


@pytest.fixture()
def weights(tiny_weights):
    return tiny_weights


def test_outputs_are_opt_in_and_equal_the_library(weights):
    image = random_image(4, 45, 70)
    plain = Predictor.from_weights(weights, **OPTIONS)(image)
    assert plain.labels is None and plain.instances is None and plain.segments is None
    threshold = float(np.median(plain.anomaly))
    params = PanopticParams(object_mask_threshold=0.05, min_component_area=5)
    pred = Predictor.from_weights(weights, openset_threshold=threshold, panoptic=True, panoptic_params=params,
                                  **OPTIONS)(image)
    np.testing.assert_array_equal(pred.anomaly, plain.anomaly)
    expected = np.where(plain.anomaly >= threshold, UNKNOWN_ID, plain.semseg).astype(np.uint8)
    np.testing.assert_array_equal(pred.labels, expected)
    assert pred.labels.dtype == np.uint8 and {0, UNKNOWN_ID} & set(np.unique(pred.labels))
    # Panoptic from the raw network outputs, with the sizes the predictor used.
    input_size = resized_shape(45, 70, 64, 128)
    padded = tuple(-(-s // 32) * 32 for s in input_size)
    direct = panoptic_from_outputs(torch.from_numpy(plain.pred_logits), torch.from_numpy(plain.pred_masks), padded,
                                   input_size, (45, 70), CITYSCAPES, params)
    np.testing.assert_array_equal(pred.instances, direct.id_map.numpy())
    assert pred.segments == direct.segments and pred.instances.dtype == np.int32
    assert set(np.unique(pred.instances)) - {0} == {s["id"] for s in pred.segments}
    assert len(pred.segments) > 0
    # unknown_source "anomaly": the unknown instances are the largest components of the opened thresholded score.
    params = PanopticParams(object_mask_threshold=0.05, min_component_area=5, unknown_source="anomaly",
                            anomaly_threshold=threshold)
    pred = Predictor.from_weights(weights, openset_threshold=threshold, panoptic=True, panoptic_params=params,
                                  **OPTIONS)(image)
    components, count = ndimage.label(scipy_opening(plain.anomaly >= threshold), structure=np.ones((3, 3)))
    areas = np.bincount(components.ravel())[1:]
    largest = sorted((a for a in areas if a >= 5), reverse=True)[:3]
    unknown = [s for s in pred.segments if s["unknown"]]
    assert [s["area"] for s in unknown] == largest and len(largest) > 0
    for segment in unknown:
        region = pred.instances == segment["id"]
        assert np.array_equal(region, components == np.unique(components[region])[0])


def m2a(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "m2a_core", *args], capture_output=True, text=True, timeout=300)


def test_infer_openset_writes_labels_pictures_json_and_raw(weights, tmp_path):
    image_path = tmp_path / "frame.png"
    Image.fromarray(random_image(2, 40, 60)).save(image_path)
    out = tmp_path / "out"
    base = ["infer", "--weights", str(weights), "--short-side", "64", "--max-size", "128", "--out", str(out)]
    done = m2a(*base, "--openset", "--save-raw", str(image_path))
    assert done.returncode == 2 and "no calibration file" in done.stderr and "Traceback" not in done.stderr
    plain = Predictor.from_weights(weights, **OPTIONS)(np.asarray(Image.open(image_path).convert("RGB")))
    threshold = float(np.quantile(plain.anomaly, 0.7))
    save_calibration(Calibration(threshold=threshold, tpr=0.95, achieved_tpr=0.95, fpr=0.1, num_images=1,
                                 num_anomaly_pixels=1, num_inlier_pixels=1, weights_sha256=sha256_file(weights),
                                 classes="cityscapes", predictor_options={"short_side": 64, "tta": True}),
                     default_calibration_path(weights))
    done = m2a(*base, "--openset", "--save-raw", str(image_path))
    assert done.returncode == 0, done.stderr
    # Calibrated with tta, run without: said, not silently accepted (short_side matches).
    assert "warning" in done.stderr and "other tta than this run" in done.stderr
    labels = np.asarray(Image.open(out / "frame_labels.png"))
    np.testing.assert_array_equal(labels, np.where(plain.anomaly >= threshold, UNKNOWN_ID, plain.semseg))
    assert np.asarray(Image.open(out / "frame_labels_color.png")).shape == (40, 60, 3)
    assert np.asarray(Image.open(out / "frame_panoptic.png")).shape == (40, 60, 3)
    document = json.loads((out / "frame_instances.json").read_text())
    assert document["openset_threshold"] == threshold and document["unknown_id"] == UNKNOWN_ID
    raw = np.load(out / "frame.npz")
    assert raw["labels"].dtype == np.uint8 and raw["instances"].dtype == np.int32
    np.testing.assert_array_equal(raw["labels"], labels)
    ids = {s["id"] for s in document["segments"]}
    assert set(np.unique(raw["instances"])) - {0} == ids
    # Unknown instances by default as the node finds them: components of the (opened) unknown pixels.
    components, _ = ndimage.label(scipy_opening(labels == UNKNOWN_ID), structure=np.ones((3, 3)))
    unknown = [s for s in document["segments"] if s["unknown"]]
    assert unknown
    for segment in unknown:
        region = raw["instances"] == segment["id"]
        assert np.array_equal(region, components == np.unique(components[region])[0])
    for segment in document["segments"]:
        assert segment["area"] == int((raw["instances"] == segment["id"]).sum())
        assert segment["category_name"] == ("unknown" if segment["unknown"] else
                                            CITYSCAPES.names[segment["category_id"]])
    # An explicit threshold overrides the file; a calibration for other weights is refused.
    done = m2a(*base, "--openset", "--threshold", "0.25", str(image_path))
    assert done.returncode == 0 and json.loads((out / "frame_instances.json").read_text())[
        "openset_threshold"] == 0.25
    other = tmp_path / "other.json"
    save_calibration(Calibration(threshold=0.3, tpr=0.95, achieved_tpr=0.95, fpr=0.1, num_images=1,
                                 num_anomaly_pixels=1, num_inlier_pixels=1, weights_sha256="0" * 64,
                                 classes="cityscapes"), other)
    done = m2a(*base, "--openset", "--calibration", str(other), str(image_path))
    assert done.returncode == 2 and "other weights" in done.stderr
