"""Open-set panoptic segmentation: hand-built scenes with known answers and a numpy/scipy reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from m2a_core.classes import CITYSCAPES, UNKNOWN_ID, ClassSet
from m2a_core.inference import upsample_mask_probs
from m2a_core.openset.panoptic import (
    PanopticParams,
    anomaly_instances,
    connected_components,
    openset_panoptic,
    panoptic_from_outputs,
)

from helpers import scipy_opening

K = CITYSCAPES.num_classes  # 0..10 stuff, 11..18 things, 19 no-object
H, W = 40, 64
PARAMS = PanopticParams(min_component_area=10)


def logits_from(distribution: dict[int, float]) -> torch.Tensor:
    """Logits whose softmax over K+1 puts the given mass on the given ids and spreads the rest evenly."""
    rest = (1.0 - sum(distribution.values())) / (K + 1 - len(distribution))
    probs = torch.full((K + 1,), rest)
    for index, mass in distribution.items():
        probs[index] = mass
    return probs.log()


CONFIDENT_ROAD = {0: 0.99}
CONFIDENT_SKY = {10: 0.99}
THING_LIKE = {c: 0.11 for c in range(11, 19)}   # mass over thing classes, best class a thing at 0.11 < 0.8
STUFF_LIKE = {c: 0.08 for c in range(0, 11)}    # mass over stuff classes, best class stuff at 0.08


def scene(queries: list[tuple[dict[int, float], np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.stack([logits_from(d) for d, _ in queries])
    masks = torch.stack([torch.as_tensor(m, dtype=torch.float32) for _, m in queries])
    return logits, masks


def box(value: float, top: int, left: int, height: int, width: int, background: float = 0.0) -> np.ndarray:
    mask = np.full((H, W), background, np.float32)
    mask[top:top + height, left:left + width] = value
    return mask


def road_with_holes(*holes: tuple[int, int, int, int]) -> np.ndarray:
    road = box(0.95, 0, 0, H, W)
    for top, left, height, width in holes:
        road[top:top + height, left:left + width] = 0.02
    return road


def check_consistent(result, shape=(H, W)) -> None:
    """Every pixel in at most one segment, ids and areas agree with the map, boxes enclose the pixels."""
    id_map = result.id_map.numpy()
    assert id_map.shape == shape and id_map.dtype == np.int32
    ids = [s["id"] for s in result.segments]
    assert len(ids) == len(set(ids))
    assert set(np.unique(id_map)) - {0} == set(ids)
    for segment in result.segments:
        ys, xs = np.nonzero(id_map == segment["id"])
        assert segment["area"] == ys.size
        assert segment["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert segment["unknown"] == (segment["category_id"] == UNKNOWN_ID)


def test_confident_stuff_regions_become_two_segments_and_nothing_unknown():
    logits, masks = scene([(CONFIDENT_ROAD, box(0.95, 20, 0, 20, W)), (CONFIDENT_SKY, box(0.95, 0, 0, 20, W))])
    result = openset_panoptic(logits, masks, CITYSCAPES, PARAMS)
    check_consistent(result)
    assert [(s["category_id"], s["isthing"], s["area"]) for s in result.segments] == [(0, False, 20 * W),
                                                                                       (10, False, 20 * W)]
    assert result.segments[0]["bbox"] == [0, 20, W, 20]
    assert not result.unknown_segments()
    assert float(result.background.max()) < PARAMS.background_threshold


def test_nothing_unknown_when_known_queries_claim_every_pixel():
    logits, masks = scene([(CONFIDENT_ROAD, road_with_holes((10, 10, 8, 8))), ({13: 0.95}, box(0.9, 10, 10, 8, 8)),
                           (THING_LIKE, box(0.9, 30, 40, 4, 4))])
    result = openset_panoptic(logits, masks, CITYSCAPES, PARAMS)
    check_consistent(result)
    assert [(s["category_id"], s["area"]) for s in result.segments] == [(0, H * W - 64), (13, 64)]
    assert (result.id_map.numpy() > 0).all()


def test_blob_that_no_query_covers_stays_background_unless_asked():
    logits, masks = scene([(CONFIDENT_ROAD, road_with_holes((12, 20, 6, 9)))])
    result = openset_panoptic(logits, masks, CITYSCAPES, PARAMS)
    check_consistent(result)
    assert not result.unknown_segments()
    assert (result.id_map.numpy()[12:18, 20:29] == 0).all()
    result = openset_panoptic(logits, masks, CITYSCAPES, PanopticParams(min_component_area=10,
                                                                        unmatched_components_unknown=True))
    check_consistent(result)
    (unknown,) = result.unknown_segments()
    assert unknown["area"] == 54 and unknown["bbox"] == [20, 12, 9, 6] and unknown["isthing"]
    assert unknown["score"] == pytest.approx(1 - 0.99 * 0.02, abs=1e-4)


def test_thing_like_query_over_a_background_blob_is_an_unknown_instance_stuff_like_is_not():
    for distribution, expect_unknown in ((THING_LIKE, True), (STUFF_LIKE, False)):
        logits, masks = scene([(CONFIDENT_ROAD, road_with_holes((12, 20, 6, 9))),
                               (distribution, box(0.9, 12, 20, 6, 9))])
        result = openset_panoptic(logits, masks, CITYSCAPES, PARAMS)
        check_consistent(result)
        assert len(result.unknown_segments()) == int(expect_unknown)
        if expect_unknown:
            (unknown,) = result.unknown_segments()
            assert unknown["bbox"] == [20, 12, 9, 6] and unknown["category_id"] == UNKNOWN_ID
            assert unknown["score"] == pytest.approx(1 - 0.11 * 0.9, abs=1e-4)


def test_a_small_overlap_is_not_significant():
    # The thing-like query's mask holds the blob but is much larger: IoU 54 / 400 < 0.5.
    logits, masks = scene([(CONFIDENT_ROAD, road_with_holes((12, 20, 6, 9))), (THING_LIKE, box(0.9, 5, 15, 20, 20))])
    assert not openset_panoptic(logits, masks, CITYSCAPES, PARAMS).unknown_segments()
    loose = PanopticParams(min_component_area=10, match_iou_threshold=0.1)
    assert len(openset_panoptic(logits, masks, CITYSCAPES, loose).unknown_segments()) == 1


def test_two_separate_unknowns_get_two_ids_and_max_components_keeps_the_largest():
    holes = ((5, 5, 6, 6), (25, 40, 8, 10))
    logits, masks = scene([(CONFIDENT_ROAD, road_with_holes(*holes)), (THING_LIKE, box(0.9, 5, 5, 6, 6)),
                           (THING_LIKE, box(0.9, 25, 40, 8, 10))])
    result = openset_panoptic(logits, masks, CITYSCAPES, PARAMS)
    check_consistent(result)
    unknowns = result.unknown_segments()
    assert sorted(u["area"] for u in unknowns) == [36, 80]
    assert len({u["id"] for u in unknowns}) == 2
    only_one = openset_panoptic(logits, masks, CITYSCAPES, PanopticParams(min_component_area=10, max_components=1))
    assert [u["area"] for u in only_one.unknown_segments()] == [80]
    too_small = openset_panoptic(logits, masks, CITYSCAPES, PanopticParams(min_component_area=50))
    assert [u["area"] for u in too_small.unknown_segments()] == [80]


def test_known_things_are_instances_stuff_of_one_class_merges_and_covered_masks_drop():
    car_a, car_b = box(0.9, 5, 5, 10, 10), box(0.9, 5, 30, 10, 10)
    road_left, road_right = box(0.9, 20, 0, 20, 32), box(0.9, 20, 32, 20, 32)
    hidden = box(0.6, 6, 31, 8, 8)  # inside car_b, lower score: its visible share is 0 < overlap_threshold
    logits, masks = scene([({13: 0.95}, car_a), ({13: 0.95}, car_b), (CONFIDENT_ROAD, road_left),
                           (CONFIDENT_ROAD, road_right), ({14: 0.85}, hidden)])
    result = openset_panoptic(logits, masks, CITYSCAPES, PARAMS)
    check_consistent(result)
    summary = [(s["category_id"], s["isthing"], s["area"]) for s in result.segments]
    assert summary == [(13, True, 100), (13, True, 100), (0, False, 20 * W)]


def reference(logits: np.ndarray, masks: np.ndarray, class_set: ClassSet, params: PanopticParams) -> np.ndarray:
    """The same algorithm written independently with numpy loops and scipy.ndimage.label."""
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    scores, labels = probs.max(1), probs.argmax(1)
    num_classes = logits.shape[1] - 1
    known = np.flatnonzero(labels != num_classes)
    id_map = np.zeros(masks.shape[1:], np.int32)
    kept = [q for q in known if scores[q] > params.object_mask_threshold]
    next_id, stuff = 1, {}
    if kept:
        owner = np.argmax(np.stack([scores[q] * masks[q] for q in kept]), 0)
        for k, q in enumerate(kept):
            own = (owner == k) & (masks[q] >= params.mask_threshold)
            original = (masks[q] >= params.mask_threshold).sum()
            if own.sum() == 0 or original == 0 or own.sum() / original < params.overlap_threshold:
                continue
            if labels[q] not in class_set.thing_ids and labels[q] in stuff:
                id_map[own] = stuff[labels[q]]
                continue
            id_map[own] = next_id
            if labels[q] not in class_set.thing_ids:
                stuff[labels[q]] = next_id
            next_id += 1
    claimed = np.max([scores[q] * masks[q] for q in known], 0) if len(known) else np.zeros(masks.shape[1:])
    background = np.clip(1 - claimed, 0, None)
    components, count = ndimage.label((background >= params.background_threshold) & (id_map == 0),
                                      structure=np.ones((3, 3)))
    found = []
    for c in range(1, count + 1):
        region = components == c
        last = np.flatnonzero(region.ravel())[-1]
        found.append((-region.sum(), last, region))
    found = [f for f in sorted(found, key=lambda f: f[:2]) if -f[0] >= params.min_component_area]
    for _, _, region in found[: params.max_components]:
        best_iou, best_q = 0.0, None
        for q in known:
            binary = masks[q] >= params.mask_threshold
            iou = (binary & region).sum() / (binary | region).sum()
            if iou > best_iou:
                best_iou, best_q = iou, q
        unknown = params.unmatched_components_unknown
        if best_q is not None and best_iou >= params.match_iou_threshold:
            p = probs[best_q, :num_classes]
            terms = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)
            things = sorted(class_set.thing_ids)
            stuffs = sorted(class_set.stuff_ids)
            unknown = terms[things].mean() - terms[stuffs].mean() > params.thing_entropy_margin
        if unknown:
            id_map[region] = next_id
            next_id += 1
    return id_map


def random_scene(seed: int, num_blobs: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """A confident road with holes where blobby queries sit: confident things, thing-like, stuff-like and
    no-object queries, so every branch of the algorithm is taken."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    fields, logits = [], []
    for q in range(num_blobs):
        cy, cx, s = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(2.5, 6)
        fields.append(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)))
        kind = q % 4
        if kind == 0:
            dist = {int(rng.integers(11, K)): float(rng.uniform(0.82, 0.99))}
        elif kind == 1:
            dist = {c: float(rng.uniform(0.08, 0.12)) for c in range(11, 19)}
        elif kind == 2:
            dist = {c: float(rng.uniform(0.06, 0.09)) for c in range(0, 11)}
        else:
            dist = {K: float(rng.uniform(0.5, 0.9))}
        logits.append(logits_from(dist).numpy() + rng.normal(0, 0.01, K + 1))
    road_field = 6 - 14 * np.sum(fields, 0) + rng.normal(0, 0.3, (H, W))
    fields = [road_field] + [12 * f - 5 + rng.normal(0, 0.3, (H, W)) for f in fields]
    logits = [logits_from({0: float(rng.uniform(0.9, 0.99))}).numpy()] + logits
    masks = 1 / (1 + np.exp(-np.stack(fields)))
    return np.stack(logits).astype(np.float32), masks.astype(np.float32)


def test_matches_an_independent_numpy_scipy_reference_on_random_scenes():
    params = PanopticParams(min_component_area=8, max_components=3)
    totals = {"known": 0, "unknown": 0}
    for seed in range(12):
        logits, masks = random_scene(seed)
        result = openset_panoptic(torch.from_numpy(logits), torch.from_numpy(masks), CITYSCAPES, params)
        check_consistent(result)
        expected = reference(logits, masks, CITYSCAPES, params)
        np.testing.assert_array_equal(result.id_map.numpy(), expected, err_msg=f"seed {seed}")
        totals["known"] += sum(not s["unknown"] for s in result.segments)
        totals["unknown"] += len(result.unknown_segments())
    # The scenes must exercise both branches for the comparison to mean anything.
    assert totals["known"] >= 10 and totals["unknown"] >= 3, totals


def test_connected_components_match_scipy_including_long_snakes():
    rng = np.random.default_rng(3)
    snake = np.zeros((41, 41), bool)
    snake[1::4, 1:40] = True
    snake[3::8, 39] = True
    snake[5::8, 1] = True   # one path ~ 400 pixels long through the whole image
    cases = [rng.random((50, 70)) > p for p in (0.3, 0.5, 0.6)] + [snake, np.zeros((5, 5), bool),
                                                                  np.ones((5, 5), bool)]
    for mask in cases:
        labels, count, converged = connected_components(torch.from_numpy(mask))
        expected, expected_count = ndimage.label(mask, structure=np.ones((3, 3)))
        assert converged and count == expected_count
        labels = labels.numpy()
        assert ((labels > 0) == mask).all()
        # Same partition: the two labelings map one-to-one.
        pairs = set(zip(labels[mask].tolist(), expected[mask].tolist(), strict=True))
        assert len(pairs) == count
    labels, count, converged = connected_components(torch.from_numpy(snake), max_iterations=1)
    assert not converged


def test_network_outputs_full_and_mask_resolution_agree_with_the_core_function():
    logits, masks = random_scene(5)
    padded, size = (64, 96), (56, 90)   # padding of 8 and 6 pixels, output = input size
    mask_logits = torch.from_numpy(np.log(masks / (1 - masks)))          # [Q, 40, 64]
    mask_logits = torch.nn.functional.interpolate(mask_logits[None], size=(16, 24), mode="bilinear")[0]
    pred_logits = torch.from_numpy(logits)
    params = PanopticParams(min_component_area=40)
    full = panoptic_from_outputs(pred_logits, mask_logits, padded, size, size, CITYSCAPES, params, "full")
    check_consistent(full, size)
    known = pred_logits.argmax(-1) != K
    direct = openset_panoptic(pred_logits[known], upsample_mask_probs(mask_logits[known], padded, size, size),
                              CITYSCAPES, params)
    assert torch.equal(full.id_map, direct.id_map) and full.segments == direct.segments
    low = panoptic_from_outputs(pred_logits, mask_logits, padded, size, size, CITYSCAPES, params, "mask")
    check_consistent(low, size)
    # The 14 x 23 mask cells that hold the 56 x 90 input, computed there (40 px = 2.5 cells: at least 3 cells),
    # each cell then 4 x 4 pixels, cropped to the input.
    at_cells = openset_panoptic(pred_logits[known], mask_logits[known].sigmoid()[:, :14, :23], CITYSCAPES,
                                PanopticParams(min_component_area=3))
    expected = np.repeat(np.repeat(at_cells.id_map.numpy(), 4, 0), 4, 1)[:56, :90]
    np.testing.assert_array_equal(low.id_map.numpy(), expected)
    assert len(low.segments) > 0
    # min_component_area counts output pixels: 4x the area at twice the output size is the same filter.
    larger = panoptic_from_outputs(pred_logits, mask_logits, padded, size, (112, 180), CITYSCAPES,
                                   PanopticParams(min_component_area=160), "mask")
    check_consistent(larger, (112, 180))
    np.testing.assert_array_equal(larger.id_map.numpy()[::2, ::2], low.id_map.numpy())
    with pytest.raises(ValueError, match="resolution"):
        panoptic_from_outputs(pred_logits, mask_logits, padded, size, size, CITYSCAPES, params, "half")


def test_anomaly_source_instances_are_the_largest_components_of_the_thresholded_score():
    """unknown_source='anomaly': the unknown instances are scipy's 8-connected components of score >= threshold
    (largest first, small ones dropped), taken out of the known segment they lie on, scored by their mean."""
    logits, masks = scene([(CONFIDENT_ROAD, box(0.95, 0, 0, H, W))])       # one road segment over everything
    rng = np.random.default_rng(0)
    score = rng.uniform(0.0, 0.29, (H, W)).astype(np.float32)
    score[5:15, 5:20] = rng.uniform(0.3, 1.0, (10, 15))                     # 150 px
    score[20:26, 40:44] = 0.6                                              # 24 px
    score[30, 50] = score[31, 51] = 0.9                                    # 2 px, diagonal: one component
    params = PanopticParams(min_component_area=2, max_components=2, unknown_source="anomaly", anomaly_threshold=0.3,
                            opening_size=1)
    known = openset_panoptic(logits, masks, CITYSCAPES, PanopticParams(max_components=0))
    result = anomaly_instances(known, torch.from_numpy(score), params)
    check_consistent(result)
    components, _ = ndimage.label(score >= 0.3, structure=np.ones((3, 3)))
    unknown = result.unknown_segments()
    assert [s["area"] for s in unknown] == [150, 24]                          # max_components keeps the largest
    for segment in unknown:
        region = result.id_map.numpy() == segment["id"]
        label = np.unique(components[region])
        assert label.size == 1 and np.array_equal(region, components == label[0])
        assert segment["score"] == pytest.approx(float(score[region].mean()), rel=1e-6)
    road = [s for s in result.segments if not s["unknown"]]
    assert len(road) == 1 and road[0]["area"] == H * W - 174
    # The 2-pixel diagonal pair is one component, kept once the limit allows it; area 2 < 3 drops it.
    three = anomaly_instances(known, torch.from_numpy(score), PanopticParams(
        min_component_area=2, max_components=5, unknown_source="anomaly", anomaly_threshold=0.3, opening_size=1))
    assert [s["area"] for s in three.unknown_segments()] == [150, 24, 2]
    bigger = anomaly_instances(known, torch.from_numpy(score), PanopticParams(
        min_component_area=3, max_components=5, unknown_source="anomaly", anomaly_threshold=0.3, opening_size=1))
    assert [s["area"] for s in bigger.unknown_segments()] == [150, 24]
    # Found on 4x4 blocks: two parts 2 px apart join into one instance; its pixels are still the score's.
    split = np.zeros((H, W), np.float32)
    split[8:12, 8:10] = split[8:12, 12:14] = 0.8
    blocks = anomaly_instances(known, torch.from_numpy(split), params, cell=4)
    assert len(blocks.unknown_segments()) == 1
    assert np.array_equal(blocks.id_map.numpy() == blocks.unknown_segments()[0]["id"], split >= 0.3)
    assert len(anomaly_instances(known, torch.from_numpy(split), params).unknown_segments()) == 2
    with pytest.raises(ValueError, match="differ in size"):
        anomaly_instances(known, torch.zeros(H, W + 1), params)


def test_opening_keeps_thin_boundary_lines_from_joining_objects_into_one_instance():
    logits, masks = scene([(CONFIDENT_ROAD, box(0.95, 0, 0, H, W))])
    known = openset_panoptic(logits, masks, CITYSCAPES, PanopticParams(max_components=0))
    score = np.zeros((H, W), np.float32)
    score[10:20, 5:15] = score[12:22, 45:55] = 0.9        # two objects, 100 px each
    score[15, 15:45] = 0.6                                # a 1-px boundary line from one to the other
    score[30:32, 0:W] = 0.7                               # a 2-px line across the frame
    score[H - 6:H, 60:W] = 0.8                            # an object cut by two image borders (24 px)
    mask = score >= 0.5
    for size, areas in ((1, [230, 128, 24]), (3, [100, 100, 24]), (5, [100, 100, 24])):
        params = PanopticParams(min_component_area=10, max_components=5, unknown_source="anomaly",
                                anomaly_threshold=0.5, opening_size=size)
        result = anomaly_instances(known, torch.from_numpy(score), params)
        check_consistent(result)
        expected, count = ndimage.label(scipy_opening(mask, size) if size > 1 else mask, structure=np.ones((3, 3)))
        unknown = result.unknown_segments()
        assert sorted(s["area"] for s in unknown) == sorted(areas), size
        assert len(unknown) == count
        for segment in unknown:
            region = result.id_map.numpy() == segment["id"]
            assert np.array_equal(region, expected == np.unique(expected[region])[0])
    with pytest.raises(ValueError, match="opening_size must be an odd number"):
        PanopticParams(opening_size=2)


def test_anomaly_source_through_the_network_outputs_keeps_the_known_segments_elsewhere():
    logits, masks = random_scene(5)
    padded, size = (64, 96), (56, 90)
    mask_logits = torch.from_numpy(np.log(masks / (1 - masks)))
    mask_logits = torch.nn.functional.interpolate(mask_logits[None], size=(16, 24), mode="bilinear")[0]
    pred_logits = torch.from_numpy(logits)
    score = torch.zeros(size)
    score[10:30, 20:50] = 0.9
    anomaly_params = PanopticParams(min_component_area=40, unknown_source="anomaly", anomaly_threshold=0.5)
    for resolution in ("full", "mask"):
        result = panoptic_from_outputs(pred_logits, mask_logits, padded, size, size, CITYSCAPES, anomaly_params,
                                       resolution, anomaly=score)
        check_consistent(result, size)
        known_only = panoptic_from_outputs(pred_logits, mask_logits, padded, size, size, CITYSCAPES,
                                           PanopticParams(min_component_area=40, max_components=0), resolution)
        assert [s["area"] for s in result.unknown_segments()] == [600]
        np.testing.assert_array_equal(result.id_map.numpy() == result.unknown_segments()[0]["id"], score.numpy() > 0)
        outside = score.numpy() == 0
        np.testing.assert_array_equal(result.id_map.numpy()[outside], known_only.id_map.numpy()[outside])
    with pytest.raises(ValueError, match="needs the anomaly score"):
        panoptic_from_outputs(pred_logits, mask_logits, padded, size, size, CITYSCAPES, anomaly_params, "full")
    with pytest.raises(ValueError, match="unknown_source"):
        PanopticParams(unknown_source="pixels")


def test_bad_shapes_and_parameters_are_named():
    logits, masks = scene([(CONFIDENT_ROAD, box(0.9, 0, 0, H, W))])
    with pytest.raises(ValueError, match="classes"):
        openset_panoptic(logits[:, :10], masks, CITYSCAPES)
    with pytest.raises(ValueError, match="expected pred_logits"):
        openset_panoptic(logits, masks[0], CITYSCAPES)
    with pytest.raises(ValueError, match="overlap_threshold"):
        PanopticParams(overlap_threshold=1.5)


def test_bench_openset_prints_every_step(capsys):
    from m2a_core.cli import main

    assert main(["bench", "openset", "--height", "64", "--width", "128", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    for step in ("anomaly_maps (always run)", "openset semantic", "openset panoptic (full)", "openset panoptic (mask)"):
        line = next(line for line in out.splitlines() if line.startswith(step))
        assert float(line[len(step):].split()[0]) >= 0.0


def test_panoptic_picture_shows_classes_and_striped_unknowns():
    from m2a_core.openset.panoptic import colorize_panoptic

    logits, masks = scene([(CONFIDENT_ROAD, road_with_holes((5, 5, 8, 8), (25, 40, 8, 10))),
                           (THING_LIKE, box(0.9, 5, 5, 8, 8))])
    result = openset_panoptic(logits, masks, CITYSCAPES, PARAMS)
    picture = colorize_panoptic(result.id_map.numpy(), result.segments, CITYSCAPES)
    assert picture.shape == (H, W, 3) and picture.dtype == np.uint8
    assert picture[30, 5].tolist() == list(CITYSCAPES.colors[0])            # inside the road
    assert (picture[27:31, 42:48] == 0).all()                                # background hole: black
    unknown = picture[6:12, 6:12].reshape(-1, 3)                            # interior of the unknown
    colours = {tuple(c) for c in unknown.tolist()}
    assert (255, 255, 255) in colours and len(colours) == 2
