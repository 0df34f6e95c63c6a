"""Threshold calibration: the library against a directly computed TPR, the file format, and ``m2a calibrate``."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
from PIL import Image

from m2a_core.checkpoint import sha256_file
from m2a_core.errors import DatasetError, M2AError
from m2a_core.openset.calibration import (
    Calibration,
    anomaly_dataset_pairs,
    calibrate,
    default_calibration_path,
    load_calibration,
    save_calibration,
)
from m2a_core.predictor import Predictor

from helpers import random_image

SIZES = ((40, 60), (44, 56), (40, 60))
PREDICTOR_OPTIONS = {"short_side": 64, "max_size": 128}


@pytest.fixture()
def weights(tiny_weights):
    return tiny_weights


@pytest.fixture()
def dataset(tmp_path):
    root = tmp_path / "calib"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(1)
    for index, (h, w) in enumerate(SIZES):
        Image.fromarray(random_image(10 + index, h, w)).save(root / "images" / f"frame{index}.png")
        label = np.zeros((h, w), np.uint8)
        top, left = rng.integers(0, h - 12), rng.integers(0, w - 12)
        label[top:top + 12, left:left + 12] = 1
        label[:3] = 255
        Image.fromarray(label).save(root / "labels" / f"frame{index}.png")
    return root


def direct_scores(predictor, root):
    """Every labelled pixel's score, computed image by image without the accumulator."""
    anomaly, inlier = [], []
    for index in range(len(SIZES)):
        image = np.asarray(Image.open(root / "images" / f"frame{index}.png").convert("RGB"))
        label = np.asarray(Image.open(root / "labels" / f"frame{index}.png"))
        score = predictor(image).anomaly
        anomaly.append(score[label == 1])
        inlier.append(score[label == 0])
    return np.concatenate(anomaly), np.concatenate(inlier)


def test_threshold_reaches_the_tpr_and_is_the_highest_that_does(weights, dataset):
    predictor = Predictor.from_weights(weights, **PREDICTOR_OPTIONS)
    anomaly, inlier = direct_scores(predictor, dataset)
    for tpr in (0.95, 0.5, 1.0):
        calibration, _ = calibrate(predictor, anomaly_dataset_pairs(dataset), tpr, weights_sha256="ab" * 32,
                                   classes="cityscapes", progress=False)
        t = calibration.threshold
        reached = (anomaly >= t).mean()
        assert reached >= tpr
        # Any higher candidate (the next larger anomaly score) misses the rate.
        higher = anomaly[anomaly > t]
        if higher.size:
            assert (anomaly >= higher.min()).mean() < tpr
        assert calibration.achieved_tpr == pytest.approx(reached)
        assert calibration.fpr == pytest.approx((inlier >= t).mean())
        assert calibration.num_anomaly_pixels == anomaly.size and calibration.num_inlier_pixels == inlier.size
        assert calibration.num_images == len(SIZES)


def test_file_round_trip_and_clear_errors(tmp_path):
    calibration = Calibration(threshold=0.42, tpr=0.95, achieved_tpr=0.951, fpr=0.1, num_images=3,
                              num_anomaly_pixels=100, num_inlier_pixels=900, weights_sha256="c" * 64,
                              classes="cityscapes", predictor_options={"tta": False})
    path = tmp_path / "w.calibration.json"
    save_calibration(calibration, path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]   # atomic: no temporary file left
    assert load_calibration(path, classes="cityscapes", weights_sha256="c" * 64) == calibration
    raw = json.loads(path.read_text())
    assert raw["format"] == "m2a-calibration" and ">=" in raw["convention"]

    def broken(text: str, message: str) -> None:
        path.write_text(text)
        with pytest.raises(M2AError, match=message):
            load_calibration(path)

    broken("{not json", "not readable JSON")
    broken(json.dumps({"threshold": 0.4}), "not an m2a calibration file")
    broken(json.dumps({**raw, "version": 7}), "version 7")
    broken(json.dumps({k: v for k, v in raw.items() if k != "threshold"}), r"missing fields \['threshold'\]")
    broken(json.dumps({**raw, "extra": 1}), r"unknown fields \['extra'\]")
    broken(json.dumps({**raw, "threshold": "high"}), "finite number")
    broken(json.dumps({**raw, "tpr": 1.5}), "tpr must be in")
    path.write_text(json.dumps(raw))
    with pytest.raises(M2AError, match="class set 'cityscapes'"):
        load_calibration(path, classes="streethazards")
    with pytest.raises(M2AError, match="other weights"):
        load_calibration(path, weights_sha256="d" * 64)
    with pytest.raises(M2AError, match="does not exist"):
        load_calibration(tmp_path / "missing.json")


def test_dataset_layout_errors_name_the_problem(dataset, tmp_path):
    with pytest.raises(DatasetError, match="images is missing"):
        anomaly_dataset_pairs(dataset / "images")
    (dataset / "labels" / "frame1.png").unlink()
    with pytest.raises(DatasetError, match="frame1.png has no label"):
        anomaly_dataset_pairs(dataset)


def m2a(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "m2a_core", *args], capture_output=True, text=True, timeout=300)


def test_cli_writes_the_file_beside_the_weights_and_it_matches_the_library(weights, dataset):
    done = m2a("calibrate", "--weights", str(weights), "--data", str(dataset), "--tpr", "0.9",
               "--short-side", "64", "--max-size", "128")
    assert done.returncode == 0, done.stderr
    path = default_calibration_path(weights)
    assert path.name == "tiny.calibration.json" and path.with_suffix(".png").stat().st_size > 1000
    loaded = load_calibration(path, classes="cityscapes", weights_sha256=sha256_file(weights))
    predictor = Predictor.from_weights(weights, **PREDICTOR_OPTIONS)
    expected, _ = calibrate(predictor, anomaly_dataset_pairs(dataset), 0.9, sha256_file(weights), "cityscapes",
                            progress=False)
    assert loaded.threshold == expected.threshold and loaded.tpr == 0.9
    assert loaded.predictor_options == json.loads(json.dumps(asdict(predictor.options)))
    assert math.isfinite(loaded.fpr)


def test_cli_bad_input_is_one_line(weights, dataset, tmp_path):
    Image.fromarray(np.full(SIZES[0], 7, np.uint8)).save(dataset / "labels" / "frame0.png")
    cases = [
        (["--data", str(tmp_path / "nowhere")], "anomaly benchmark layout"),
        (["--data", str(dataset), "--tpr", "0"], "--tpr must be in"),
        (["--data", str(dataset)], "has values [7]"),
    ]
    for args, message in cases:
        done = m2a("calibrate", "--weights", str(weights), "--short-side", "64", "--max-size", "128", *args)
        assert done.returncode == 2, done.stderr
        # The error is one line (after any progress bar output), never a traceback.
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("m2a calibrate: error:") and message in last, done.stderr
        assert "Traceback" not in done.stderr
