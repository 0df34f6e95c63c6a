"""COCO preparation for training: the AnomalyMix outlier pool and the open-set panoptic splits.

Outlier pool (SPEC section 5): COCO train2017 images containing none of person, bicycle, car, motorcycle,
bus, truck, traffic light, stop sign (crowd annotations included in that check), both sides >= 480 px and
at least one annotated object; each becomes ``images/<stem>.jpg`` (the original file, copied byte for byte)
and ``ood_annotations/<stem>.png`` (uint8, 254 on the union of all its instance masks, 0 elsewhere). The
paper samples 300 such images (``num_images``); the official S1 set is one such sample.

Open-set splits (paper Sec. 7): the unknown thing classes are removed cumulatively, 5 %: car, cow, pizza,
toilet; 10 %: + boat, tie, zebra, stop sign; 20 %: + dining table, banana, bicycle, cake, sink, cat,
keyboard, bear. The split JSON lists the known categories only and drops the unknown segments from
``segments_info``, so their pixels are void in training; the PNG folder is shared through a symlink.

Masks are decoded without pycocotools: polygons are rasterised with PIL, RLE (uncompressed count lists and
the compressed string form) is decoded here.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from m2a_core.checkpoint import atomic_write
from m2a_core.datasets.coco_panoptic import OPEN_SET_SPLITS
from m2a_core.errors import DatasetError
from m2a_core.training.outlier_loss import OUTLIER_ID

CITYSCAPES_LIKE = ("person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light", "stop sign")
MIN_SIDE = 480
UNKNOWN_SPLITS = OPEN_SET_SPLITS  # the evaluation's definition of the splits


def decode_rle_string(counts: str) -> list[int]:
    """COCO's compressed RLE string (6 bits per char, continuation bit 0x20, deltas from the 3rd run on)."""
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            char = ord(counts[position]) - 48
            value |= (char & 0x1F) << (5 * shift)
            more = bool(char & 0x20)
            position += 1
            shift += 1
            if not more and char & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO instance segmentation (polygons or RLE) -> bool [height, width]."""
    if isinstance(segmentation, list):
        canvas = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        for polygon in segmentation:
            if len(polygon) >= 6:
                draw.polygon([(float(x), float(y)) for x, y in zip(polygon[::2], polygon[1::2], strict=True)],
                             fill=1)
        return np.asarray(canvas, dtype=bool)
    if isinstance(segmentation, dict) and "counts" in segmentation:
        counts = segmentation["counts"]
        runs = decode_rle_string(counts) if isinstance(counts, str) else [int(c) for c in counts]
        flat = np.zeros(height * width, dtype=bool)
        position, value = 0, False
        for run in runs:
            if value:
                flat[position: position + run] = True
            position += run
            value = not value
        if position != height * width:
            raise DatasetError(f"RLE covers {position} pixels, the image has {height * width}")
        return flat.reshape(width, height).T  # column-major
    raise DatasetError(f"unknown COCO segmentation format: {type(segmentation).__name__}")


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise DatasetError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{what} {path} is not valid JSON: {exc}") from None


def select_outlier_images(instances: dict, min_side: int = MIN_SIDE,
                          excluded: tuple[str, ...] = CITYSCAPES_LIKE) -> list[dict]:
    """Image records that qualify for the outlier pool, in id order."""
    try:
        names = {int(c["id"]): c["name"] for c in instances["categories"]}
        images = {int(i["id"]): i for i in instances["images"]}
        annotations = instances["annotations"]
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"not a COCO instances file: {exc}") from None
    missing = sorted(set(excluded) - set(names.values()))
    if missing:
        raise DatasetError(f"COCO categories {missing} are not in the instances file")
    excluded_ids = {cid for cid, name in names.items() if name in excluded}
    with_objects, rejected = set(), set()
    for ann in annotations:
        image_id = int(ann["image_id"])
        with_objects.add(image_id)
        if int(ann["category_id"]) in excluded_ids:
            rejected.add(image_id)
    return [images[i] for i in sorted(with_objects - rejected)
            if i in images and min(int(images[i]["height"]), int(images[i]["width"])) >= min_side]


def prepare_outlier_pool(instances_json: str | Path, image_dir: str | Path, out_dir: str | Path,
                         num_images: int | None = None, seed: int = 0, min_side: int = MIN_SIDE) -> list[str]:
    """Write the pool; returns the stems written. ``num_images``: a seeded random sample (paper: 300)."""
    instances = read_json(Path(instances_json), "COCO instances file")
    image_dir, out_dir = Path(image_dir), Path(out_dir)
    if not image_dir.is_dir():
        raise DatasetError(f"COCO image folder {image_dir} does not exist")
    selected = select_outlier_images(instances, min_side)
    if not selected:
        raise DatasetError(f"no image of {instances_json} qualifies for the outlier pool")
    if num_images is not None and num_images < len(selected):
        order = np.random.default_rng(seed).permutation(len(selected))[:num_images]
        selected = [selected[i] for i in sorted(order)]
    by_image: dict[int, list] = {}
    for ann in instances["annotations"]:
        by_image.setdefault(int(ann["image_id"]), []).append(ann["segmentation"])
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "ood_annotations").mkdir(parents=True, exist_ok=True)
    stems = []
    for record in tqdm(selected, desc="outlier pool"):
        height, width = int(record["height"]), int(record["width"])
        union = np.zeros((height, width), dtype=bool)
        for segmentation in by_image.get(int(record["id"]), []):
            union |= decode_segmentation(segmentation, height, width)
        if not union.any():
            continue
        source = image_dir / record["file_name"]
        if not source.is_file():
            raise DatasetError(f"COCO image {source} does not exist")
        stem = Path(record["file_name"]).stem
        label = Image.fromarray(np.where(union, OUTLIER_ID, 0).astype(np.uint8))
        atomic_write(out_dir / "images" / f"{stem}{source.suffix}", lambda tmp, s=source: shutil.copyfile(s, tmp))
        atomic_write(out_dir / "ood_annotations" / f"{stem}.png", lambda tmp, im=label: im.save(tmp, format="PNG"))
        stems.append(stem)
    manifest = {"source": str(instances_json), "num_images": len(stems), "seed": seed, "min_side": min_side,
                "excluded_categories": list(CITYSCAPES_LIKE), "stems": stems}
    atomic_write(out_dir / "manifest.json", lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))
    return stems


def make_openset_split(panoptic_json: str | Path, unknown_percent: int, out_name: str | None = None) -> Path:
    """Write ``<name>_unknown<P>.json`` next to the panoptic JSON (and a PNG-folder symlink); returns it."""
    if unknown_percent not in UNKNOWN_SPLITS:
        raise DatasetError(f"unknown split {unknown_percent} %: choose one of {sorted(UNKNOWN_SPLITS)}")
    panoptic_json = Path(panoptic_json)
    data = read_json(panoptic_json, "COCO panoptic file")
    try:
        categories = data["categories"]
        names = {c["name"]: int(c["id"]) for c in categories}
    except (KeyError, TypeError) as exc:
        raise DatasetError(f"{panoptic_json} is not a COCO panoptic file: {exc}") from None
    unknown_names = UNKNOWN_SPLITS[unknown_percent]
    missing = sorted(set(unknown_names) - set(names))
    if missing:
        raise DatasetError(f"{panoptic_json}: categories {missing} are missing")
    unknown_ids = {names[n] for n in unknown_names}
    split = dict(data)
    split["categories"] = [c for c in categories if int(c["id"]) not in unknown_ids]
    split["unknown_categories"] = [c for c in categories if int(c["id"]) in unknown_ids]
    split["annotations"] = [
        dict(ann, segments_info=[s for s in ann["segments_info"] if int(s["category_id"]) not in unknown_ids])
        for ann in data["annotations"]]
    name = out_name or f"{panoptic_json.stem}_unknown{unknown_percent}"
    out_json = panoptic_json.with_name(f"{name}.json")
    atomic_write(out_json, lambda tmp: Path(tmp).write_text(json.dumps(split)))
    # The PNGs stay where they are (next to the JSON, or detectron2's <root>/<name>/); the split's PNG folder
    # is a relative symlink beside them.
    for png_dir in (panoptic_json.with_suffix(""), panoptic_json.parent.parent / panoptic_json.stem):
        link = png_dir.with_name(name)
        if png_dir.is_dir():
            if not link.exists():
                os.symlink(png_dir.name, link, target_is_directory=True)
            break
    return out_json
