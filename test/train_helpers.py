"""Tiny datasets in the real folder layouts and tiny configs for the training tests."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from helpers import TINY

# The shared compact test model (helpers.TINY) as YAML-friendly config values (sizes; tuples left at defaults).
TINY_MODEL = {name: value for name, value in asdict(TINY).items() if not isinstance(value, (tuple, list))}

# A colour per trainId so tests can check that labels follow their pixels.
PALETTE = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30], [200, 30, 200]], dtype=np.uint8)


def block_label(rng: np.random.Generator, height: int, width: int, classes=(0, 1, 2, 3), block: int = 16
                ) -> np.ndarray:
    """A label map of random class blocks with a void band, as trainIds."""
    grid = rng.choice(classes, size=(-(-height // block), -(-width // block)))
    label = np.kron(grid, np.ones((block, block), dtype=np.int64))[:height, :width].astype(np.uint8)
    label[:, :4] = 255
    return label


def make_cityscapes(root: Path, split: str = "train", count: int = 4, size=(96, 192), seed: int = 0,
                    label_ids: bool = False, varied: bool = False) -> Path:
    """<root>/leftImg8bit/<split>/<city>/*_leftImg8bit.png and gtFine labelTrainIds (or labelIds).

    ``varied``: image i shows only classes 0..(i % 4), so images differ in their number of targets."""
    rng = np.random.default_rng(seed)
    trainid_to_id = {0: 7, 1: 8, 2: 11, 3: 12, 4: 13, 255: 0}
    for i in range(count):
        city = "aachen" if i % 2 == 0 else "bremen"
        stem = f"{city}_{i:06d}_000019"
        label = block_label(rng, *size, classes=tuple(range(1 + i % 4)) if varied else (0, 1, 2, 3))
        image = PALETTE[np.minimum(label, 4)].copy()
        image[label == 255] = 0
        image = np.clip(image.astype(int) + rng.integers(-10, 10, size=image.shape), 0, 255).astype(np.uint8)
        img_dir = root / "leftImg8bit" / split / city
        lbl_dir = root / "gtFine" / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(img_dir / f"{stem}_leftImg8bit.png")
        if label_ids:
            ids = np.vectorize(trainid_to_id.get)(label).astype(np.uint8)
            Image.fromarray(ids).save(lbl_dir / f"{stem}_gtFine_labelIds.png")
        else:
            Image.fromarray(label).save(lbl_dir / f"{stem}_gtFine_labelTrainIds.png")
    return root


def make_outlier_pool(root: Path, count: int = 3, seed: int = 1) -> Path:
    """<root>/images/<stem>.jpg + <root>/ood_annotations/<stem>.png (254 on object pixels)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "ood_annotations").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = rng.integers(0, 255, size=(60, 80, 3), dtype=np.uint8)
        mask = np.zeros((60, 80), dtype=np.uint8)
        mask[10 + i: 30 + i, 20: 45 + 3 * i] = 254
        mask[12 + i: 18 + i, 22: 30] = 0  # a hole: not object
        Image.fromarray(image).save(root / "images" / f"{i:012d}.png")
        Image.fromarray(mask).save(root / "ood_annotations" / f"{i:012d}.png")
    return root


def tiny_config(dataset_root: Path, out_dir: Path, **overrides) -> dict:
    config = {
        "model": dict(TINY_MODEL, num_classes=19),
        "data": {"kind": "cityscapes", "root": str(dataset_root), "split": "train", "num_workers": 0},
        "augment": {"short_sides": [64, 80, 96], "max_size": 400, "crop": [64, 128], "photometric": True,
                    "flip": True},
        "loss": {"num_points": 256},
        "solver": {"lr": 1e-3, "max_iter": 6, "batch_size": 2, "amp": False},
        "output": {"dir": str(out_dir), "checkpoint_period": 2, "log_period": 1},
        "seed": 3,
        "device": "cpu",
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config
