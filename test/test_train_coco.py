"""COCO preparation: mask decoding, the outlier pool and the open-set panoptic splits, on tiny COCO files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from m2a_core.errors import DatasetError
from m2a_core.training.anomalymix import OutlierPool
from m2a_core.training.coco import UNKNOWN_SPLITS, decode_segmentation, make_openset_split, prepare_outlier_pool
from m2a_core.training.data import CocoPanopticTrain

REPO = Path(__file__).resolve().parents[1]


def encode_rle_string(mask: np.ndarray) -> str:
    """pycocotools' rleToString, written from its description: column-major runs starting with zeros."""
    flat = mask.T.reshape(-1).astype(np.uint8)
    runs, value, count = [], 0, 0
    for pixel in flat:
        if pixel != value:
            runs.append(count)
            value, count = pixel, 0
        count += 1
    runs.append(count)
    text = ""
    for i, run in enumerate(runs):
        x = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            text += chr((c | 0x20 if more else c) + 48)
    return text


def test_rle_and_polygon_decoding():
    rng = np.random.default_rng(0)
    mask = rng.uniform(size=(13, 17)) > 0.6
    mask[:, :3] = True
    decoded = decode_segmentation({"counts": encode_rle_string(mask), "size": [13, 17]}, 13, 17)
    np.testing.assert_array_equal(decoded, mask)
    runs = [0]  # uncompressed form: the same runs as a list
    flat = mask.T.reshape(-1)
    for a, b in zip(flat[:-1], flat[1:], strict=True):
        runs[-1] += 1
        if a != b:
            runs.append(0)
    runs[-1] += 1
    if flat[0]:
        runs = [0] + runs
    np.testing.assert_array_equal(decode_segmentation({"counts": runs, "size": [13, 17]}, 13, 17), mask)
    square = decode_segmentation([[2, 3, 8, 3, 8, 6, 2, 6]], 10, 12)
    expected = np.zeros((10, 12), bool)
    expected[3:7, 2:9] = True
    np.testing.assert_array_equal(square, expected)


def write_instances(root: Path) -> Path:
    """Four images: a valid one (two objects), one with a person, one too small, one valid with a crowd RLE."""
    (root / "train2017").mkdir(parents=True)
    sizes = {1: (500, 600), 2: (500, 600), 3: (300, 600), 4: (520, 480)}
    for image_id, (h, w) in sizes.items():
        Image.fromarray(np.full((h, w, 3), image_id * 40, np.uint8)).save(root / "train2017" / f"{image_id:012d}.jpg")
    crowd = np.zeros((520, 480), bool)
    crowd[100:200, 50:60] = True
    instances = {
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(
            ["person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light", "stop sign", "dog"])],
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "height": h, "width": w} for i, (h, w) in sizes.items()],
        "annotations": [
            {"image_id": 1, "category_id": 9, "iscrowd": 0, "segmentation": [[10, 10, 100, 10, 100, 50, 10, 50]]},
            {"image_id": 1, "category_id": 9, "iscrowd": 0, "segmentation": [[200, 200, 250, 200, 250, 300]]},
            {"image_id": 2, "category_id": 9, "iscrowd": 0, "segmentation": [[10, 10, 100, 10, 100, 50]]},
            {"image_id": 2, "category_id": 1, "iscrowd": 0, "segmentation": [[300, 10, 400, 10, 400, 50]]},
            {"image_id": 3, "category_id": 9, "iscrowd": 0, "segmentation": [[10, 10, 100, 10, 100, 50]]},
            {"image_id": 4, "category_id": 9, "iscrowd": 1,
             "segmentation": {"counts": encode_rle_string(crowd), "size": [520, 480]}},
        ],
    }
    path = root / "instances_train2017.json"
    path.write_text(json.dumps(instances))
    return path, instances


def test_outlier_pool_selects_images_and_writes_object_unions(tmp_path):
    instances_path, instances = write_instances(tmp_path / "coco")
    stems = prepare_outlier_pool(instances_path, tmp_path / "coco" / "train2017", tmp_path / "pool")
    assert stems == ["000000000001", "000000000004"]
    for stem in stems:
        image_id = int(stem)
        record = next(i for i in instances["images"] if i["id"] == image_id)
        expected = np.zeros((record["height"], record["width"]), bool)
        for ann in instances["annotations"]:
            if ann["image_id"] == image_id:
                expected |= decode_segmentation(ann["segmentation"], record["height"], record["width"])
        label = np.asarray(Image.open(tmp_path / "pool" / "ood_annotations" / f"{stem}.png"))
        np.testing.assert_array_equal(label == 254, expected)
        assert set(np.unique(label)) == {0, 254}
        assert (tmp_path / "pool" / "images" / f"{stem}.jpg").read_bytes() == (
            tmp_path / "coco" / "train2017" / f"{stem}.jpg").read_bytes()
    pool = OutlierPool(tmp_path / "pool")
    obj = pool.load(0)
    # Cropped to the union's box: rows 10..300 and columns 10..250 of image 1.
    written = np.asarray(Image.open(tmp_path / "pool" / "ood_annotations" / "000000000001.png")) == 254
    assert obj.mask.shape == (291, 241) and obj.mask.sum() == written.sum()
    sample = prepare_outlier_pool(instances_path, tmp_path / "coco" / "train2017", tmp_path / "pool1", num_images=1)
    assert len(sample) == 1 and sample[0] in stems


def test_outlier_pool_cli_errors(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "training" / "prepare_coco_outliers.py"), "--instances",
                             str(tmp_path / "missing.json"), "--images", str(tmp_path), "--out", str(tmp_path / "o")],
                            env={"PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_openset_split_removes_unknown_classes(tmp_path):
    names = sorted({n for split in UNKNOWN_SPLITS.values() for n in split}) + ["person", "sky"]
    categories = [{"id": i + 1, "name": n, "isthing": int(n != "sky")} for i, n in enumerate(names)]
    ids = {c["name"]: c["id"] for c in categories}
    annotations = tmp_path / "annotations"
    (annotations / "panoptic_train2017").mkdir(parents=True)
    (tmp_path / "train2017").mkdir()
    segment_map = np.zeros((4, 6), np.int64)
    segment_map[:, :2], segment_map[:, 2:4], segment_map[:, 4:] = 11, 22, 33
    rgb = np.stack([segment_map % 256, segment_map // 256 % 256, segment_map // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(annotations / "panoptic_train2017" / "000000000001.png")
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "train2017" / "000000000001.jpg")
    data = {"categories": categories, "images": [{"id": 1, "file_name": "000000000001.jpg"}],
            "annotations": [{"image_id": 1, "file_name": "000000000001.png", "segments_info": [
                {"id": 11, "category_id": ids["car"], "iscrowd": 0},
                {"id": 22, "category_id": ids["person"], "iscrowd": 0},
                {"id": 33, "category_id": ids["sky"], "iscrowd": 0}]}]}
    (annotations / "panoptic_train2017.json").write_text(json.dumps(data))
    out = make_openset_split(annotations / "panoptic_train2017.json", 5)
    split = json.loads(out.read_text())
    assert {c["name"] for c in split["unknown_categories"]} == set(UNKNOWN_SPLITS[5])
    assert len(split["categories"]) == len(categories) - 4
    dataset = CocoPanopticTrain(tmp_path, annotations=out.stem)
    sample = dataset[0]
    known = [c["name"] for c in split["categories"]]
    expected = np.full((4, 6), 255)
    expected[:, 2:4], expected[:, 4:] = known.index("person"), known.index("sky")
    np.testing.assert_array_equal(sample.semantic, expected)
    assert sorted(sample.segment_classes.values()) == sorted([known.index("person"), known.index("sky")])
    twenty = json.loads(make_openset_split(annotations / "panoptic_train2017.json", 20).read_text())
    assert len(twenty["categories"]) == 2
    with pytest.raises(DatasetError, match="choose one of"):
        make_openset_split(annotations / "panoptic_train2017.json", 15)
