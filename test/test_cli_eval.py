"""``m2a eval scores`` and ``m2a eval run`` on real files in tmp_path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

from m2a_core.cli import main

REQUIRED_KEYS = ("AuPRC", "FPR95", "FPR95_interp", "AUROC", "smiyc_AuPRC", "smiyc_FPR95", "sIoU", "PPV", "mean_F1")


def write_frames(scores_dir: Path, labels_dir: Path, count: int = 3,
                 seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    scores_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    frames = []
    for index in range(count):
        labels = np.zeros((40, 60), np.uint8)
        labels[10:25, 20:40] = 1
        labels[:3] = 255
        scores = (rng.random((40, 60)) * 0.7).astype(np.float32)
        scores[12:27, 22:42] += 0.4
        np.save(scores_dir / f"frame{index}.npy", scores)
        Image.fromarray(labels).save(labels_dir / f"frame{index}.png")
        frames.append((scores, labels))
    return frames


def test_eval_scores_writes_the_benchmark_metrics(tmp_path: Path, capsys) -> None:
    frames = write_frames(tmp_path / "scores", tmp_path / "labels")
    out = tmp_path / "out" / "metrics.json"
    plot = tmp_path / "out" / "curves.png"
    code = main(["eval", "scores", "--scores", str(tmp_path / "scores"), "--labels", str(tmp_path / "labels"),
                 "--track", "obstacle", "--json", str(out), "--plot", str(plot)])
    assert code == 0
    result = json.loads(out.read_text())
    for key in REQUIRED_KEYS:
        assert 0.0 <= result[key] <= 1.0, key
    scores = np.concatenate([s[lab < 2] for s, lab in frames])
    is_anomaly = np.concatenate([lab[lab < 2] == 1 for _, lab in frames])
    assert result["AuPRC"] == pytest.approx(average_precision_score(is_anomaly, scores), abs=1e-9)
    assert result["AUROC"] == pytest.approx(roc_auc_score(is_anomaly, scores), abs=1e-9)
    assert result["track"] == "obstacle" and result["num_frames"] == 3
    assert result["num_gt_components"] == 3
    with Image.open(plot) as image:
        assert image.size[0] > 500
    assert "| AuPRC |" in capsys.readouterr().out


def test_eval_scores_given_threshold_and_skip(tmp_path: Path) -> None:
    write_frames(tmp_path / "s", tmp_path / "l", count=2)
    np.save(tmp_path / "s" / "empty.npy", np.zeros((8, 8), np.float32))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "l" / "empty.png")
    common = ["eval", "scores", "--scores", str(tmp_path / "s"), "--labels", str(tmp_path / "l")]
    assert main([*common, "--json", str(tmp_path / "all.json"), "--threshold", "2.0"]) == 0
    assert main([*common, "--json", str(tmp_path / "skip.json"), "--skip-without-anomaly"]) == 0
    everything = json.loads((tmp_path / "all.json").read_text())
    skipped = json.loads((tmp_path / "skip.json").read_text())
    assert everything["num_frames"] == 3 and skipped["num_frames"] == 2
    assert everything["num_inlier_pixels"] == skipped["num_inlier_pixels"] + 64
    # No score exceeds 2.0: no predicted component, every ground-truth component missed.
    assert everything["component_threshold"] == 2.0
    assert everything["sIoU"] == 0.0 and everything["PPV"] is None and everything["mean_F1"] == 0.0


@pytest.mark.parametrize("problem, message", [
    ("missing_label", "no label PNG"),
    ("bad_values", "expected 0"),
    ("shape", "labels are"),
    ("not_float", "float"),
    ("empty", "no <name>.npy"),
    ("colour_label", "mode RGB"),
])
def test_eval_scores_bad_input_is_one_line_exit_2(tmp_path: Path, capsys, problem: str, message: str) -> None:
    scores_dir, labels_dir = tmp_path / "s", tmp_path / "l"
    write_frames(scores_dir, labels_dir, count=1)
    if problem == "missing_label":
        (labels_dir / "frame0.png").unlink()
    elif problem == "bad_values":
        Image.fromarray(np.full((40, 60), 2, np.uint8)).save(labels_dir / "frame0.png")
    elif problem == "shape":
        np.save(scores_dir / "frame0.npy", np.zeros((10, 10), np.float32))
    elif problem == "not_float":
        np.save(scores_dir / "frame0.npy", np.zeros((40, 60), np.int32))
    elif problem == "empty":
        (scores_dir / "frame0.npy").unlink()
    elif problem == "colour_label":
        Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(labels_dir / "frame0.png")
    code = main(["eval", "scores", "--scores", str(scores_dir), "--labels", str(labels_dir),
                 "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r.json").exists()


def tiny_weights(path: Path) -> Path:
    import torch

    from m2a_core.checkpoint import save_weights
    from m2a_core.config import ModelConfig
    from m2a_core.modeling import Mask2Anomaly

    torch.manual_seed(0)
    config = ModelConfig(backbone_depth=18, conv_dim=32, mask_dim=32, hidden_dim=32, encoder_layers=1,
                         decoder_layers=3, decoder_ffn_dim=64, encoder_ffn_dim=64, num_queries=10,
                         norm_groups=8, encoder_heads=4, decoder_heads=4)
    save_weights(Mask2Anomaly(config), path)
    return path


def test_eval_run_with_a_tiny_model(tmp_path: Path, capsys) -> None:
    from m2a_core.predictor import Predictor

    weights = tiny_weights(tmp_path / "tiny.safetensors")
    root = tmp_path / "fs_static"
    (root / "images").mkdir(parents=True)
    (root / "labels_masks").mkdir()
    rng = np.random.default_rng(1)
    images, labels = {}, {}
    for index in range(3):
        image = rng.integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
        label = np.zeros((64, 96), np.uint8)
        label[20:40, 30:60] = 1
        label[:4] = 255
        Image.fromarray(image).save(root / "images" / f"im{index}.png")
        Image.fromarray(label).save(root / "labels_masks" / f"im{index}.png")
        images[f"im{index}"], labels[f"im{index}"] = image, label
    out = tmp_path / "eval"
    code = main(["eval", "run", "--weights", str(weights), "--dataset", "fs_static", "--root", str(root),
                 "--out", str(out), "--short-side", "0", "--limit", "2"])
    assert code == 0
    result = json.loads((out / "results.json").read_text())
    assert result["num_frames"] == 2 and result["dataset"] == "fs_static"
    # The saved score maps are the predictor's, and the metrics are sklearn's on them.
    predictor = Predictor.from_weights(weights, short_side=None)
    all_scores, all_labels = [], []
    for name in ("im0", "im1"):
        saved = np.load(out / "scores" / f"{name}.npy")
        np.testing.assert_allclose(saved, predictor(images[name]).anomaly, atol=1e-6)
        valid = labels[name] < 2
        all_scores.append(saved[valid])
        all_labels.append(labels[name][valid] == 1)
    assert not (out / "scores" / "im2.npy").exists()
    scores, is_anomaly = np.concatenate(all_scores), np.concatenate(all_labels)
    assert result["AuPRC"] == pytest.approx(average_precision_score(is_anomaly, scores), abs=1e-9)
    for name in ("results.md", "results.csv", "curves.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "results.csv").read_text().startswith("name,AuPRC,FPR95")
    assert "fs_static" in capsys.readouterr().out


def test_eval_run_missing_dataset_is_named(tmp_path: Path, capsys) -> None:
    weights = tiny_weights(tmp_path / "tiny.safetensors")
    code = main(["eval", "run", "--weights", str(weights), "--dataset", "road_anomaly",
                 "--root", str(tmp_path / "nowhere")])
    assert code == 2
    assert "nowhere" in capsys.readouterr().err


def test_bench_metrics_prints_time_and_memory(capsys) -> None:
    assert main(["bench", "metrics", "--frames", "2", "--height", "32", "--width", "48"]) == 0
    out = capsys.readouterr().out
    assert "ms/frame" in out and "peak memory" in out and "distinct values" in out


def test_eval_run_semantic_cityscapes(tmp_path: Path) -> None:
    from sklearn.metrics import jaccard_score

    from m2a_core.predictor import Predictor

    weights = tiny_weights(tmp_path / "tiny.safetensors")
    rng = np.random.default_rng(2)
    truth, predicted = [], []
    predictor = Predictor.from_weights(weights, short_side=None)
    for index in range(2):
        image = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
        labels = rng.integers(0, 19, size=(48, 64)).astype(np.uint8)
        labels[:5] = 255
        stem = f"city_000000_00000{index}"
        path = tmp_path / "cs" / "leftImg8bit" / "val" / "city" / f"{stem}_leftImg8bit.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        label_path = tmp_path / "cs" / "gtFine" / "val" / "city" / f"{stem}_gtFine_labelTrainIds.png"
        label_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(labels).save(label_path)
        valid = labels != 255
        truth.append(labels[valid])
        predicted.append(predictor(image).semseg[valid])
    out = tmp_path / "out"
    assert main(["eval", "run", "--weights", str(weights), "--dataset", "cityscapes", "--root", str(tmp_path / "cs"),
                 "--out", str(out), "--short-side", "0"]) == 0
    result = json.loads((out / "results.json").read_text())
    truth_all, predicted_all = np.concatenate(truth), np.concatenate(predicted)
    present = np.union1d(truth_all, predicted_all)
    expected = jaccard_score(truth_all, predicted_all, labels=present, average=None)
    assert result["open_mIoU"] == pytest.approx(expected.mean(), abs=1e-9)
    assert result["protocol"] == "closed set (no rejection)"
    assert (out / "results.md").read_text().count("|") > 4


def test_eval_run_refuses_a_model_with_other_classes(tmp_path: Path, capsys) -> None:
    weights = tiny_weights(tmp_path / "tiny.safetensors")
    root = tmp_path / "sh"
    for town in ("t5", "t6"):
        for folder in ("images", "annotations"):
            path = root / "test" / folder / "test" / town / "1.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ones((8, 8), np.uint8) if folder == "annotations"
                            else np.zeros((8, 8, 3), np.uint8)).save(path)
    code = main(["eval", "run", "--weights", str(weights), "--dataset", "street_hazards_semantic",
                 "--root", str(root), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "predicts 19 classes" in capsys.readouterr().err
