"""The train loop on a tiny synthetic Cityscapes-layout dataset: learning, kill-and-resume, stage 2, CLI."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from train_helpers import make_cityscapes, make_outlier_pool, tiny_config

from m2a_core.checkpoint import read_weights
from m2a_core.errors import M2AError
from m2a_core.training import checkpointing
from m2a_core.training.config import TrainConfig
from m2a_core.training.data import make_batch
from m2a_core.training.loop import build_criterion, build_model, build_training_set, read_metrics, train, validate
from m2a_core.training.optim import build_optimizer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster and immune to OpenMP spinning when the CPU cores are shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cityscapes")
    make_cityscapes(root, "train", count=4)
    make_cityscapes(root, "val", count=2, seed=9)
    return root


def test_loss_decreases_on_a_fixed_batch(cityscapes, tmp_path):
    torch.manual_seed(0)
    config = TrainConfig.from_dict(tiny_config(cityscapes, tmp_path))
    model = build_model(config).train()
    criterion = build_criterion(config, 19)
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05)
    samples = [build_training_set(config, 19).sample(0, j) for j in range(2)]
    totals = []
    for _ in range(40):
        images, targets, semantic = make_batch(samples, model.config.pixel_mean, model.config.pixel_std,
                                               torch.device("cpu"))
        total = sum(criterion(model(images), targets).values())
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
        optimizer.step()
        totals.append(float(total.detach()))
    assert totals[-1] < 0.6 * totals[0], totals


def test_cpu_bf16_trains_the_forward_in_bfloat16_and_keeps_float32_weights(cityscapes, tmp_path):
    first_losses, weights = {}, {}
    for bf16 in (False, True):
        out = tmp_path / f"bf16_{bf16}"
        train(TrainConfig.from_dict(tiny_config(cityscapes, out, solver={"max_iter": 2, "cpu_bf16": bf16})),
              progress=False)
        first_losses[bf16] = [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r][0]
        _, weights[bf16] = read_weights(out / "model_final.safetensors")
    # Same seed, data and initial weights: the first loss differs only by bfloat16 rounding in the forward
    # (8 mantissa bits, a relative error of ~0.4 % per operation), so it moves, but little.
    assert first_losses[True] != first_losses[False]
    assert first_losses[True] == pytest.approx(first_losses[False], rel=0.05)
    assert all(w.dtype == torch.float32 for w in weights[True].values())
    assert all(torch.isfinite(w).all() for w in weights[True].values())


def test_backbone_is_frozen_and_receives_no_update(cityscapes, tmp_path):
    config = TrainConfig.from_dict(tiny_config(cityscapes, tmp_path / "out", solver={"max_iter": 2}))
    model = build_model(config)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    final = train(config)
    _, after = read_weights(final)
    torch.manual_seed(config.seed)  # train() seeds torch with the config's seed before building the model
    start = build_model(config).state_dict()
    assert start.keys() == after.keys()
    assert all(torch.equal(after[k], start[k]) for k in start if k.startswith("backbone."))
    assert any(not torch.equal(after[k], start[k]) for k in start if k.startswith("predictor."))


def run_training_process(config_path: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(REPO / "training" / "train.py"), str(config_path), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_killed_and_resumed_run_has_the_losses_of_an_uninterrupted_run(cityscapes, tmp_path):
    max_iter = 8
    configs = {}
    for name in ("straight", "killed"):
        config = tiny_config(cityscapes, tmp_path / name, solver={"max_iter": max_iter})
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(yaml.safe_dump(config))
    straight = run_training_process(configs["straight"])
    assert straight.wait(timeout=300) == 0, straight.stdout.read()
    reference = {r["iteration"]: r for r in read_metrics(tmp_path / "straight" / "metrics.jsonl") if "loss" in r}
    assert sorted(reference) == list(range(1, max_iter + 1))

    # Kill with SIGKILL (no clean-up at all) once a checkpoint exists and the run has moved past it.
    killed = run_training_process(configs["killed"])
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and killed.poll() is None:
        if metrics.exists() and any(r.get("iteration") == 3 for r in read_metrics(metrics)):
            break
        time.sleep(0.02)
    assert killed.poll() is None, "the run ended before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert not (tmp_path / "killed" / "model_final.safetensors").exists()
    checkpoint = tmp_path / "killed" / "last_checkpoint.pt"
    state = checkpointing.load_checkpoint(checkpoint)
    assert state["seconds"] > 0
    # Let the checkpoint claim far more time than any run here takes, so that a resumed run which counted only
    # its own time could not pass the check below by chance.
    seconds_before = state["seconds"] + 1000.0
    torch.save({**state, "seconds": seconds_before}, checkpoint)
    began = time.perf_counter()
    resumed = run_training_process(configs["killed"], "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    resumed_wall = time.perf_counter() - began
    # The training time adds up over the runs: the earlier run's time to its checkpoint plus the resumed run's.
    seconds_after = checkpointing.load_checkpoint(checkpoint)["seconds"]
    assert seconds_before < seconds_after < seconds_before + resumed_wall
    resumed_from = int(resumed.stdout.read().split("resumed from iteration ")[1].split()[0])
    assert resumed_from in (2, 4, 6)
    records = {r["iteration"]: r for r in read_metrics(metrics) if "loss" in r}
    assert sorted(records) == list(range(1, max_iter + 1))
    for iteration in range(1, max_iter + 1):
        for key in ("loss", "loss_ce", "loss_mask", "loss_dice", "lr"):
            assert records[iteration][key] == pytest.approx(reference[iteration][key], rel=1e-6, abs=1e-9), (
                iteration, key)
    _, a = read_weights(tmp_path / "straight" / "model_final.safetensors")
    _, b = read_weights(tmp_path / "killed" / "model_final.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert (tmp_path / "killed" / "loss_curve.png").stat().st_size > 0


def test_stage2_starts_from_the_stage1_model(cityscapes, tmp_path):
    stage1 = TrainConfig.from_dict(tiny_config(cityscapes, tmp_path / "stage1", solver={"max_iter": 2}))
    stage1_weights = train(stage1)
    pool = make_outlier_pool(tmp_path / "pool")
    raw = tiny_config(cityscapes, tmp_path / "stage2", solver={"max_iter": 3, "lr": 1e-5},
                      anomaly_mix={"pool": str(pool), "probability": 1.0},
                      loss={"num_points": 256, "outlier_weight": 1.0, "outlier_margin": 0.75})
    config_path = tmp_path / "stage2.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    stage2 = TrainConfig.from_dict(dict(raw, init={"weights": str(stage1_weights)}))
    _, expected = read_weights(stage1_weights)
    initial = build_model(stage2).state_dict()
    assert all(torch.equal(initial[k], expected[k]) for k in expected)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(REPO / "training" / "finetune_outliers.py"), str(config_path),
                             "--init", str(stage1_weights)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    records = [r for r in read_metrics(tmp_path / "stage2" / "metrics.jsonl") if "loss" in r]
    assert len(records) == 3
    assert all(r["loss_ood"] > 0 and np.isfinite(r["loss_ood"]) for r in records)
    assert all(f"loss_ood_{i}" in records[0] for i in range(3))
    # The stage-2 samples really carry pasted outlier pixels.
    training_set = build_training_set(stage2, 19)
    assert any((training_set.sample(0, j)["semantic"] == 254).any() for j in range(2))


def test_stage2_without_init_is_a_clear_error(cityscapes, tmp_path):
    raw = tiny_config(cityscapes, tmp_path / "out", anomaly_mix={"pool": str(make_outlier_pool(tmp_path / "p"))},
                      loss={"outlier_weight": 1.0})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, str(REPO / "training" / "finetune_outliers.py"), str(path)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "stage-1 model" in result.stderr and "Traceback" not in result.stderr


def test_trainable_backbone_norm_learns_statistics_and_exports_the_inference_layout(cityscapes, tmp_path):
    from m2a_core.modeling import Mask2Anomaly
    from m2a_core.modeling.backbone import FrozenBatchNorm2d

    config = TrainConfig.from_dict(tiny_config(cityscapes, tmp_path / "out", solver={
        "max_iter": 3, "freeze_backbone": False, "trainable_backbone_norm": True}))
    training_model = build_model(config)
    norms = [m for m in training_model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(isinstance(m, FrozenBatchNorm2d) for m in training_model.backbone.modules())
    assert all(m.weight.requires_grad for m in norms)

    final = train(config)
    _, state = read_weights(final)
    assert not any(k.endswith("num_batches_tracked") for k in state)
    stem_var = state["backbone.stem.conv1.norm.running_var"]
    assert not torch.allclose(stem_var, torch.ones_like(stem_var))  # batch statistics were tracked
    # The exported file is the model's own layout: it loads strictly into the inference model, whose frozen
    # norms compute what torch's BatchNorm computes in eval mode with the same tensors.
    inference = Mask2Anomaly(config.model_config()).eval()
    inference.load_state_dict(state, strict=True)
    reference = Mask2Anomaly(config.model_config()).eval()
    from m2a_core.training.backbone_norms import thaw_batch_norms

    thaw_batch_norms(reference.backbone)
    reference.load_state_dict({**state, **{f"backbone.{n}.num_batches_tracked": torch.tensor(3)
                                           for n, m in reference.backbone.named_modules()
                                           if isinstance(m, torch.nn.BatchNorm2d)}}, strict=True)
    image = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        expected, got = reference.backbone(image), inference.backbone(image)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change,message", [
    ({"solver": {"max_iterations": 3}}, "unknown keys"),
    ({"optimiser": {}}, "unknown section"),
    ({"loss": {"outlier_weight": 1.0}}, "anomaly_mix.pool"),
    ({"model": {"backbone_depth": 7}}, "backbone_depth"),
    ({"device": "tpu"}, "device"),
    ({"augment": {"crop": [380]}}, "crop"),
    ({"loss": {"importance_sample_ratio": 1.5}}, "importance_sample_ratio"),
    ({"solver": {"trainable_backbone_norm": True}}, "trainable_backbone_norm"),  # with the frozen backbone
])
def test_config_errors_name_the_problem(tmp_path, change, message):
    raw = tiny_config(tmp_path, tmp_path / "out")
    raw.update(change)
    with pytest.raises(M2AError, match=message):
        TrainConfig.from_dict(raw)


def test_shipped_configs_parse():
    paths = sorted((REPO / "training" / "configs").glob("*.yaml"))
    assert len(paths) >= 6
    for path in paths:
        config = TrainConfig.from_yaml(path)
        assert config.model_config().num_classes >= 1, path
    # The official Cityscapes recipe (SPEC section 5).
    stage1 = TrainConfig.from_yaml(REPO / "training" / "configs" / "cityscapes_r50_stage1.yaml")
    assert (stage1.solver.lr, stage1.solver.batch_size, stage1.solver.max_iter) == (1e-4, 16, 90000)
    assert (stage1.solver.weight_decay, stage1.solver.clip_norm, stage1.solver.poly_power) == (0.05, 0.01, 0.9)
    assert stage1.augment.crop == [380, 760] and stage1.augment.short_sides == [int(x * 102.4) for x in range(5, 21)]
    assert (stage1.loss.num_points, stage1.loss.no_object_weight, stage1.loss.outlier_weight) == (12544, 0.1, 0.0)
    stage2 = TrainConfig.from_yaml(REPO / "training" / "configs" / "cityscapes_r50_stage2.yaml")
    assert (stage2.solver.lr, stage2.solver.batch_size, stage2.solver.max_iter) == (1e-5, 8, 5000)
    assert (stage2.anomaly_mix.probability, stage2.loss.outlier_weight, stage2.loss.outlier_margin) == (0.2, 1.0, 1.0)


def test_validation_miou_equals_a_direct_count(cityscapes, tmp_path):
    """mIoU over classes present, checked against sklearn's jaccard on the same predictions."""
    from sklearn.metrics import jaccard_score

    from m2a_core.inference import anomaly_maps
    from m2a_core.preprocess import normalize_and_pad, to_tensor
    from m2a_core.training.data import CityscapesTrain

    config = TrainConfig.from_dict(tiny_config(cityscapes, tmp_path, validation={
        "kind": "cityscapes", "root": str(cityscapes), "split": "val"}))
    torch.manual_seed(1)
    model = build_model(config)
    results = validate(model, config, torch.device("cpu"))
    truths, preds = [], []
    for sample in CityscapesTrain(cityscapes, "val"):
        batch = normalize_and_pad([to_tensor(sample.image, "cpu")], model.config.pixel_mean, model.config.pixel_std)
        with torch.no_grad():
            out = model.eval()(batch)
        size = sample.semantic.shape
        pred = anomaly_maps(out["pred_logits"][0], out["pred_masks"][0], tuple(batch.shape[-2:]), size, size).semseg
        valid = sample.semantic < 19
        truths.append(sample.semantic[valid])
        preds.append(pred.numpy()[valid])
    truth, pred = np.concatenate(truths), np.concatenate(preds)
    labels = np.union1d(truth, pred)
    expected = jaccard_score(truth, pred, labels=labels, average="macro", zero_division=0)
    assert results["val/mIoU"] == pytest.approx(expected, rel=1e-9)
    assert results["val/images"] == 2


def test_validation_anomaly_metrics_equal_sklearn(tmp_path):
    """StreetHazards-layout validation: AuPRC of the model's anomaly scores on the 254 pixels, as sklearn."""
    from PIL import Image
    from sklearn.metrics import average_precision_score
    from train_helpers import TINY_MODEL

    from m2a_core.inference import anomaly_maps
    from m2a_core.preprocess import normalize_and_pad, to_tensor
    from m2a_core.training.data import StreetHazardsTrain

    for sub in ("images/test/t5", "annotations/test/t5"):
        (tmp_path / "sh" / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(
            tmp_path / "sh" / f"images/test/t5/{i}.png")
        raw = rng.integers(1, 14, (64, 96)).astype(np.uint8)
        raw[10:20, 10 + 20 * i: 30 + 20 * i] = 14
        Image.fromarray(raw).save(tmp_path / "sh" / f"annotations/test/t5/{i}.png")
    config = TrainConfig.from_dict({"model": dict(TINY_MODEL, num_classes=12, classes="streethazards"),
                                    "validation": {"kind": "streethazards", "root": str(tmp_path / "sh")},
                                    "device": "cpu"})
    torch.manual_seed(0)
    model = build_model(config)
    results = validate(model, config, torch.device("cpu"))
    scores, labels = [], []
    for sample in StreetHazardsTrain(tmp_path / "sh"):
        batch = normalize_and_pad([to_tensor(sample.image, "cpu")], model.config.pixel_mean, model.config.pixel_std)
        with torch.no_grad():
            out = model.eval()(batch)
        size = sample.semantic.shape
        anomaly = anomaly_maps(out["pred_logits"][0], out["pred_masks"][0], tuple(batch.shape[-2:]), size, size)
        keep = (sample.semantic < 12) | (sample.semantic == 254)
        scores.append(anomaly.anomaly.numpy()[keep])
        labels.append(sample.semantic[keep] == 254)
    expected = average_precision_score(np.concatenate(labels), np.concatenate(scores))
    assert results["val/AuPRC"] == pytest.approx(expected, rel=1e-9)
    assert 0 <= results["val/FPR95"] <= 1 and 0 <= results["val/mIoU"] <= 1


def torchvision_names(backbone_state: dict) -> dict:
    """Our (detectron2) backbone names -> torchvision's, written independently of the converter."""
    import re

    out = {}
    for key, value in backbone_state.items():
        if key.startswith("stem.conv1.norm."):
            key = "bn1." + key[len("stem.conv1.norm."):]
        elif key == "stem.conv1.weight":
            key = "conv1.weight"
        else:
            stage, block, rest = re.match(r"res(\d)\.(\d+)\.(.+)", key).groups()
            rest = re.sub(r"^conv(\d)\.norm\.", r"bn\1.", rest)
            rest = rest.replace("shortcut.norm.", "downsample.1.").replace("shortcut.weight", "downsample.0.weight")
            key = f"layer{int(stage) - 1}.{block}.{rest}"
        out[key] = value
    return out


def test_stage1_starts_from_a_torchvision_backbone_and_resumes_without_it(cityscapes, tmp_path):
    torch.manual_seed(123)
    source = build_model(TrainConfig.from_dict(tiny_config(cityscapes, tmp_path)))
    state = {k: v + 0.01 * torch.randn_like(v) for k, v in source.backbone.state_dict().items()}
    torch.save(torchvision_names(state), tmp_path / "resnet18.pth")
    raw = tiny_config(cityscapes, tmp_path / "out", init={"backbone": str(tmp_path / "resnet18.pth")},
                      solver={"max_iter": 2})
    model = build_model(TrainConfig.from_dict(raw))
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in state.items())
    train(TrainConfig.from_dict(raw))
    (tmp_path / "resnet18.pth").unlink()
    raw["solver"]["max_iter"] = 3
    train(TrainConfig.from_dict(raw), resume=True)  # the checkpoint carries the weights: no init file needed
    with pytest.raises(M2AError, match="does not exist"):
        build_model(TrainConfig.from_dict(raw))
