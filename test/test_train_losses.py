"""Matcher, point sampling, set criterion and mask contrastive loss against independent computations."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from m2a_core.training.criterion import SetCriterion
from m2a_core.training.matcher import HungarianMatcher, matching_cost
from m2a_core.training.outlier_loss import mask_contrastive_loss
from m2a_core.training.point_sampling import point_sample, uncertain_point_coords


def bilinear_numpy(image: np.ndarray, x: float, y: float) -> float:
    """Sample image [H, W] at normalised (x, y) with align_corners=False and zero padding (grid_sample)."""
    height, width = image.shape
    px, py = x * width - 0.5, y * height - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    total = 0.0
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        xi, yi = x0 + dx, y0 + dy
        weight = (1 - abs(px - xi)) * (1 - abs(py - yi))
        if 0 <= xi < width and 0 <= yi < height:
            total += weight * float(image[yi, xi])
    return total


def softplus(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def test_point_sample_matches_numpy_bilinear():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(5, 7)).astype(np.float32)
    coords = rng.uniform(size=(20, 2)).astype(np.float32)
    got = point_sample(torch.from_numpy(image)[None, None], torch.from_numpy(coords)[None])[0, 0].numpy()
    expected = [bilinear_numpy(image, x, y) for x, y in coords]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_importance_sampling_keeps_the_most_uncertain_candidates():
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3, size=(2, 1, 6, 8)).astype(np.float32)
    num_points, oversample, ratio = 10, 3.0, 0.7
    coords = uncertain_point_coords(torch.from_numpy(logits), num_points, oversample, ratio,
                                    torch.Generator().manual_seed(5)).numpy()
    assert coords.shape == (2, num_points, 2)
    candidates = torch.rand(2, 30, 2, generator=torch.Generator().manual_seed(5)).numpy()
    for n in range(2):
        uncertainty = np.array([-abs(bilinear_numpy(logits[n, 0], x, y)) for x, y in candidates[n]])
        best = candidates[n][np.argsort(-uncertainty, kind="stable")[:7]]
        chosen = coords[n, :7]
        assert {tuple(np.round(c, 6)) for c in chosen} == {tuple(np.round(c, 6)) for c in best}
        assert np.all((coords[n, 7:] >= 0) & (coords[n, 7:] <= 1))


def numpy_cost(logits, masks, labels, target_masks, coords, weights):
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    pred = np.array([[bilinear_numpy(m, x, y) for x, y in coords] for m in masks])
    tgt = np.array([[bilinear_numpy(m, x, y) for x, y in coords] for m in target_masks])
    cost = np.zeros((len(masks), len(labels)))
    for q in range(len(masks)):
        s = 1 / (1 + np.exp(-pred[q]))
        for t in range(len(labels)):
            bce = np.mean(tgt[t] * softplus(-pred[q]) + (1 - tgt[t]) * softplus(pred[q]))
            dice = 1 - (2 * np.sum(s * tgt[t]) + 1) / (s.sum() + tgt[t].sum() + 1)
            cost[q, t] = -weights[0] * probs[q, labels[t]] + weights[1] * bce + weights[2] * dice
    return cost


@pytest.mark.parametrize("seed,num_queries,num_targets", [(0, 4, 3), (1, 5, 2), (2, 3, 3), (3, 6, 4)])
def test_matcher_equals_brute_force_assignment(seed, num_queries, num_targets):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2, size=(num_queries, 6)).astype(np.float32)
    masks = rng.normal(scale=3, size=(num_queries, 4, 6)).astype(np.float32)
    labels = rng.choice(5, size=num_targets, replace=False)
    target_masks = (rng.uniform(size=(num_targets, 16, 24)) > 0.5).astype(np.float32)
    matcher = HungarianMatcher(2.0, 5.0, 5.0, num_points=50)
    target = {"labels": torch.from_numpy(labels), "masks": torch.from_numpy(target_masks),
              "generator": torch.Generator().manual_seed(seed)}
    rows, cols = matcher.match_image(torch.from_numpy(logits), torch.from_numpy(masks), target)
    coords = torch.rand(1, 50, 2, generator=torch.Generator().manual_seed(seed))[0].numpy()
    cost = numpy_cost(logits, masks, labels, target_masks, coords, (2.0, 5.0, 5.0))
    best, best_assignment = np.inf, None
    for queries in itertools.permutations(range(num_queries), num_targets):
        total = sum(cost[q, t] for t, q in enumerate(queries))
        if total < best:
            best, best_assignment = total, queries
    got = dict(zip(cols.tolist(), rows.tolist(), strict=True))
    assert [got[t] for t in range(num_targets)] == list(best_assignment)
    torch_cost = matching_cost(torch.from_numpy(logits), torch.from_numpy(masks), torch.from_numpy(labels),
                               torch.from_numpy(target_masks), torch.from_numpy(coords), 2.0, 5.0, 5.0)
    np.testing.assert_allclose(torch_cost.numpy(), cost, rtol=1e-4, atol=1e-5)


def test_matcher_with_no_targets_returns_empty():
    matcher = HungarianMatcher(num_points=10)
    rows, cols = matcher.match_image(torch.zeros(3, 4), torch.zeros(3, 2, 2),
                                     {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 8, 8)})
    assert rows.numel() == 0 and cols.numel() == 0


def test_criterion_equals_direct_computation():
    """CE, BCE and dice of a hand-made case with an unambiguous matching, recomputed with numpy on the same
    random points (reproduced from the per-image generator: matcher points, candidates, then uniform points)."""
    num_classes, num_queries, num_points = 3, 4, 40
    logits = np.array([[4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 5.0, 0.0], [0.0, 0.0, 0.0, 3.0],
                       [0.5, 0.2, 0.1, 2.0]], dtype=np.float32)
    rng = np.random.default_rng(7)
    pred_masks = rng.normal(size=(num_queries, 5, 7)).astype(np.float32)
    pred_masks[0] += 4.0
    pred_masks[1] -= 4.0
    target_masks = np.stack([np.ones((20, 28)), np.zeros((20, 28))]).astype(np.float32)
    target_masks[0, :3] = 0
    target = {"labels": torch.tensor([0, 2]), "masks": torch.from_numpy(target_masks),
              "generator": torch.Generator().manual_seed(11)}
    criterion = SetCriterion(num_classes, class_weight=2.0, mask_weight=5.0, dice_weight=5.0,
                             no_object_weight=0.1, num_points=num_points, importance_sample_ratio=0.0)
    outputs = {"pred_logits": torch.from_numpy(logits)[None], "pred_masks": torch.from_numpy(pred_masks)[None]}
    losses = criterion(outputs, [target])
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    classes, weights = [0, 2, 3, 3], np.array([1.0, 1.0, 0.1, 0.1])
    nll = np.array([-np.log(probs[q, c]) for q, c in enumerate(classes)])
    assert losses["loss_ce"].item() == pytest.approx(2.0 * (weights * nll).sum() / weights.sum(), rel=1e-5)
    generator = torch.Generator().manual_seed(11)
    torch.rand(1, num_points, 2, generator=generator)
    torch.rand(2, 3 * num_points, 2, generator=generator)
    coords = torch.rand(2, num_points, 2, generator=generator).numpy()
    bce, dice = [], []
    for query, target_index in ((0, 0), (1, 1)):
        x = np.array([bilinear_numpy(pred_masks[query], *c) for c in coords[target_index]])
        t = np.array([bilinear_numpy(target_masks[target_index], *c) for c in coords[target_index]])
        s = 1 / (1 + np.exp(-x))
        bce.append(np.mean(t * softplus(-x) + (1 - t) * softplus(x)))
        dice.append(1 - (2 * np.sum(s * t) + 1) / (s.sum() + t.sum() + 1))
    assert losses["loss_mask"].item() == pytest.approx(5.0 * np.mean(bce), rel=1e-5)
    assert losses["loss_dice"].item() == pytest.approx(5.0 * np.mean(dice), rel=1e-5)


def test_deep_supervision_gives_one_set_of_losses_per_prediction():
    torch.manual_seed(0)
    prediction = {"pred_logits": torch.randn(2, 5, 4), "pred_masks": torch.randn(2, 5, 4, 4)}
    outputs = dict(prediction, aux_outputs=[
        {"pred_logits": torch.randn(2, 5, 4), "pred_masks": torch.randn(2, 5, 4, 4)} for _ in range(3)])
    targets = [{"labels": torch.tensor([1]), "masks": torch.ones(1, 16, 16)},
               {"labels": torch.tensor([0, 2]), "masks": (torch.rand(2, 16, 16) > 0.5).float()}]
    labels = torch.full((2, 16, 16), 1, dtype=torch.int64)
    labels[0, :4, :4] = 254
    criterion = SetCriterion(3, num_points=32, outlier_weight=1.0)
    losses = criterion(outputs, targets, outlier_labels=labels)
    names = {"loss_ce", "loss_mask", "loss_dice", "loss_ood"}
    assert set(losses) == names | {f"{n}_{i}" for n in names for i in range(3)}
    alone = criterion(outputs["aux_outputs"][1], targets, outlier_labels=labels)
    assert losses["loss_ood_1"].item() == pytest.approx(alone["loss_ood"].item(), rel=1e-6)
    assert all(torch.isfinite(v) for v in losses.values())


def numpy_contrastive(logits, masks, labels, num_classes, margin):
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    inlier, outlier = [], []
    batch, _, height, width = masks.shape
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                sigmoid = 1 / (1 + np.exp(-masks[b, :, y, x]))
                class_scores = [np.sum(probs[b, :, c] * sigmoid) for c in range(num_classes)]
                score = -max(class_scores)
                if labels[b, y, x] < num_classes:
                    inlier.append(score**2)
                elif labels[b, y, x] == 254:
                    outlier.append(max(0.0, margin - score) ** 2)
    total = (np.mean(inlier) if inlier else 0.0) + (np.mean(outlier) if outlier else 0.0)
    return 0.5 * total


@pytest.mark.parametrize("margin", [0.75, 1.0])
def test_contrastive_loss_equals_direct_computation(margin):
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=2, size=(2, 4, 4)).astype(np.float32)
    masks = rng.normal(scale=2, size=(2, 4, 3, 5)).astype(np.float32)
    labels = rng.choice([0, 1, 2, 254, 255], size=(2, 3, 5))
    got = mask_contrastive_loss(torch.from_numpy(logits), torch.from_numpy(masks), torch.from_numpy(labels),
                                num_classes=3, margin=margin)
    assert got.item() == pytest.approx(numpy_contrastive(logits, masks, labels, 3, margin), rel=1e-5)


def test_contrastive_loss_without_outliers_is_the_inlier_term_only():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(1, 3, 3)).astype(np.float32)
    masks = rng.normal(size=(1, 3, 2, 2)).astype(np.float32)
    labels = np.array([[[0, 1], [255, 0]]])
    got = mask_contrastive_loss(torch.from_numpy(logits), torch.from_numpy(masks), torch.from_numpy(labels), 2)
    assert got.item() == pytest.approx(numpy_contrastive(logits, masks, labels, 2, 1.0), rel=1e-5)
    assert got.item() > 0


def test_contrastive_loss_resizes_the_score_to_the_label_size():
    """A spatially constant prediction gives a constant score at any size: the loss is then exact."""
    logits = torch.tensor([[[2.0, 0.0, -1.0]]])
    masks = torch.full((1, 1, 2, 3), 0.5)
    labels = torch.zeros(1, 8, 12, dtype=torch.int64)
    labels[0, :2] = 254
    score = -(torch.softmax(logits[0, 0], -1)[0] * torch.sigmoid(torch.tensor(0.5))).item()
    expected = 0.5 * (score**2 + max(0.0, 0.75 - score) ** 2)
    got = mask_contrastive_loss(logits, masks, labels, num_classes=2, margin=0.75)
    assert got.item() == pytest.approx(expected, rel=1e-6)
