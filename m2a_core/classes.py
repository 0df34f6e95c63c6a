"""Class vocabularies shipped with models: names, colours and which classes are "stuff".

A model's weights file records the name of its vocabulary (``ModelConfig.classes``), so the
predictor, the node and evaluation agree on ids without a side file.
"""
from __future__ import annotations

from dataclasses import dataclass

# Label value for pixels the open-set outputs call "unknown"; 255 stays "ignore/void". Class ids of every
# vocabulary stay below both (checked in ClassSet).
UNKNOWN_ID = 254
# Where open-set panoptic unknown instances come from (m2a_core.openset.panoptic.PanopticParams.unknown_source).
UNKNOWN_SOURCES = ("background", "anomaly")
IGNORE_ID = 255


@dataclass(frozen=True)
class ClassSet:
    name: str
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    thing_ids: frozenset[int]
    # The dataset's own id of each class where it differs from the contiguous index (COCO panoptic
    # category ids); empty when the contiguous index is the dataset's id (Cityscapes trainIds).
    dataset_ids: tuple[int, ...] = ()
    # Classes of the full vocabulary held out as "unknown" (open-set splits); empty otherwise.
    held_out: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.names) != len(self.colors):
            raise ValueError(f"class set {self.name}: {len(self.names)} names but {len(self.colors)} colours")
        if self.dataset_ids and len(self.dataset_ids) != len(self.names):
            raise ValueError(f"class set {self.name}: {len(self.names)} names but {len(self.dataset_ids)} dataset ids")
        if not self.thing_ids <= frozenset(range(len(self.names))):
            raise ValueError(f"class set {self.name}: thing ids outside 0..{len(self.names) - 1}")
        # Label images are uint8 with two reserved values (UNKNOWN_ID, IGNORE_ID): ids must stay below them.
        if len(self.names) > UNKNOWN_ID:
            raise ValueError(f"class set {self.name}: {len(self.names)} classes collide with the reserved "
                             f"label ids {UNKNOWN_ID} (unknown) and {IGNORE_ID} (ignore)")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def stuff_ids(self) -> frozenset[int]:
        return frozenset(range(self.num_classes)) - self.thing_ids


# Cityscapes trainIds 0..18 with the official colour palette.
CITYSCAPES = ClassSet(
    name="cityscapes",
    names=(
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
        "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
        "motorcycle", "bicycle",
    ),
    colors=(
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
        (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ),
    thing_ids=frozenset(range(11, 19)),
)

# StreetHazards (Hendrycks et al., "Scaling out-of-distribution detection for real-world settings"). The
# dataset's list (hendrycks/anomaly-seg) is 0 unlabeled, 1 building, 2 fence, 3 other, 4 pedestrian, 5 pole,
# 6 road line, 7 road, 8 sidewalk, 9 vegetation, 10 car, 11 wall, 12 traffic sign, 13 anomaly; label files
# store id + 1. The 12 known classes are those of the official Mask2Anomaly StreetHazards model and
# DenseHybrid's open-set protocol: "unlabeled" is a known "background" class, "other" is void and "anomaly"
# is the open-set class (m2a_core.datasets.semantic maps the files the same way). ``dataset_ids`` are the
# label-file values. Colours: the dataset's palette, background as in the official Mask2Anomaly config.
STREETHAZARDS = ClassSet(
    name="streethazards",
    names=(
        "background", "building", "fence", "pedestrian", "pole", "road line", "road", "sidewalk", "vegetation",
        "car", "wall", "traffic sign",
    ),
    colors=(
        (180, 165, 180), (70, 70, 70), (190, 153, 153), (220, 20, 60), (153, 153, 153), (157, 234, 50),
        (128, 64, 128), (244, 35, 232), (107, 142, 35), (0, 0, 142), (102, 102, 156), (220, 220, 0),
    ),
    thing_ids=frozenset({3, 9}),  # pedestrian, car
    dataset_ids=(1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13),
)

# COCO panoptic: the 133 categories of panopticapi's panoptic_coco_categories.json in file order,
# as (COCO category id, name, isthing, colour). The contiguous index is the position in this table.
_COCO_PANOPTIC = (
    (1, "person", 1, (220, 20, 60)),
    (2, "bicycle", 1, (119, 11, 32)),
    (3, "car", 1, (0, 0, 142)),
    (4, "motorcycle", 1, (0, 0, 230)),
    (5, "airplane", 1, (106, 0, 228)),
    (6, "bus", 1, (0, 60, 100)),
    (7, "train", 1, (0, 80, 100)),
    (8, "truck", 1, (0, 0, 70)),
    (9, "boat", 1, (0, 0, 192)),
    (10, "traffic light", 1, (250, 170, 30)),
    (11, "fire hydrant", 1, (100, 170, 30)),
    (13, "stop sign", 1, (220, 220, 0)),
    (14, "parking meter", 1, (175, 116, 175)),
    (15, "bench", 1, (250, 0, 30)),
    (16, "bird", 1, (165, 42, 42)),
    (17, "cat", 1, (255, 77, 255)),
    (18, "dog", 1, (0, 226, 252)),
    (19, "horse", 1, (182, 182, 255)),
    (20, "sheep", 1, (0, 82, 0)),
    (21, "cow", 1, (120, 166, 157)),
    (22, "elephant", 1, (110, 76, 0)),
    (23, "bear", 1, (174, 57, 255)),
    (24, "zebra", 1, (199, 100, 0)),
    (25, "giraffe", 1, (72, 0, 118)),
    (27, "backpack", 1, (255, 179, 240)),
    (28, "umbrella", 1, (0, 125, 92)),
    (31, "handbag", 1, (209, 0, 151)),
    (32, "tie", 1, (188, 208, 182)),
    (33, "suitcase", 1, (0, 220, 176)),
    (34, "frisbee", 1, (255, 99, 164)),
    (35, "skis", 1, (92, 0, 73)),
    (36, "snowboard", 1, (133, 129, 255)),
    (37, "sports ball", 1, (78, 180, 255)),
    (38, "kite", 1, (0, 228, 0)),
    (39, "baseball bat", 1, (174, 255, 243)),
    (40, "baseball glove", 1, (45, 89, 255)),
    (41, "skateboard", 1, (134, 134, 103)),
    (42, "surfboard", 1, (145, 148, 174)),
    (43, "tennis racket", 1, (255, 208, 186)),
    (44, "bottle", 1, (197, 226, 255)),
    (46, "wine glass", 1, (171, 134, 1)),
    (47, "cup", 1, (109, 63, 54)),
    (48, "fork", 1, (207, 138, 255)),
    (49, "knife", 1, (151, 0, 95)),
    (50, "spoon", 1, (9, 80, 61)),
    (51, "bowl", 1, (84, 105, 51)),
    (52, "banana", 1, (74, 65, 105)),
    (53, "apple", 1, (166, 196, 102)),
    (54, "sandwich", 1, (208, 195, 210)),
    (55, "orange", 1, (255, 109, 65)),
    (56, "broccoli", 1, (0, 143, 149)),
    (57, "carrot", 1, (179, 0, 194)),
    (58, "hot dog", 1, (209, 99, 106)),
    (59, "pizza", 1, (5, 121, 0)),
    (60, "donut", 1, (227, 255, 205)),
    (61, "cake", 1, (147, 186, 208)),
    (62, "chair", 1, (153, 69, 1)),
    (63, "couch", 1, (3, 95, 161)),
    (64, "potted plant", 1, (163, 255, 0)),
    (65, "bed", 1, (119, 0, 170)),
    (67, "dining table", 1, (0, 182, 199)),
    (70, "toilet", 1, (0, 165, 120)),
    (72, "tv", 1, (183, 130, 88)),
    (73, "laptop", 1, (95, 32, 0)),
    (74, "mouse", 1, (130, 114, 135)),
    (75, "remote", 1, (110, 129, 133)),
    (76, "keyboard", 1, (166, 74, 118)),
    (77, "cell phone", 1, (219, 142, 185)),
    (78, "microwave", 1, (79, 210, 114)),
    (79, "oven", 1, (178, 90, 62)),
    (80, "toaster", 1, (65, 70, 15)),
    (81, "sink", 1, (127, 167, 115)),
    (82, "refrigerator", 1, (59, 105, 106)),
    (84, "book", 1, (142, 108, 45)),
    (85, "clock", 1, (196, 172, 0)),
    (86, "vase", 1, (95, 54, 80)),
    (87, "scissors", 1, (128, 76, 255)),
    (88, "teddy bear", 1, (201, 57, 1)),
    (89, "hair drier", 1, (246, 0, 122)),
    (90, "toothbrush", 1, (191, 162, 208)),
    (92, "banner", 0, (255, 255, 128)),
    (93, "blanket", 0, (147, 211, 203)),
    (95, "bridge", 0, (150, 100, 100)),
    (100, "cardboard", 0, (168, 171, 172)),
    (107, "counter", 0, (146, 112, 198)),
    (109, "curtain", 0, (210, 170, 100)),
    (112, "door-stuff", 0, (92, 136, 89)),
    (118, "floor-wood", 0, (218, 88, 184)),
    (119, "flower", 0, (241, 129, 0)),
    (122, "fruit", 0, (217, 17, 255)),
    (125, "gravel", 0, (124, 74, 181)),
    (128, "house", 0, (70, 70, 70)),
    (130, "light", 0, (255, 228, 255)),
    (133, "mirror-stuff", 0, (154, 208, 0)),
    (138, "net", 0, (193, 0, 92)),
    (141, "pillow", 0, (76, 91, 113)),
    (144, "platform", 0, (255, 180, 195)),
    (145, "playingfield", 0, (106, 154, 176)),
    (147, "railroad", 0, (230, 150, 140)),
    (148, "river", 0, (60, 143, 255)),
    (149, "road", 0, (128, 64, 128)),
    (151, "roof", 0, (92, 82, 55)),
    (154, "sand", 0, (254, 212, 124)),
    (155, "sea", 0, (73, 77, 174)),
    (156, "shelf", 0, (255, 160, 98)),
    (159, "snow", 0, (255, 255, 255)),
    (161, "stairs", 0, (104, 84, 109)),
    (166, "tent", 0, (169, 164, 131)),
    (168, "towel", 0, (225, 199, 255)),
    (171, "wall-brick", 0, (137, 54, 74)),
    (175, "wall-stone", 0, (135, 158, 223)),
    (176, "wall-tile", 0, (7, 246, 231)),
    (177, "wall-wood", 0, (107, 255, 200)),
    (178, "water-other", 0, (58, 41, 149)),
    (180, "window-blind", 0, (183, 121, 142)),
    (181, "window-other", 0, (255, 73, 97)),
    (184, "tree-merged", 0, (107, 142, 35)),
    (185, "fence-merged", 0, (190, 153, 153)),
    (186, "ceiling-merged", 0, (146, 139, 141)),
    (187, "sky-other-merged", 0, (70, 130, 180)),
    (188, "cabinet-merged", 0, (134, 199, 156)),
    (189, "table-merged", 0, (209, 226, 140)),
    (190, "floor-other-merged", 0, (96, 36, 108)),
    (191, "pavement-merged", 0, (96, 96, 96)),
    (192, "mountain-merged", 0, (64, 170, 64)),
    (193, "grass-merged", 0, (152, 251, 152)),
    (194, "dirt-merged", 0, (208, 229, 228)),
    (195, "paper-merged", 0, (206, 186, 171)),
    (196, "food-other-merged", 0, (152, 161, 64)),
    (197, "building-other-merged", 0, (116, 112, 0)),
    (198, "rock-merged", 0, (0, 114, 143)),
    (199, "wall-other-merged", 0, (102, 102, 156)),
    (200, "rug-merged", 0, (250, 141, 255)),
)

# The paper's open-set splits (Sec. 7.1), cumulative: known things removed from training and treated as
# unknown at test time. Named by the share of thing classes held out.
COCO_OPEN_SET_SPLITS: dict[str, tuple[str, ...]] = {
    "os5": ("car", "cow", "pizza", "toilet"),
    "os10": ("car", "cow", "pizza", "toilet", "boat", "tie", "zebra", "stop sign"),
    "os20": ("car", "cow", "pizza", "toilet", "boat", "tie", "zebra", "stop sign", "dining table", "banana",
             "bicycle", "cake", "sink", "cat", "keyboard", "bear"),
}


def coco_panoptic_classes(held_out: tuple[str, ...] = (), name: str = "coco_panoptic") -> ClassSet:
    """The COCO panoptic vocabulary without ``held_out`` (renumbered contiguously, dataset ids kept)."""
    all_names = {row[1] for row in _COCO_PANOPTIC}
    missing = sorted(set(held_out) - all_names)
    if missing:
        raise ValueError(f"held-out classes {missing} are not COCO panoptic categories")
    rows = [row for row in _COCO_PANOPTIC if row[1] not in held_out]
    return ClassSet(
        name=name,
        names=tuple(row[1] for row in rows),
        colors=tuple(row[3] for row in rows),
        thing_ids=frozenset(index for index, row in enumerate(rows) if row[2]),
        dataset_ids=tuple(row[0] for row in rows),
        held_out=tuple(held_out),
    )


COCO_PANOPTIC = coco_panoptic_classes()
COCO_PANOPTIC_OPEN_SET = {
    split: coco_panoptic_classes(names, f"coco_panoptic_{split}") for split, names in COCO_OPEN_SET_SPLITS.items()
}

CLASS_SETS: dict[str, ClassSet] = {
    c.name: c for c in (CITYSCAPES, STREETHAZARDS, COCO_PANOPTIC, *COCO_PANOPTIC_OPEN_SET.values())
}


def get_class_set(name: str) -> ClassSet:
    try:
        return CLASS_SETS[name]
    except KeyError:
        raise KeyError(f"unknown class set {name!r}; known: {sorted(CLASS_SETS)}") from None
