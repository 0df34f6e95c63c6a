"""Dataset readers on tiny copies of each public layout, written to tmp_path."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from m2a_core.classes import IGNORE_ID, UNKNOWN_ID
from m2a_core.datasets import DATASET_NAMES, open_dataset
from m2a_core.errors import DatasetError

RAW = np.array([[0, 1, 2, 3], [4, 13, 14, 255]], np.uint8)


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def image(seed: int = 0, shape=(2, 4)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*shape, 3), dtype=np.uint8)


def read_all(name: str, root: Path):
    dataset = open_dataset(name, root)
    return dataset, {n: (im, lab) for n, im, lab in dataset}


def test_road_anomaly_both_layouts(tmp_path: Path) -> None:
    save(tmp_path / "a" / "images" / "x.jpg", image())
    save(tmp_path / "a" / "labels_masks" / "x.png", RAW)
    save(tmp_path / "b" / "frames" / "x.jpg", image())
    save(tmp_path / "b" / "frames" / "x.labels" / "labels_semantic.png", RAW)
    for root in (tmp_path / "a", tmp_path / "b"):
        _, frames = read_all("road_anomaly", root)
        labels = frames["x"][1]
        assert labels.tolist() == [[0, 1, 1, 255], [255, 255, 255, 255]]


@pytest.mark.parametrize("name", ["fs_lost_and_found", "fs_static"])
def test_fishyscapes(tmp_path: Path, name: str) -> None:
    save(tmp_path / "images" / "a.png", image())
    save(tmp_path / "labels_masks" / "a.png", RAW)
    dataset, frames = read_all(name, tmp_path)
    assert frames["a"][1].tolist() == [[0, 1, 255, 255], [255, 255, 255, 255]]
    assert frames["a"][0].shape == (2, 4, 3) and frames["a"][0].dtype == np.uint8


def test_smiyc_uses_labelled_frames_only(tmp_path: Path) -> None:
    root = tmp_path / "dataset_ObstacleTrack"
    save(root / "images" / "validation_1.webp", image())
    save(root / "images" / "test_1.webp", image(1))
    save(root / "labels_masks" / "validation_1_labels_semantic.png", np.array([[0, 1, 255, 0]] * 2, np.uint8))
    dataset, frames = read_all("smiyc_obstacle", root)
    assert list(frames) == ["validation_1"] and dataset.track == "obstacle"
    assert open_dataset("smiyc_anomaly", root).track == "anomaly"


def test_lost_and_found_mapping_and_names(tmp_path: Path) -> None:
    save(tmp_path / "leftImg8bit" / "test" / "02_Hanns" / "02_Hanns_000001_000010_leftImg8bit.png", image())
    raw = np.array([[0, 1, 2, 200], [201, 1, 1, 0]], np.uint8)
    save(tmp_path / "gtCoarse" / "test" / "02_Hanns" / "02_Hanns_000001_000010_gtCoarse_labelIds.png", raw)
    dataset, frames = read_all("lost_and_found", tmp_path)
    assert list(frames) == ["02_Hanns_02_Hanns_000001_000010"]
    assert next(iter(frames.values()))[1].tolist() == [[255, 0, 1, 1], [255, 0, 0, 255]]


def make_street_hazards(root: Path) -> None:
    for town in ("t5", "t6"):
        save(root / "test" / "images" / "test" / town / "300.png", image())
        save(root / "test" / "annotations" / "test" / town / "300.png", RAW + 1 - (RAW == 255))


def test_street_hazards_anomaly_and_semantic_views(tmp_path: Path) -> None:
    make_street_hazards(tmp_path)
    # raw + 1: [[1, 2, 3, 4], [5, 14, 15, 255]] -> unlabelled 1 and "other" 4 void, 14 anomaly.
    _, frames = read_all("street_hazards", tmp_path)
    assert sorted(frames) == ["t5_300", "t6_300"]
    assert frames["t5_300"][1].tolist() == [[255, 0, 0, 255], [0, 1, 255, 255]]
    dataset, frames = read_all("street_hazards_semantic", tmp_path)
    # DenseHybrid's classes: raw 1 background (0), 2 building, 3 fence, 4 "other" void, 5 pedestrian (3).
    assert frames["t6_300"][1].tolist() == [[0, 1, 2, IGNORE_ID], [3, UNKNOWN_ID, IGNORE_ID, IGNORE_ID]]
    assert dataset.kind == "semantic" and len(dataset.class_names) == 12


def test_cityscapes_train_ids(tmp_path: Path) -> None:
    save(tmp_path / "leftImg8bit" / "val" / "lindau" / "lindau_000000_000019_leftImg8bit.png", image())
    label = tmp_path / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelTrainIds.png"
    save(label, np.array([[0, 18, 255, 5]] * 2, np.uint8))
    dataset, frames = read_all("cityscapes", tmp_path)
    assert frames["lindau_lindau_000000_000019"][1].tolist() == [[0, 18, 255, 5]] * 2
    save(label, np.array([[0, 26, 255, 5]] * 2, np.uint8))  # labelIds, not trainIds
    with pytest.raises(DatasetError, match="trainIds"):
        list(open_dataset("cityscapes", tmp_path))


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset("fs_static", tmp_path / "missing")
    with pytest.raises(DatasetError, match="unknown dataset"):
        open_dataset("imagenet", tmp_path)
    with pytest.raises(DatasetError, match="labels_masks"):
        save(tmp_path / "images" / "a.png", image())
        open_dataset("fs_static", tmp_path)
    (tmp_path / "labels_masks").mkdir()
    with pytest.raises(DatasetError, match="no label file"):
        open_dataset("fs_static", tmp_path)
    save(tmp_path / "labels_masks" / "a.png", np.zeros((3, 3), np.uint8))
    with pytest.raises(DatasetError, match="labels"):
        list(open_dataset("fs_static", tmp_path))  # size mismatch
    (tmp_path / "images" / "a.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="cannot read image"):
        list(open_dataset("fs_static", tmp_path))
    with pytest.raises(DatasetError, match="t6"):
        save(tmp_path / "sh" / "test" / "images" / "test" / "t5" / "1.png", image())
        save(tmp_path / "sh" / "test" / "annotations" / "test" / "t5" / "1.png", RAW)
        open_dataset("street_hazards", tmp_path / "sh")


def test_every_dataset_name_has_a_reader() -> None:
    assert {"road_anomaly", "fs_lost_and_found", "fs_static", "smiyc_anomaly", "smiyc_obstacle",
            "lost_and_found", "street_hazards", "cityscapes"} <= set(DATASET_NAMES)


def make_coco(root: Path, categories: list[dict]) -> None:
    import json

    save(root / "val2017" / "000000000139.jpg", image(shape=(2, 3)))
    ids = np.array([[1, 1, 300], [300, 0, 70000]], np.int64)
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    save(root / "annotations" / "panoptic_val2017" / "000000000139.png", rgb)
    annotation = {
        "images": [{"id": 139, "file_name": "000000000139.jpg"}],
        "categories": categories,
        "annotations": [{"image_id": 139, "file_name": "000000000139.png", "segments_info": [
            {"id": 1, "category_id": 3, "iscrowd": 0}, {"id": 300, "category_id": 1, "iscrowd": 0},
            {"id": 70000, "category_id": 184, "iscrowd": 1}]}],
    }
    (root / "annotations" / "panoptic_val2017.json").write_text(json.dumps(annotation))


COCO_CATEGORIES = [{"id": 1, "name": "person", "isthing": 1}, {"id": 3, "name": "car", "isthing": 1},
                   {"id": 21, "name": "cow", "isthing": 1}, {"id": 59, "name": "pizza", "isthing": 1},
                   {"id": 70, "name": "toilet", "isthing": 1}, {"id": 184, "name": "tree-merged", "isthing": 0}]


def test_coco_panoptic_open_set_split(tmp_path: Path) -> None:
    from m2a_core.datasets.coco_panoptic import OPEN_SET_SPLITS, UNKNOWN_CATEGORY, CocoPanoptic
    from m2a_core.metrics.panoptic import Segment

    assert [len(OPEN_SET_SPLITS[p]) for p in (5, 10, 20)] == [4, 8, 16]   # 5/10/20 % of 80 thing classes
    make_coco(tmp_path, COCO_CATEGORIES)
    closed = CocoPanoptic(tmp_path)
    name, _, ids, segments = next(iter(closed))
    assert name == "000000000139"
    assert ids.tolist() == [[1, 1, 300], [300, 0, 70000]]
    assert segments[1] == Segment(3) and segments[70000] == Segment(184, iscrowd=True)
    open_set = CocoPanoptic(tmp_path, unknown_percent=5)
    _, _, _, segments = next(iter(open_set))
    assert segments[1] == Segment(UNKNOWN_CATEGORY) and segments[300] == Segment(1)
    categories, things = open_set.eval_categories()
    assert 3 not in categories and things == {1}


def test_coco_panoptic_errors(tmp_path: Path) -> None:
    from m2a_core.datasets.coco_panoptic import CocoPanoptic

    with pytest.raises(DatasetError, match="panoptic_val2017.json"):
        CocoPanoptic(tmp_path)
    make_coco(tmp_path, COCO_CATEGORIES)
    with pytest.raises(DatasetError, match="split 7"):
        CocoPanoptic(tmp_path, unknown_percent=7)
    with pytest.raises(DatasetError, match="boat"):
        CocoPanoptic(tmp_path, unknown_percent=10)
    (tmp_path / "annotations" / "panoptic_val2017.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not a COCO panoptic"):
        CocoPanoptic(tmp_path)
