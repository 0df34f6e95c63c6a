"""Class vocabularies shipped with models: names, colours and which classes are "stuff".

A model's weights file records the name of its vocabulary (``ModelConfig.classes``), so the
predictor, the node and evaluation agree on ids without a side file.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClassSet:
    name: str
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    thing_ids: frozenset[int]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.colors):
            raise ValueError(f"class set {self.name}: {len(self.names)} names but {len(self.colors)} colours")

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

CLASS_SETS: dict[str, ClassSet] = {c.name: c for c in (CITYSCAPES,)}

# Label value for pixels the open-set outputs call "unknown"; 255 stays "ignore/void".
UNKNOWN_ID = 254
IGNORE_ID = 255


def get_class_set(name: str) -> ClassSet:
    try:
        return CLASS_SETS[name]
    except KeyError:
        raise KeyError(f"unknown class set {name!r}; known: {sorted(CLASS_SETS)}") from None
