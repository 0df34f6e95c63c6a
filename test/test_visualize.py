"""The fast picture paths of ``m2a_core.visualize`` against the straightforward numpy formulas."""
from __future__ import annotations

import numpy as np
import pytest

from m2a_core.classes import CITYSCAPES, IGNORE_ID, UNKNOWN_ID
from m2a_core.visualize import (
    anomaly_overlay,
    blend,
    colorize_labels,
    colorize_scores,
    colormap_lut,
    label_palette,
    lookup_colors,
    score_indices,
)


def reference_indices(scores: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """The formula as first written: NaN -> vmin, scale, clip, truncate."""
    scaled = (np.nan_to_num(scores, nan=vmin) - vmin) * (255.0 / (vmax - vmin))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def reference_blend(image: np.ndarray, color: np.ndarray, alpha: float) -> np.ndarray:
    return (image.astype(np.float64) * (1.0 - alpha) + color.astype(np.float64) * alpha + 0.5).astype(np.uint8)


def random_scores(seed: int, shape=(37, 53), dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scores = rng.uniform(-0.3, 1.3, shape).astype(dtype)
    flat = scores.reshape(-1)
    flat[:4] = [np.nan, np.inf, -np.inf, 0.5]
    flat[4:260] = np.arange(256) / 255.0  # every index boundary
    return scores


@pytest.mark.parametrize("vmin, vmax", [(0.0, 1.0), (0.2, 0.7), (-1.0, 3.0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_score_indices_and_heatmap_equal_the_formula(vmin, vmax, dtype):
    scores = random_scores(1, dtype=dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        expected = reference_indices(scores, vmin, vmax)
    np.testing.assert_array_equal(score_indices(scores, vmin, vmax), expected)
    for cmap in ("inferno", "viridis"):
        np.testing.assert_array_equal(colorize_scores(scores, vmin, vmax, cmap), colormap_lut(cmap)[expected])
    assert score_indices(scores, vmin, vmax)[0, :3].tolist() == [0, 255, 0]  # NaN -> vmin, +inf, -inf


def test_score_indices_leave_the_input_alone_and_reject_an_empty_range():
    scores = random_scores(2)
    before = scores.copy()
    score_indices(scores, 0.0, 1.0)
    np.testing.assert_array_equal(scores, before)
    with pytest.raises(ValueError, match="vmax"):
        score_indices(scores, 1.0, 1.0)


def test_lookup_colors_equals_fancy_indexing_for_every_shape():
    rng = np.random.default_rng(3)
    table = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    for index in (rng.integers(0, 256, (31, 47), dtype=np.uint8),                # the fast (Pillow) path
                  rng.integers(0, 256, (64, 96), dtype=np.uint8)[:, ::3],        # not contiguous
                  np.arange(256, dtype=np.uint8).reshape(16, 16),                # every entry
                  rng.integers(0, 256, (2, 5, 7), dtype=np.uint8),               # other ranks
                  np.zeros((0, 9), np.uint8)):
        np.testing.assert_array_equal(lookup_colors(table, index), table[index])
    with pytest.raises(ValueError, match="uint8"):
        lookup_colors(table, np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError, match=r"\[256, 3\]"):
        lookup_colors(table[:10], np.zeros((2, 2), np.uint8))


def test_label_colours_equal_the_palette():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, CITYSCAPES.num_classes, (29, 41)).astype(np.uint8)
    labels[0, :3] = [UNKNOWN_ID, IGNORE_ID, 200]
    expected = label_palette(CITYSCAPES)[labels]
    np.testing.assert_array_equal(colorize_labels(labels, CITYSCAPES), expected)
    np.testing.assert_array_equal(colorize_labels(labels.astype(np.int64), CITYSCAPES), expected)
    assert tuple(expected[0, 0]) == (255, 255, 255) and tuple(expected[0, 1]) == (0, 0, 0)
    assert tuple(expected[1, 1]) == CITYSCAPES.colors[labels[1, 1]]


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_blend_is_exact_for_alphas_on_the_integer_grid(alpha):
    rng = np.random.default_rng(5)
    image, color = (rng.integers(0, 256, (23, 31, 3), dtype=np.uint8) for _ in range(2))
    np.testing.assert_array_equal(blend(image, color, alpha), reference_blend(image, color, alpha))


@pytest.mark.parametrize("alpha", [0.1, 0.3, 0.6, 0.9, 0.123])
def test_blend_is_within_one_of_the_float_formula(alpha):
    rng = np.random.default_rng(6)
    image, color = (rng.integers(0, 256, (23, 31, 3), dtype=np.uint8) for _ in range(2))
    difference = blend(image, color, alpha).astype(int) - reference_blend(image, color, alpha)
    assert np.abs(difference).max() <= 1


def test_blend_where_and_overlay():
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (19, 27, 3), dtype=np.uint8)
    scores = random_scores(8, (19, 27))
    heat = colorize_scores(scores)
    where = np.nan_to_num(scores) >= 0.6
    masked = blend(image, heat, 0.5, where)
    np.testing.assert_array_equal(masked[~where], image[~where])
    np.testing.assert_array_equal(masked[where], reference_blend(image, heat, 0.5)[where])
    overlay = anomaly_overlay(image, scores, alpha=0.6)
    assert np.abs(overlay.astype(int) - reference_blend(image, heat, 0.6)).max() <= 1
    with pytest.raises(ValueError, match="alpha"):
        blend(image, heat, 1.5)
