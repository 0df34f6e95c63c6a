"""``m2a infer`` and ``m2a bench model`` as a user runs them: real files, a real subprocess."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from m2a_core.checkpoint import save_weights
from m2a_core.modeling import Mask2Anomaly
from m2a_core.predictor import Predictor

from helpers import random_image


def m2a(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "m2a_core", *args], capture_output=True, text=True, timeout=timeout)


def test_infer_writes_pictures_and_raw_outputs(tiny_config, tmp_path):
    torch.manual_seed(0)
    save_weights(Mask2Anomaly(tiny_config), tmp_path / "w.safetensors")
    images = []
    for index, (h, w) in enumerate(((48, 80), (50, 70))):
        path = tmp_path / f"frame{index}.png"
        Image.fromarray(random_image(index, h, w)).save(path)
        images.append(path)
    out = tmp_path / "out"
    done = m2a("infer", "--weights", str(tmp_path / "w.safetensors"), "--short-side", "64", "--max-size", "128",
               "--tta", "--save-raw", "--out", str(out), *map(str, images))
    assert done.returncode == 0, done.stderr
    predictor = Predictor.from_weights(tmp_path / "w.safetensors", short_side=64, max_size=128, tta=True)
    for path in images:
        image = np.asarray(Image.open(path).convert("RGB"))
        heat = np.asarray(Image.open(out / f"{path.stem}_anomaly.png"))
        overlay = np.asarray(Image.open(out / f"{path.stem}_overlay.png"))
        assert heat.shape == overlay.shape == image.shape
        raw = np.load(out / f"{path.stem}.npz")
        assert set(raw.files) == {"anomaly", "anomaly_no_refine", "semseg", "pred_logits", "pred_masks"}
        expected = predictor(image)
        np.testing.assert_allclose(raw["anomaly"], expected.anomaly, atol=1e-6)
        assert raw["semseg"].dtype == np.uint8 and raw["semseg"].shape == image.shape[:2]
        assert raw["pred_logits"].shape == (tiny_config.num_queries, tiny_config.num_classes + 1)
        assert raw["pred_masks"].shape[0] == tiny_config.num_queries


def test_infer_bad_input_is_one_clear_line(tiny_config, tmp_path):
    save_weights(Mask2Anomaly(tiny_config), tmp_path / "w.safetensors")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG but not really")
    cases = [
        (["--weights", str(tmp_path / "w.safetensors"), str(tmp_path / "broken.png")], "cannot read image"),
        (["--weights", str(tmp_path / "w.safetensors"), str(tmp_path / "missing.png")], "does not exist"),
        (["--weights", str(tmp_path / "broken.png"), str(tmp_path / "broken.png")], "not a readable safetensors"),
        (["--weights", str(tmp_path / "w.safetensors"), "--device", "cuda:7", str(tmp_path / "broken.png")],
         "CUDA is not available" if not torch.cuda.is_available() else "cannot read image"),
    ]
    for args, message in cases:
        done = m2a("infer", "--out", str(tmp_path / "out"), *args)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_bench_model_prints_stage_latencies(tiny_config, tmp_path):
    save_weights(Mask2Anomaly(tiny_config), tmp_path / "w.safetensors")
    done = m2a("bench", "model", "--weights", str(tmp_path / "w.safetensors"), "--height", "64", "--width", "96",
               "--repeat", "2")
    assert done.returncode == 0, done.stderr
    for stage in ("backbone", "pixel_decoder", "transformer_decoder", "total"):
        line = next(line for line in done.stdout.splitlines() if line.startswith(stage))
        median, low, high = (float(v) for v in line.split()[1:])
        assert 0 < low <= median <= high
