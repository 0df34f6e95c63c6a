"""Training data: dataset readers for the training layouts, targets, batches and deterministic sampling.

Layouts (a missing or malformed folder is a ``DatasetError`` naming what is wrong):
- Cityscapes: ``<root>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` with
  ``<root>/gtFine/<split>/<city>/<stem>_gtFine_labelTrainIds.png`` (cityscapesscripts' output); when only
  ``_gtFine_labelIds.png`` exists it is converted with the official id -> trainId table.
- StreetHazards: ``<root>/images/**.png`` with ``<root>/annotations/**.png`` at the same relative path (point
  ``root`` at the ``train`` or ``test`` folder). Raw values map to the 12 known classes exactly as the
  evaluation reads them (``m2a_core.datasets.semantic``, the official 12-class protocol: raw 1 "unlabeled"
  is class 0 "background", raw 4 "other" void, raw 14 the anomaly -> 254).
- COCO panoptic: ``<root>/<images>/<file>.jpg``, ``<root>/annotations/<name>.json`` and its PNG folder
  ``<root>/annotations/<name>/`` or ``<root>/<name>/`` (segment id = R + 256 G + 65536 B). Classes are
  the JSON's categories in order (the open-set JSONs of ``make_openset_coco.py`` list the known ones only);
  crowd segments and segments of unlisted categories are void. Every non-crowd segment is one target
  (things: one per instance).

Every sample is (image uint8 [H, W, 3], semantic uint8 [H, W] with 254 outlier / 255 void, segments int32
[H, W] or None, segment classes). Semantic datasets get one target per class present, panoptic ones one
per segment. Sampling is a deterministic function of (seed, iteration, position in the global batch), so a
resumed or re-sharded run sees exactly the same samples and augmentations.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from m2a_core.classes import IGNORE_ID
from m2a_core.datasets.semantic import STREET_HAZARDS_CLASSES
from m2a_core.datasets.semantic import _street_hazards_labels as street_hazards_train_ids
from m2a_core.errors import DatasetError
from m2a_core.imageio import read_rgb
from m2a_core.preprocess import normalize_and_pad
from m2a_core.training.anomalymix import AnomalyMix
from m2a_core.training.augment import AugmentConfig, augment
from m2a_core.training.outlier_loss import OUTLIER_ID

# Cityscapes labelIds -> trainIds (cityscapesscripts' labels.py); everything else is void.
CITYSCAPES_ID_TO_TRAINID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                            25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def lookup_table(mapping: dict[int, int], default: int = IGNORE_ID, size: int = 256) -> np.ndarray:
    table = np.full(size, default, dtype=np.uint8)
    for source, target in mapping.items():
        table[source] = target
    return table


CITYSCAPES_LUT = lookup_table(CITYSCAPES_ID_TO_TRAINID)


def read_label(path: str | Path) -> np.ndarray:
    """A single-channel label PNG as stored (uint8 or wider), with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"label {path} does not exist")
    try:
        with Image.open(path) as im:
            array = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DatasetError(f"cannot read label {path}: {exc}") from None
    if array.ndim != 2:
        raise DatasetError(f"label {path} must be single-channel, got shape {array.shape}")
    return array


@dataclass
class Sample:
    image: np.ndarray
    semantic: np.ndarray
    segments: np.ndarray | None = None
    segment_classes: dict[int, int] = field(default_factory=dict)


class CityscapesTrain:
    num_classes = 19

    def __init__(self, root: str | Path, split: str = "train") -> None:
        self.root = Path(root)
        image_dir, label_dir = self.root / "leftImg8bit" / split, self.root / "gtFine" / split
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                raise DatasetError(f"Cityscapes: {folder} does not exist (expected <root>/leftImg8bit/{split} "
                                   f"and <root>/gtFine/{split})")
        self.items: list[tuple[Path, Path, bool]] = []
        for image in sorted(image_dir.glob("*/*_leftImg8bit.png")):
            stem = image.name[: -len("_leftImg8bit.png")]
            train_ids = label_dir / image.parent.name / f"{stem}_gtFine_labelTrainIds.png"
            label_ids = label_dir / image.parent.name / f"{stem}_gtFine_labelIds.png"
            if train_ids.is_file():
                self.items.append((image, train_ids, False))
            elif label_ids.is_file():
                self.items.append((image, label_ids, True))
            else:
                raise DatasetError(f"Cityscapes: no gtFine label for {image} (looked for {train_ids.name})")
        if not self.items:
            raise DatasetError(f"Cityscapes: no *_leftImg8bit.png image under {image_dir}/<city>/")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        image_path, label_path, convert = self.items[index]
        label = read_label(label_path)
        if label.dtype != np.uint8:
            raise DatasetError(f"Cityscapes label {label_path} must be 8-bit, got {label.dtype}")
        semantic = CITYSCAPES_LUT[label] if convert else label
        return Sample(image=read_rgb(image_path), semantic=semantic)


class StreetHazardsTrain:
    num_classes = len(STREET_HAZARDS_CLASSES)

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        image_dir, label_dir = self.root / "images", self.root / "annotations"
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                raise DatasetError(f"StreetHazards: {folder} does not exist (expected <root>/images and "
                                   f"<root>/annotations)")
        self.items = []
        for image in sorted(image_dir.rglob("*.png")):
            label = label_dir / image.relative_to(image_dir)
            if not label.is_file():
                raise DatasetError(f"StreetHazards: no annotation {label} for image {image}")
            self.items.append((image, label))
        if not self.items:
            raise DatasetError(f"StreetHazards: no .png image under {image_dir}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        image_path, label_path = self.items[index]
        label = read_label(label_path)
        if label.dtype != np.uint8 or label.max(initial=0) > 14:
            raise DatasetError(f"StreetHazards label {label_path} must hold values 1..14")
        return Sample(image=read_rgb(image_path), semantic=street_hazards_train_ids(label))


class CocoPanopticTrain:
    def __init__(self, root: str | Path, annotations: str = "panoptic_train2017", images: str = "train2017") -> None:
        self.root = Path(root)
        json_path = self.root / "annotations" / f"{annotations}.json"
        # PNGs next to the JSON or in detectron2's layout (<root>/<annotations>/).
        self.png_dir = next((d for d in (self.root / "annotations" / annotations, self.root / annotations)
                             if d.is_dir()), self.root / "annotations" / annotations)
        self.image_dir = self.root / images
        for path, what in ((json_path, "file"), (self.png_dir, "folder"), (self.image_dir, "folder")):
            if not path.exists():
                raise DatasetError(f"COCO panoptic: {what} {path} does not exist")
        try:
            data = json.loads(json_path.read_text())
            categories = [int(c["id"]) for c in data["categories"]]
            self.annotations = data["annotations"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"COCO panoptic: {json_path} is not a panoptic annotation file: {exc}") from None
        self.class_names = [c.get("name", str(c["id"])) for c in data["categories"]]
        self.category_to_class = {cid: i for i, cid in enumerate(categories)}
        self.num_classes = len(categories)
        if not 0 < self.num_classes < OUTLIER_ID:
            raise DatasetError(f"COCO panoptic: {self.num_classes} categories; 1..253 are supported")
        if not self.annotations:
            raise DatasetError(f"COCO panoptic: {json_path} lists no annotation")

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, index: int) -> Sample:
        ann = self.annotations[index]
        image = read_rgb(self.image_dir / ann["file_name"].replace(".png", ".jpg"))
        png_path = self.png_dir / ann["file_name"]
        try:
            with Image.open(png_path) as im:
                rgb = np.asarray(im.convert("RGB")).astype(np.int32)
        except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
            raise DatasetError(f"COCO panoptic: cannot read {png_path}: {exc}") from None
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        semantic = np.full(ids.shape, IGNORE_ID, dtype=np.uint8)
        segments = np.zeros(ids.shape, dtype=np.int32)
        classes = {}
        for number, info in enumerate(ann["segments_info"], start=1):
            cls = self.category_to_class.get(int(info["category_id"]))
            if cls is None or info.get("iscrowd", 0):
                continue
            where = ids == int(info["id"])
            semantic[where] = cls
            segments[where] = number
            classes[number] = cls
        return Sample(image=image, semantic=semantic, segments=segments, segment_classes=classes)


def build_dataset(kind: str, root: str | Path, split: str = "train", **options):
    """The training dataset of a config: ``cityscapes``, ``streethazards`` or ``coco_panoptic``."""
    if kind == "cityscapes":
        return CityscapesTrain(root, split)
    if kind == "streethazards":
        return StreetHazardsTrain(root)
    if kind == "coco_panoptic":
        return CocoPanopticTrain(root, **options)
    raise DatasetError(f"unknown dataset kind {kind!r}: use cityscapes, streethazards or coco_panoptic")


# ---------------------------------------------------------------------------------------------------
# Targets and deterministic sampling.

def targets_from_semantic(semantic: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One binary mask per known class present (outlier and void pixels belong to none)."""
    classes = np.unique(semantic)
    classes = classes[classes < num_classes].astype(np.int64)
    return classes, np.stack([semantic == c for c in classes]) if len(classes) else np.zeros(
        (0, *semantic.shape), dtype=bool)


def targets_from_segments(segments: np.ndarray, segment_classes: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    present = [s for s in np.unique(segments) if s in segment_classes]
    classes = np.array([segment_classes[s] for s in present], dtype=np.int64)
    masks = np.stack([segments == s for s in present]) if present else np.zeros((0, *segments.shape), bool)
    return classes, masks


def sample_seed(seed: int, iteration: int, position: int) -> int:
    """A 63-bit seed for one sample of one iteration, independent of process count and batch split."""
    return int(np.random.SeedSequence([seed, iteration, position]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class TrainingSet:
    """Dataset + AnomalyMix + augmentation -> model-ready samples, indexed by (iteration, position)."""

    def __init__(self, dataset, num_classes: int, augment_config: AugmentConfig, seed: int,
                 global_batch: int, anomaly_mix: AnomalyMix | None = None) -> None:
        if len(dataset) == 0:
            raise DatasetError("training dataset is empty")
        self.dataset = dataset
        self.num_classes = num_classes
        self.augment_config = augment_config
        self.seed = seed
        self.global_batch = global_batch
        self.anomaly_mix = anomaly_mix
        self._permutations: dict[int, np.ndarray] = {}

    def dataset_index(self, iteration: int, position: int) -> int:
        """Epoch-wise shuffling: the k-th sample of the run is element k % N of epoch k // N's permutation."""
        k = iteration * self.global_batch + position
        epoch, offset = divmod(k, len(self.dataset))
        if epoch not in self._permutations:
            self._permutations = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))}
        return int(self._permutations[epoch][offset])

    def sample(self, iteration: int, position: int) -> dict:
        seed = sample_seed(self.seed, iteration, position)
        rng = np.random.default_rng(seed)
        raw = self.dataset[self.dataset_index(iteration, position)]
        image, semantic, segments = raw.image, raw.semantic, raw.segments
        if self.anomaly_mix is not None:
            # Paste on the full-resolution frame, before augmentation; pasted pixels leave every segment.
            marker = semantic.copy()
            image, semantic, _ = self.anomaly_mix(image, semantic, rng)
            if segments is not None:
                segments = np.where((semantic == OUTLIER_ID) & (marker != OUTLIER_ID), 0, segments)
        # Augment semantic labels and segment ids together (one nearest-neighbour map).
        combined = semantic.astype(np.int64)
        if segments is not None:
            combined = combined + 256 * segments.astype(np.int64)
        image, combined = augment(image, combined, self.augment_config, rng, classes_of=lambda m: m % 256,
                                  void=IGNORE_ID)
        semantic = (combined % 256).astype(np.uint8)
        if segments is None:
            classes, masks = targets_from_semantic(semantic, self.num_classes)
        else:
            classes, masks = targets_from_segments((combined // 256).astype(np.int32), raw.segment_classes)
        return {"image": torch.from_numpy(image).permute(2, 0, 1).contiguous(),
                "semantic": torch.from_numpy(semantic.astype(np.int64)),
                "classes": torch.from_numpy(classes), "masks": torch.from_numpy(masks), "seed": seed}


class IterationBatches(torch.utils.data.Dataset):
    """Item k = this process's share of the global batch of iteration ``start + k`` (for a DataLoader with
    ``batch_size=None``: workers load whole batches, nothing to restore on resume but the iteration)."""

    def __init__(self, training_set: TrainingSet, start: int, stop: int, rank: int, local_batch: int) -> None:
        self.training_set = training_set
        self.start, self.stop = start, stop
        self.rank, self.local_batch = rank, local_batch

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __getitem__(self, k: int) -> list[dict]:
        iteration = self.start + k
        first = self.rank * self.local_batch
        return [self.training_set.sample(iteration, first + j) for j in range(self.local_batch)]


def make_batch(samples: list[dict], pixel_mean: tuple[float, ...], pixel_std: tuple[float, ...],
               device: torch.device, size_divisibility: int = 32
               ) -> tuple[torch.Tensor, list[dict], torch.Tensor]:
    """Normalised padded images [B, 3, Hp, Wp], targets (masks zero-padded to Hp x Wp, one random generator
    per image) and semantic labels padded with void [B, Hp, Wp] for the contrastive loss."""
    images = normalize_and_pad([s["image"].to(device).float() for s in samples], pixel_mean, pixel_std,
                               size_divisibility)
    height, width = images.shape[-2:]
    semantic = torch.full((len(samples), height, width), IGNORE_ID, dtype=torch.int64, device=device)
    targets = []
    for b, s in enumerate(samples):
        h, w = s["semantic"].shape
        semantic[b, :h, :w] = s["semantic"].to(device)
        masks = torch.zeros((s["masks"].shape[0], height, width), dtype=torch.float32, device=device)
        masks[:, :h, :w] = s["masks"].to(device)
        generator = torch.Generator(device=device)
        generator.manual_seed(int(s["seed"]))
        targets.append({"labels": s["classes"].to(device), "masks": masks, "generator": generator})
    return images, targets, semantic
