"""The miniature ablation (training/ablation.py) in its --smoke form, on a make_demo_model.py --smoke run: the
Mask2Former baseline row is a plain masked-attention stage-1 model trained like the run's stage 1, and every
row's numbers are what an independent computation (sklearn) gives for its weights and options."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from m2a_core.checkpoint import read_weights
from m2a_core.datasets.base import read_label_png
from m2a_core.imageio import read_rgb
from m2a_core.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]
ABLATION = REPO / "training" / "ablation.py"
BASELINE = Path("ablation") / "stage1_masked"
SMOKE_HEIGHT, SMOKE_ITERATIONS = 64, 2  # make_demo_model.SMOKE


def run(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "training" / script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ablation_smoke")
    made = run("make_demo_model.py", "--out", str(out), "--smoke", "--no-progress", "--threads", "2")
    assert made.returncode == 0, made.stderr[-3000:]
    ablation = run("ablation.py", "--out", str(out), "--smoke", "--no-progress", "--threads", "2")
    assert ablation.returncode == 0, ablation.stderr[-3000:]
    # --no-progress: no bar anywhere (training, validation, scoring), so a background run's log stays readable.
    assert "\r" not in ablation.stderr and "frame/s" not in ablation.stderr, ablation.stderr[-2000:]
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_baseline_is_the_stage1_recipe_with_plain_masked_attention(smoke_run: Path):
    config, state = read_weights(smoke_run / BASELINE / "model_final.safetensors")
    stage1_config, stage1_state = read_weights(smoke_run / "stage1" / "model_final.safetensors")
    assert config.cross_attention == "masked" and stage1_config.cross_attention == "global"
    assert config == dataclasses.replace(stage1_config, cross_attention="masked")
    assert not any("background" in k for k in state) and any("multihead_attn_background" in k for k in stage1_state)
    # Same training recipe (data, augmentation, loss, schedule, seed); only the model's attention and the folder.
    recipes = []
    for folder in (BASELINE, Path("stage1")):
        recipe = torch.load(smoke_run / folder / "last_checkpoint.pt", weights_only=True, map_location="cpu")
        recipe = recipe["config"]
        assert recipe["solver"]["max_iter"] == SMOKE_ITERATIONS
        recipe["model"].pop("cross_attention", None)
        recipe["output"].pop("dir")
        recipes.append(recipe)
    assert recipes[0] == recipes[1]
    iterations = [json.loads(line).get("iteration") for line in
                  (smoke_run / BASELINE / "metrics.jsonl").read_text().splitlines()]
    assert max(iterations) == SMOKE_ITERATIONS


def average_precision(weights: Path, refine: bool, test: Path) -> float:
    from sklearn.metrics import average_precision_score

    predictor = Predictor.from_weights(weights, short_side=SMOKE_HEIGHT, max_size=8 * SMOKE_HEIGHT, refine=refine)
    scores, truth = [], []
    for image_path in sorted((test / "images").glob("*.png")):
        labels = read_label_png(test / "labels_masks" / image_path.name)
        valid = labels != 255
        scores.append(predictor(read_rgb(image_path)).anomaly[valid])
        truth.append(labels[valid])
    return float(average_precision_score(np.concatenate(truth), np.concatenate(scores)))


def test_rows_table_and_picture(smoke_run: Path):
    rows = json.loads((smoke_run / "ablation.json").read_text())
    names = list(rows)
    assert len(names) == 5 and names[0].startswith("Mask2Former masked attention") and names[-1].endswith("(full)")
    table = (smoke_run / "ablation.md").read_text().splitlines()
    assert [line.split(" | ")[0].lstrip("| ") for line in table if line.startswith("| ") and "AuPRC" not in line] \
        == names
    assert f"{100 * rows[names[0]]['AuPRC']:.2f}" in table[table.index(next(t for t in table if names[0] in t))]
    assert (smoke_run / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # AuPRC as sklearn computes it: the baseline (MSP, no refinement) and the full model (with refinement).
    test = smoke_run / "data" / "anomaly_test"
    assert rows[names[0]]["AuPRC"] == pytest.approx(
        average_precision(smoke_run / BASELINE / "model_final.safetensors", False, test), abs=1e-6)
    assert rows[names[-1]]["AuPRC"] == pytest.approx(
        average_precision(smoke_run / "stage2" / "model_final.safetensors", True, test), abs=1e-6)


def test_resume_keeps_the_finished_baseline(smoke_run: Path):
    weights = smoke_run / BASELINE / "model_final.safetensors"
    before, rows_before = sha256(weights), json.loads((smoke_run / "ablation.json").read_text())
    again = run("ablation.py", "--out", str(smoke_run), "--smoke", "--resume", "--no-progress", "--threads", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "stage already finished" in again.stdout
    assert sha256(weights) == before
    rows = json.loads((smoke_run / "ablation.json").read_text())
    assert rows.keys() == rows_before.keys()
    for name, metrics in rows.items():  # the same weights evaluated again (float sums may differ in the last bits)
        assert metrics == pytest.approx(rows_before[name], abs=1e-6), name


def test_smoke_flag_must_match_the_run(smoke_run: Path):
    weights = smoke_run / BASELINE / "model_final.safetensors"
    before = sha256(weights)
    result = run("ablation.py", "--out", str(smoke_run), "--no-progress", timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "was made with make_demo_model.py --smoke: pass --smoke" in result.stderr
    assert sha256(weights) == before  # refused before any training


def test_ablation_refuses_an_unfinished_run(tmp_path: Path):
    result = run("ablation.py", "--out", str(tmp_path), timeout=120)
    assert result.returncode == 2 and "not a finished make_demo_model.py run" in result.stderr
    assert "Traceback" not in result.stderr
