"""AnomalyMix, augmentation, training dataset readers, deterministic sampling, optimiser and checkpoints."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image
from train_helpers import PALETTE, TINY_MODEL, make_cityscapes, make_outlier_pool

from m2a_core.config import ModelConfig
from m2a_core.errors import CheckpointError, DatasetError
from m2a_core.modeling import Mask2Anomaly
from m2a_core.training import checkpointing
from m2a_core.training.anomalymix import AnomalyMix, OutlierObject, OutlierPool, crop_to_object, paste_object
from m2a_core.training.augment import AugmentConfig, augment, photometric_distortion
from m2a_core.training.data import (
    CityscapesTrain,
    CocoPanopticTrain,
    StreetHazardsTrain,
    TrainingSet,
    targets_from_semantic,
)
from m2a_core.training.optim import build_optimizer, build_scheduler, param_groups


# -- AnomalyMix -------------------------------------------------------------------------------------------
def test_paste_copies_only_object_pixels_and_labels_them_254():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, size=(50, 70, 3), dtype=np.uint8)
    label = rng.integers(0, 19, size=(50, 70)).astype(np.uint8)
    obj_image = np.full((40, 60, 3), 7, dtype=np.uint8)
    obj_mask = np.zeros((40, 60), dtype=bool)
    obj_mask[5:20, 10:30] = True
    obj_mask[8:12, 12:16] = False
    obj = crop_to_object(obj_image, obj_mask)
    assert obj.mask.shape == (15, 20) and obj.mask.sum() == obj_mask.sum()
    new_image, new_label = paste_object(frame, label, obj, rng)
    changed = new_label == 254
    assert changed.sum() == obj_mask.sum()
    assert np.all(new_image[changed] == 7)
    np.testing.assert_array_equal(new_image[~changed], frame[~changed])
    np.testing.assert_array_equal(new_label[~changed], label[~changed])
    # The pasted pixels form the object's shape (hole included) somewhere in the frame.
    rows, cols = np.nonzero(changed)
    np.testing.assert_array_equal(changed[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1], obj.mask)
    assert frame is not new_image and not np.shares_memory(frame, new_image)


def test_paste_of_an_object_larger_than_the_frame_keeps_a_frame_sized_part():
    rng = np.random.default_rng(1)
    obj = OutlierObject(image=np.full((80, 90, 3), 3, np.uint8), mask=np.ones((80, 90), bool))
    image, label = paste_object(np.zeros((30, 40, 3), np.uint8), np.zeros((30, 40), np.uint8), obj, rng)
    assert np.all(label == 254) and np.all(image == 3)


def test_anomaly_mix_probability_and_pool(tmp_path):
    pool = OutlierPool(make_outlier_pool(tmp_path / "pool"))
    assert len(pool) == 3
    frame, label = np.zeros((100, 120, 3), np.uint8), np.ones((100, 120), np.uint8)
    rng = np.random.default_rng(2)
    never = AnomalyMix(pool, probability=0.0)
    assert all(not never(frame, label, rng)[2] for _ in range(20))
    always = AnomalyMix(pool, probability=1.0)
    image, new_label, pasted = always(frame, label, rng)
    assert pasted and (new_label == 254).sum() > 0
    assert set(np.unique(new_label)) == {1, 254}
    mixed = AnomalyMix(pool, probability=0.2)
    rate = np.mean([mixed(frame, label, rng)[2] for _ in range(2000)])
    assert 0.17 < rate < 0.23


def test_outlier_pool_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetError, match="ood_annotations"):
        OutlierPool(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "ood_annotations").mkdir()
    with pytest.raises(DatasetError, match="no .png"):
        OutlierPool(tmp_path)


# -- augmentation ------------------------------------------------------------------------------------------
def test_augmentation_keeps_labels_on_their_pixels():
    """Without photometric distortion, every pixel deep inside a label block keeps that label's colour."""
    rng = np.random.default_rng(3)
    grid = rng.integers(0, 5, size=(6, 12))
    label = np.kron(grid, np.ones((20, 20), dtype=np.int64)).astype(np.uint8)
    image = PALETTE[label]
    config = AugmentConfig(short_sides=(60, 120, 200), max_size=1000, crop=(50, 90), photometric=False)
    for seed in range(6):
        out_image, out_label = augment(image, label, config, np.random.default_rng(seed))
        assert out_image.shape[:2] == out_label.shape == (50, 90)
        assert set(np.unique(out_label)) <= set(range(5))
        padded = np.pad(out_label, 2, constant_values=255)  # crop borders are not interior
        interior = np.ones_like(out_label, dtype=bool)
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                interior &= padded[2 + dy: 2 + dy + 50, 2 + dx: 2 + dx + 90] == out_label
        np.testing.assert_array_equal(out_image[interior], PALETTE[out_label[interior]])


def test_class_uniform_crops_find_a_small_class_as_often_as_a_large_one():
    """A 4x4 patch of class 7 in a 200x400 frame of class 1, void elsewhere on one side: a uniform 50x100
    crop holds the patch 11 % of the time (window positions holding it / all positions); class-uniform crops
    draw class 1 or 7 with probability 1/2 each, so about half hold it (+ the uniform share of the rest)."""
    label = np.ones((200, 400), np.int64)
    label[:, :40] = 255
    label[150:154, 300:304] = 7
    label += 256 * 3   # packed segment ids above the class, as TrainingSet passes them
    image = np.zeros((200, 400, 3), np.uint8)
    plain = AugmentConfig(short_sides=(200,), max_size=400, crop=(50, 100), photometric=False, flip=False)
    focused = AugmentConfig(short_sides=(200,), max_size=400, crop=(50, 100), photometric=False, flip=False,
                            class_uniform=1.0)
    trials = 400
    hits = {}
    for name, config in (("plain", plain), ("focused", focused)):
        count = 0
        for seed in range(trials):
            _, out = augment(image, label, config, np.random.default_rng(seed), classes_of=lambda m: m % 256)
            assert out.shape == (50, 100)
            count += bool(((out % 256) == 7).any())
        hits[name] = count / trials
    # Windows holding a patch pixel: top in 101..150 (rows 150..153, at most 150), left in 201..300.
    expected_plain = (50 * 100) / (151 * 301)
    assert abs(hits["plain"] - expected_plain) < 0.04
    assert abs(hits["focused"] - (0.5 + 0.5 * expected_plain)) < 0.08
    # Void is never the drawn class: a frame of void only falls back to a uniform crop.
    _, out = augment(image, np.full((200, 400), 255, np.int64), focused, np.random.default_rng(0))
    assert out.shape == (50, 100)
    with pytest.raises(ValueError, match="class_uniform"):
        AugmentConfig(class_uniform=1.5)


def test_short_side_resize_follows_detectron2_rule():
    image, label = np.zeros((100, 200, 3), np.uint8), np.zeros((100, 200), np.uint8)
    config = AugmentConfig(short_sides=(150,), max_size=250, crop=None, photometric=False, flip=False)
    out, _ = augment(image, label, config, np.random.default_rng(0))
    assert out.shape[:2] == (125, 250)  # 150 x 300 capped at a long side of 250


def test_photometric_distortion_changes_colours_not_shape():
    image = np.random.default_rng(0).integers(0, 255, size=(20, 30, 3), dtype=np.uint8)
    outputs = [photometric_distortion(image, np.random.default_rng(s)) for s in range(8)]
    assert all(o.shape == image.shape and o.dtype == np.uint8 for o in outputs)
    assert any(not np.array_equal(o, image) for o in outputs)


# -- dataset readers ---------------------------------------------------------------------------------------
def test_cityscapes_reader_converts_label_ids(tmp_path):
    make_cityscapes(tmp_path / "a", count=2, seed=5)
    make_cityscapes(tmp_path / "b", count=2, seed=5, label_ids=True)
    a, b = CityscapesTrain(tmp_path / "a"), CityscapesTrain(tmp_path / "b")
    assert len(a) == len(b) == 2
    for i in range(2):
        np.testing.assert_array_equal(a[i].semantic, b[i].semantic)
        np.testing.assert_array_equal(a[i].image, b[i].image)


def test_cityscapes_reader_errors(tmp_path):
    with pytest.raises(DatasetError, match="leftImg8bit"):
        CityscapesTrain(tmp_path)
    make_cityscapes(tmp_path, count=1)
    next((tmp_path / "gtFine").rglob("*.png")).unlink()
    with pytest.raises(DatasetError, match="no gtFine label"):
        CityscapesTrain(tmp_path)


def test_streethazards_reader_maps_raw_values(tmp_path):
    for sub in ("images/training/t1-3/town", "annotations/training/t1-3/town"):
        (tmp_path / sub).mkdir(parents=True)
    raw = np.array([[1, 2, 3, 13], [14, 8, 9, 1]], dtype=np.uint8)
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(tmp_path / "images/training/t1-3/town/000.png")
    Image.fromarray(raw).save(tmp_path / "annotations/training/t1-3/town/000.png")
    semantic = StreetHazardsTrain(tmp_path)[0].semantic
    # Raw 1 unlabeled -> background 0, 2 building -> 1, 3 fence -> 2, 13 traffic sign -> 11, 14 anomaly -> 254,
    # 8 road -> 6, 9 sidewalk -> 7 (the evaluation's 12-class protocol); "other" (raw 4) would be void.
    np.testing.assert_array_equal(semantic, [[0, 1, 2, 11], [254, 6, 7, 0]])


def test_coco_panoptic_reader_gives_one_target_per_segment_and_voids_crowd(tmp_path):
    (tmp_path / "annotations" / "pan").mkdir(parents=True)
    (tmp_path / "images").mkdir()
    ids = np.zeros((4, 6), dtype=np.int64)
    ids[:, :2], ids[:, 2:4], ids[:2, 4:], ids[2:, 4:] = 1000, 2000, 70000, 5
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "annotations" / "pan" / "000000000001.png")
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "images" / "000000000001.jpg")
    data = {"categories": [{"id": 1, "name": "person", "isthing": 1}, {"id": 184, "name": "tree", "isthing": 0}],
            "annotations": [{"file_name": "000000000001.png", "image_id": 1, "segments_info": [
                {"id": 1000, "category_id": 1, "iscrowd": 0}, {"id": 2000, "category_id": 1, "iscrowd": 0},
                {"id": 70000, "category_id": 184, "iscrowd": 0}, {"id": 5, "category_id": 1, "iscrowd": 1}]}]}
    (tmp_path / "annotations" / "pan.json").write_text(json.dumps(data))
    dataset = CocoPanopticTrain(tmp_path, annotations="pan", images="images")
    sample = dataset[0]
    assert dataset.num_classes == 2
    assert sorted(sample.segment_classes.values()) == [0, 0, 1]
    expected = np.full((4, 6), 255)
    expected[:, :4], expected[:2, 4:] = 0, 1
    np.testing.assert_array_equal(sample.semantic, expected)
    assert len(np.unique(sample.segments[sample.segments > 0])) == 3


def test_targets_from_semantic_skip_void_and_outliers():
    semantic = np.array([[0, 0, 254], [3, 255, 3]], dtype=np.uint8)
    classes, masks = targets_from_semantic(semantic, 19)
    assert classes.tolist() == [0, 3]
    np.testing.assert_array_equal(masks[1], semantic == 3)


def test_training_samples_are_a_function_of_seed_iteration_and_position(tmp_path):
    dataset = CityscapesTrain(make_cityscapes(tmp_path, count=5))
    config = AugmentConfig(short_sides=(64, 96), max_size=400, crop=(64, 128))
    a = TrainingSet(dataset, 19, config, seed=1, global_batch=2)
    b = TrainingSet(dataset, 19, config, seed=1, global_batch=2)
    for iteration, position in ((0, 0), (3, 1), (7, 0)):
        sa, sb = a.sample(iteration, position), b.sample(iteration, position)
        assert torch.equal(sa["image"], sb["image"]) and torch.equal(sa["masks"], sb["masks"])
    assert not torch.equal(a.sample(0, 0)["image"], a.sample(0, 1)["image"])
    # Epoch-wise shuffling visits every image once per epoch (5 images, batch 2).
    seen = [a.dataset_index(k // 2, k % 2) for k in range(10)]
    assert sorted(seen[:5]) == list(range(5)) and sorted(seen[5:]) == list(range(5))


# -- optimiser and checkpoints ------------------------------------------------------------------------------
def test_param_groups_follow_the_official_rules():
    model = Mask2Anomaly(ModelConfig(**TINY_MODEL))
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    groups = param_groups(model, lr=1e-4, weight_decay=0.05)
    by_name = {name: (g["lr"], g["weight_decay"]) for g in groups for name in g["names"]}
    assert not any(name.startswith("backbone.") for name in by_name)
    assert by_name["predictor.query_feat.weight"] == (1e-4, 0.0)          # nn.Embedding
    assert by_name["predictor.decoder_norm.weight"] == (1e-4, 0.0)        # LayerNorm
    assert by_name["pixel_decoder.adapter_1.norm.weight"] == (1e-4, 0.0)  # GroupNorm
    assert by_name["predictor.class_embed.weight"] == (1e-4, 0.05)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(by_name) == trainable


def test_poly_schedule():
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, lr=0.1)
    scheduler = build_scheduler(optimizer, max_iter=10, power=0.9)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(lrs, [0.1 * (1 - i / 10) ** 0.9 for i in range(10)], rtol=1e-12)


def test_checkpoint_round_trip_restores_everything(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = build_optimizer(model, lr=0.1)
    scheduler = build_scheduler(optimizer, max_iter=10)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    path = tmp_path / "ckpt.pt"
    checkpointing.save_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=None,
                                  iteration=1, config={"seed": 3})
    expected = (random.random(), np.random.rand(), torch.rand(1))
    other = torch.nn.Linear(3, 2)
    other_opt = build_optimizer(other, lr=0.1)
    other_sched = build_scheduler(other_opt, max_iter=10)
    iteration = checkpointing.restore(checkpointing.load_checkpoint(path), model=other, optimizer=other_opt,
                                      scheduler=other_sched, scaler=None)
    assert iteration == 1
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    assert torch.equal(other.weight, model.weight)
    assert other_opt.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    state = other_opt.state_dict()["state"][0]
    assert torch.equal(state["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpointing.load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        checkpointing.load_checkpoint(tmp_path / "bad.pt")
    torch.save({"model": {}}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="missing"):
        checkpointing.load_checkpoint(tmp_path / "partial.pt")
