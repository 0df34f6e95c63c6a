"""Open-set semantic labels (paper Eq. 14) and the class vocabularies' reserved ids."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from m2a_core.classes import (
    CITYSCAPES,
    CLASS_SETS,
    COCO_OPEN_SET_SPLITS,
    COCO_PANOPTIC,
    IGNORE_ID,
    STREETHAZARDS,
    UNKNOWN_ID,
    ClassSet,
    get_class_set,
)
from m2a_core.openset.semantic import openset_semantic
from m2a_core.visualize import colorize_labels


def test_labels_are_argmax_except_where_the_score_reaches_the_threshold():
    rng = np.random.default_rng(0)
    semseg = rng.integers(0, 19, (40, 60))
    anomaly = rng.random((40, 60)).astype(np.float32)
    anomaly[3, 4] = 0.7  # exactly on the threshold: unknown (score >= threshold, as calibrated)
    labels = openset_semantic(torch.from_numpy(semseg), torch.from_numpy(anomaly), 0.7, num_classes=19)
    expected = np.where(anomaly >= np.float32(0.7), UNKNOWN_ID, semseg).astype(np.uint8)
    assert labels.dtype == torch.uint8
    np.testing.assert_array_equal(labels.numpy(), expected)
    assert labels[3, 4] == UNKNOWN_ID
    assert 0 < (expected == UNKNOWN_ID).mean() < 1


def test_threshold_above_every_score_leaves_the_semantic_map_and_a_custom_unknown_id_works():
    semseg = torch.tensor([[0, 5], [18, 2]])
    anomaly = torch.tensor([[0.1, 0.9], [-0.2, 0.5]])
    assert openset_semantic(semseg, anomaly, 1.5).tolist() == [[0, 5], [18, 2]]
    assert openset_semantic(semseg, anomaly, 0.5, unknown_id=19, num_classes=19).tolist() == [[0, 19], [18, 19]]


@pytest.mark.parametrize("unknown_id, message", [(255, "ignore"), (3, "collides with class id"), (300, "uint8")])
def test_unknown_id_may_not_collide(unknown_id, message):
    semseg, anomaly = torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2)
    with pytest.raises(ValueError, match=message):
        openset_semantic(semseg, anomaly, 0.5, unknown_id=unknown_id, num_classes=19)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="same"):
        openset_semantic(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2), 0.5)
    with pytest.raises(ValueError, match="integer class ids"):
        openset_semantic(torch.zeros(2, 2), torch.zeros(2, 2), 0.5)
    with pytest.raises(ValueError, match="finite"):
        openset_semantic(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2), float("nan"))


def test_every_vocabulary_keeps_its_ids_below_the_reserved_ones():
    for class_set in CLASS_SETS.values():
        assert class_set.num_classes < UNKNOWN_ID < IGNORE_ID
        assert len(set(class_set.names)) == class_set.num_classes, class_set.name
        assert get_class_set(class_set.name) is class_set
    with pytest.raises(ValueError, match="collide with the reserved"):
        ClassSet("too-many", tuple(map(str, range(255))), ((0, 0, 0),) * 255, frozenset())


def test_vocabularies_match_their_datasets():
    assert CITYSCAPES.num_classes == 19 and STREETHAZARDS.num_classes == 12
    assert {STREETHAZARDS.names[i] for i in STREETHAZARDS.thing_ids} == {"pedestrian", "car"}
    assert COCO_PANOPTIC.num_classes == 133 and len(COCO_PANOPTIC.thing_ids) == 80
    assert len(set(COCO_PANOPTIC.dataset_ids)) == 133 and max(COCO_PANOPTIC.dataset_ids) == 200
    for split, held_out in COCO_OPEN_SET_SPLITS.items():
        class_set = get_class_set(f"coco_panoptic_{split}")
        assert class_set.num_classes == 133 - len(held_out)
        assert not set(held_out) & set(class_set.names)
        # Contiguous renumbering keeps each class's own COCO id and thing/stuff flag.
        for index, name in enumerate(class_set.names):
            full = COCO_PANOPTIC.names.index(name)
            assert class_set.dataset_ids[index] == COCO_PANOPTIC.dataset_ids[full]
            assert (index in class_set.thing_ids) == (full in COCO_PANOPTIC.thing_ids)
    assert len(COCO_OPEN_SET_SPLITS["os20"]) == 16 and set(COCO_OPEN_SET_SPLITS["os5"]) < set(
        COCO_OPEN_SET_SPLITS["os10"])


def test_colour_labels_show_unknown_in_its_own_colour():
    labels = np.array([[0, UNKNOWN_ID], [IGNORE_ID, 11]], np.uint8)
    colours = colorize_labels(labels, STREETHAZARDS)
    assert colours[0, 0].tolist() == list(STREETHAZARDS.colors[0])
    assert colours[1, 1].tolist() == list(STREETHAZARDS.colors[11])
    assert colours[0, 1].tolist() not in [list(c) for c in STREETHAZARDS.colors]


def test_vocabularies_agree_with_the_dataset_readers():
    from m2a_core.datasets.coco_panoptic import OPEN_SET_SPLITS
    from m2a_core.datasets.semantic import STREET_HAZARDS_CLASSES

    assert STREETHAZARDS.names == STREET_HAZARDS_CLASSES
    for percent, names in OPEN_SET_SPLITS.items():
        assert set(COCO_OPEN_SET_SPLITS[f"os{percent}"]) == set(names)
