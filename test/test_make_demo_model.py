"""The demo-model recipe (training/make_demo_model.py) in its --smoke form: every step runs on a few tiny
frames and every output is produced, consistent with the data it claims to come from."""
from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from m2a_core.checkpoint import load_model, read_weights, sha256_file
from m2a_core.datasets.base import read_label_png
from m2a_core.imageio import read_rgb
from m2a_core.openset.calibration import load_calibration
from m2a_core.predictor import Predictor
from m2a_core.training.config import TrainConfig
from training import make_demo_model

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "training" / "make_demo_model.py"
CONFIGS = [REPO / "training" / "configs" / f"demo_synth_stage{i}.yaml" for i in (1, 2)]


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo_smoke")
    result = run_script("--out", str(out), "--smoke", "--no-progress", "--threads", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    (out / "run_stderr.txt").write_text(result.stderr)
    return out


def test_no_progress_silences_every_progress_bar(smoke_run: Path):
    stderr = (smoke_run / "run_stderr.txt").read_text()
    assert "\r" not in stderr and "it/s" not in stderr and "frame/s" not in stderr, stderr[-2000:]


def test_configs_describe_one_model_that_fits_the_size_budget():
    stage1, stage2 = (TrainConfig.from_yaml(path) for path in CONFIGS)
    assert stage1.model_config() == stage2.model_config()
    assert stage2.loss.outlier_weight > 0 and stage2.anomaly_mix.pool
    from m2a_core.modeling import Mask2Anomaly

    model = Mask2Anomaly(stage1.model_config())
    fp16_bytes = 2 * sum(t.numel() for t in model.state_dict().values())
    assert fp16_bytes < 25e6


def test_every_output_is_written(smoke_run: Path):
    for name in ("m2a_demo.safetensors", "m2a_demo.calibration.json", "m2a_demo.calibration.png", "metrics.json",
                 "metrics.md", "pr_roc.png", "predictions.png", "stage1/model_final.safetensors",
                 "stage1/loss_curve.png", "stage2/model_final.safetensors", "stage2/metrics.jsonl"):
        path = smoke_run / name
        assert path.is_file() and path.stat().st_size > 0, name
    for picture in ("pr_roc.png", "predictions.png", "m2a_demo.calibration.png"):
        assert (smoke_run / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    for key in ("AuPRC", "FPR95", "sIoU", "PPV", "mean_F1", "open_mIoU", "closed_mIoU", "val_mIoU"):
        assert key in metrics
    assert 0.0 <= metrics["AuPRC"] <= 1.0 and 0.0 <= metrics["FPR95"] <= 1.0
    assert set(metrics["seconds"]) >= {"data", "stage1", "stage2", "export_calibrate", "evaluate", "total"}
    table = (smoke_run / "metrics.md").read_text()
    assert "| AuPRC | FPR95 | sIoU | PPV | mean F1 | open-mIoU |" in table
    assert f"{100 * metrics['AuPRC']:.2f}" in table


def test_exported_weights_are_the_stage2_weights_in_fp16(smoke_run: Path):
    config, exported = read_weights(smoke_run / "m2a_demo.safetensors")
    stage2_config, stage2 = read_weights(smoke_run / "stage2" / "model_final.safetensors")
    assert config == stage2_config and exported.keys() == stage2.keys()
    for name, tensor in stage2.items():
        expected = tensor.half() if tensor.is_floating_point() else tensor
        assert exported[name].dtype == expected.dtype and torch.equal(exported[name], expected), name
    model = load_model(smoke_run / "m2a_demo.safetensors")  # loads into the fp32 model
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_threshold_is_calibrated_on_the_calibration_split_only(smoke_run: Path):
    weights = smoke_run / "m2a_demo.safetensors"
    calibration = load_calibration(smoke_run / "m2a_demo.calibration.json", classes="cityscapes",
                                   weights_sha256=sha256_file(weights))
    data = smoke_run / "data"
    calibration_images = sorted((data / "anomaly_calibration" / "images").glob("*.png"))
    test_images = sorted((data / "anomaly_test" / "images").glob("*.png"))
    assert calibration.num_images == len(calibration_images) > 0
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in calibration_images + test_images}
    assert not {digests[p] for p in calibration_images} & {digests[p] for p in test_images}

    # Brute force: the highest score t such that score >= t keeps at least the recipe's share of anomaly pixels.
    assert calibration.tpr == make_demo_model.CALIBRATION_TPR
    predictor = Predictor.from_weights(weights, short_side=calibration.predictor_options["short_side"],
                                       max_size=calibration.predictor_options["max_size"])
    anomaly_scores = []
    for image_path in calibration_images:
        labels = read_label_png(data / "anomaly_calibration" / "labels_masks" / image_path.name)
        anomaly_scores.append(predictor(read_rgb(image_path)).anomaly[labels == 1])
    ranked = np.sort(np.concatenate(anomaly_scores))[::-1]
    expected = ranked[math.ceil(make_demo_model.CALIBRATION_TPR * ranked.size) - 1]
    assert calibration.threshold == pytest.approx(float(expected), abs=1e-6)
    assert json.loads((smoke_run / "metrics.json").read_text())["threshold"] == calibration.threshold


def test_held_out_auprc_matches_sklearn(smoke_run: Path):
    from sklearn.metrics import average_precision_score

    metrics = json.loads((smoke_run / "metrics.json").read_text())
    weights = smoke_run / "m2a_demo.safetensors"
    options = json.loads((smoke_run / "m2a_demo.calibration.json").read_text())["predictor_options"]
    predictor = Predictor.from_weights(weights, short_side=options["short_side"], max_size=options["max_size"])
    test = smoke_run / "data" / "anomaly_test"
    scores, truth = [], []
    for image_path in sorted((test / "images").glob("*.png")):
        labels = read_label_png(test / "labels_masks" / image_path.name)
        anomaly = predictor(read_rgb(image_path)).anomaly
        valid = labels != 255
        scores.append(anomaly[valid])
        truth.append(labels[valid])
    assert metrics["num_test_frames"] == len(scores)
    expected = average_precision_score(np.concatenate(truth), np.concatenate(scores))
    assert metrics["AuPRC"] == pytest.approx(expected, abs=1e-6)


def test_bad_thread_count_is_a_clear_error(tmp_path: Path):
    result = run_script("--out", str(tmp_path / "x"), "--smoke", "--threads", "0")
    assert result.returncode == 2
    assert "--threads must be >= 1" in result.stderr and "Traceback" not in result.stderr



def test_a_finished_stage_is_reused_only_with_the_config_it_was_trained_with(smoke_run: Path):
    from m2a_core.errors import M2AError
    from m2a_core.training.checkpointing import load_checkpoint

    saved = load_checkpoint(smoke_run / "stage2" / "last_checkpoint.pt")["config"]
    final, earlier, reused = make_demo_model.run_stage(TrainConfig.from_dict(saved), True, False)
    assert reused and earlier == 0.0 and final == smoke_run / "stage2" / "model_final.safetensors"
    longer = TrainConfig.from_dict(saved)
    longer.solver.max_iter += 10
    with pytest.raises(M2AError, match=r"another config \(solver\.max_iter: \d+ -> \d+\): delete .*stage2"):
        make_demo_model.run_stage(longer, True, False)
    other_pool = TrainConfig.from_dict(saved)
    other_pool.anomaly_mix.probability = 0.2
    with pytest.raises(M2AError, match="anomaly_mix.probability"):
        make_demo_model.run_stage(other_pool, True, False)


def test_resume_reports_the_cost_of_reused_steps_as_first_measured(smoke_run: Path):
    """Last in this file: it redoes the run's export, calibration and evaluation."""
    before = json.loads((smoke_run / "steps.json").read_text())
    result = run_script("--out", str(smoke_run), "--smoke", "--resume", "--no-progress", "--threads", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reusing the data" in result.stdout and "stage already finished" in result.stdout
    after = json.loads((smoke_run / "steps.json").read_text())
    for step in ("data", "stage1", "stage2"):       # reused: the first run's record stays
        assert after[step] == before[step]
    for step in ("export_calibrate", "evaluate"):   # redone by the resumed run (1 thread)
        assert after[step]["threads"] == 1 and before[step]["threads"] == 2
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert metrics["seconds"]["stage1"] == before["stage1"]["seconds"]
    assert metrics["seconds"]["total"] == pytest.approx(sum(step["seconds"] for step in after.values()))
    assert f"stage1 {before['stage1']['seconds']:.0f} (2)" in (smoke_run / "metrics.md").read_text()
