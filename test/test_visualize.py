"""The fast picture paths of ``m2a_core.visualize`` against the straightforward numpy formulas."""
from __future__ import annotations

import numpy as np
import pytest

from m2a_core.classes import CITYSCAPES, IGNORE_ID, UNKNOWN_ID
from m2a_core.visualize import (
    _as_lanes,
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


def aligned_and_offset(array: np.ndarray) -> np.ndarray:
    """A copy of ``array`` starting one byte after a 4-byte boundary (no 32-bit lane view possible)."""
    buffer = np.empty(array.nbytes + 1, np.uint8)
    shifted = buffer[1:].view(array.dtype).reshape(array.shape)
    shifted[...] = array
    return shifted


@pytest.mark.parametrize("shape", [(24, 32, 3), (600, 600, 3), (23, 31, 3), (1, 4, 3)])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 0.3])
def test_blend_every_layout_against_the_float_formula(shape, alpha):
    """(24, 32): 32-bit lanes; (600, 600): lanes in two pieces (more than BLEND_CHUNK lanes); (23, 31): size not a
    multiple of 4 (uint16 path); (1, 4): three lanes. Exact on the 1/256 grid, else within one."""
    rng = np.random.default_rng(11)
    image, color = (rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(2))
    expected = reference_blend(image, color, alpha)
    tolerance = 0 if alpha in (0.0, 0.5, 1.0) else 1
    results = [blend(image, color, alpha), blend(aligned_and_offset(image), color, alpha),
               blend(image, color, alpha, out=np.empty(shape, np.uint8))]
    in_place = image.copy()
    assert blend(in_place, color, alpha, out=in_place) is in_place
    results.append(in_place)
    for result in results:
        assert np.abs(result.astype(int) - expected).max() <= tolerance
    assert (_as_lanes(image) is not None) == (image.size % 4 == 0)   # the fast path is what was compared
    assert _as_lanes(aligned_and_offset(image)) is None


def test_blend_broadcast_colour_and_bad_out():
    rng = np.random.default_rng(12)
    image = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    red = np.array([255, 0, 0], np.uint8)[None, None]
    np.testing.assert_array_equal(blend(image, red, 0.75), reference_blend(image, np.broadcast_to(red, image.shape),
                                                                           0.75))
    with pytest.raises(ValueError, match="out must be uint8"):
        blend(image, image, 0.5, out=np.empty((8, 12, 3), np.uint16))
    with pytest.raises(ValueError, match="out must be uint8"):
        blend(image, image, 0.5, out=np.empty((8, 11, 3), np.uint8))


def test_out_arrays_receive_the_same_pictures():
    """Rendering into given arrays (the node's message buffers), also row band by row band."""
    scores = random_scores(13, (20, 24))
    labels = np.random.default_rng(14).integers(0, 256, (20, 24)).astype(np.uint8)
    with np.errstate(invalid="ignore", over="ignore"):
        indices = reference_indices(scores, 0.1, 0.9)
    heat = colormap_lut("viridis")[indices]
    out = np.zeros((20, 24, 3), np.uint8)
    for rows in (slice(0, 8), slice(8, 20)):
        assert colorize_scores(scores[rows], 0.1, 0.9, "viridis", out=out[rows]) is not None
    np.testing.assert_array_equal(out, heat)
    index_out = np.zeros((20, 24), np.uint8)
    assert score_indices(scores, 0.1, 0.9, out=index_out) is index_out
    np.testing.assert_array_equal(index_out, indices)
    assert colorize_labels(labels, CITYSCAPES, out=out) is out
    np.testing.assert_array_equal(out, label_palette(CITYSCAPES)[labels])
    with pytest.raises(ValueError, match="out must be uint8"):
        score_indices(scores, out=np.zeros((20, 23), np.uint8))
    with pytest.raises(ValueError, match="out must be uint8"):
        colorize_labels(labels, CITYSCAPES, out=np.zeros((20, 24), np.uint8))


def test_scores_without_nan_take_the_same_values():
    """The NaN repair runs only when a NaN is there: a NaN-free map must give the formula's indices too."""
    scores = np.linspace(-0.2, 1.2, 4000, dtype=np.float32).reshape(40, 100)
    np.testing.assert_array_equal(score_indices(scores), reference_indices(scores, 0.0, 1.0))


def test_torch_tensors_take_the_same_formulas():
    """The device path (the node colours on the model's GPU): tensors in, tensors out, same values; run on CPU."""
    import torch
    scores = random_scores(15, (21, 34))
    rng = np.random.default_rng(16)
    image = rng.integers(0, 256, (21, 34, 3), dtype=np.uint8)
    labels = rng.integers(0, CITYSCAPES.num_classes, (21, 34)).astype(np.uint8)
    with np.errstate(invalid="ignore", over="ignore"):
        indices = reference_indices(scores, 0.2, 0.7)
    heat = colorize_scores(torch.from_numpy(scores), 0.2, 0.7, "inferno")
    assert isinstance(heat, torch.Tensor) and heat.dtype == torch.uint8
    np.testing.assert_array_equal(score_indices(torch.from_numpy(scores), 0.2, 0.7).numpy(), indices)
    np.testing.assert_array_equal(heat.numpy(), colormap_lut("inferno")[indices])
    np.testing.assert_array_equal(colorize_labels(torch.from_numpy(labels).long(), CITYSCAPES).numpy(),
                                  label_palette(CITYSCAPES)[labels])
    for alpha in (0.5, 0.3):
        mixed = blend(torch.from_numpy(image), heat, alpha).numpy().astype(int)
        reference = reference_blend(image, heat.numpy(), alpha)
        assert np.abs(mixed - reference).max() <= (0 if alpha == 0.5 else 1)
        np.testing.assert_array_equal(mixed, blend(image, heat.numpy(), alpha))   # the same integers as numpy's
    with pytest.raises(ValueError, match="tensors"):
        blend(torch.from_numpy(image), heat, 0.5, out=np.empty_like(image))
