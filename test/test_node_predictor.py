"""The node's parameters -> predictor, calibration and per-frame open-set request (``m2a_ros.node_predictor``)."""
from __future__ import annotations

import pytest
import torch

from m2a_core.checkpoint import save_weights, sha256_file
from m2a_core.modeling import Mask2Anomaly
from m2a_core.openset import Calibration, PanopticParams, save_calibration
from m2a_ros.node_predictor import StartupError, load_calibration, load_predictor, openset_request
from m2a_ros.parameters import DEFAULTS

from helpers import TINY


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("node_predictor") / "tiny.safetensors"
    torch.manual_seed(0)
    save_weights(Mask2Anomaly(TINY), path)
    return path


@pytest.mark.parametrize("wanted, threshold, panoptic", [
    (set(), None, False),
    ({"anomaly", "anomaly_color"}, None, False),
    ({"labels"}, 0.4, False),
    ({"labels_color"}, 0.4, False),
    ({"overlay"}, None, True),
    ({"unknown_instances"}, None, True),
    ({"detections", "labels"}, 0.4, True),
])
def test_openset_request_asks_only_for_what_the_outputs_need(wanted, threshold, panoptic):
    values = {**DEFAULTS, "threshold": 0.4, "min_instance_area": 7, "max_instances": 2, "panoptic_resolution": "full",
              "instance_source": "background", "instance_opening": 5}
    request = openset_request(values, wanted, "anomaly_no_refine")
    assert request == {"openset_threshold": threshold, "openset_score": "anomaly_no_refine", "panoptic": panoptic,
                       "panoptic_params": PanopticParams(min_component_area=7, max_components=2,
                                                         unknown_source="background", anomaly_threshold=0.4,
                                                         opening_size=5),
                       "panoptic_resolution": "full"}


def test_calibration_threshold_score_and_mismatched_options(weights, tmp_path):
    values = {**DEFAULTS, "weights": str(weights), "short_side": 64, "max_size": 128}
    predictor = load_predictor(values)
    assert predictor.options.short_side == 64 and predictor.options.max_size == 128
    path = tmp_path / "c.json"
    save_calibration(Calibration(threshold=0.37, tpr=0.95, achieved_tpr=0.95, fpr=0.1, num_images=1,
                                 num_anomaly_pixels=10, num_inlier_pixels=90, weights_sha256=sha256_file(weights),
                                 classes="cityscapes", score="anomaly_no_refine",
                                 predictor_options={"short_side": 1024, "max_size": 128, "tta": False,
                                                    "openset_threshold": 0.9}), path)
    calibration = load_calibration({**values, "calibration_file": str(path)}, predictor)
    assert calibration.threshold == pytest.approx(0.37) and calibration.score == "anomaly_no_refine"
    assert calibration.mismatched == ["short_side"]  # open-set options do not move the threshold
    with pytest.raises(StartupError, match="no calibration file"):
        load_calibration({**values, "calibration_file": str(tmp_path / "missing.json")}, predictor)


def test_load_predictor_names_the_problem(tmp_path):
    with pytest.raises(StartupError, match="parameter 'weights' is not set"):
        load_predictor(dict(DEFAULTS))
    with pytest.raises(StartupError, match="does not exist"):
        load_predictor({**DEFAULTS, "weights": str(tmp_path / "none.safetensors")})
