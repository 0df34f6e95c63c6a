"""The node's frame outputs (``m2a_ros.outputs.frame_messages``) against plain numpy references, and the message
buffers they are rendered into (``m2a_ros.conversions.image_message``)."""
from __future__ import annotations

import array
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from std_msgs.msg import Header

from m2a_core.classes import CITYSCAPES, IGNORE_ID, UNKNOWN_ID
from m2a_ros import bands
from m2a_ros.bands import row_bands
from m2a_ros.conversions import array_to_image, image_message, image_to_array
from m2a_ros.outputs import INSTANCE_COLOR, RenderSettings, frame_messages

PICTURES = {"anomaly", "anomaly_color", "labels", "labels_color", "overlay"}


def inferno_reference(scores: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Matplotlib's colour map evaluated directly, on the truncated index of the clipped, scaled score."""
    import matplotlib

    index = np.clip((np.nan_to_num(scores, nan=vmin).astype(np.float64) - vmin) * 255.0 / (vmax - vmin), 0, 255)
    colours = matplotlib.colormaps["inferno"](np.arange(256) / 255.0)[:, :3]
    return (colours[index.astype(np.uint8)] * 255.0 + 0.5).astype(np.uint8)


def label_reference(labels: np.ndarray) -> np.ndarray:
    out = np.zeros((*labels.shape, 3), np.uint8)
    for class_id, colour in enumerate(CITYSCAPES.colors):
        out[labels == class_id] = colour
    out[labels == UNKNOWN_ID] = (255, 255, 255)
    return out


def scene(height: int, width: int, seed: int = 0):
    """A camera frame and a prediction with two unknown instances (a square and an L shape; inside frames of at
    least 30 x 40 pixels)."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    anomaly = rng.uniform(-0.2, 1.2, (height, width)).astype(np.float32)
    labels = rng.integers(0, CITYSCAPES.num_classes, (height, width)).astype(np.uint8)
    labels[0, :2] = [UNKNOWN_ID, IGNORE_ID]
    instances = np.zeros((height, width), np.int32)
    instances[5:15, 6:16] = 1
    instances[20:30, 30:33] = 2
    instances[27:30, 30:40] = 2
    segments = [{"id": 1, "unknown": True, "bbox": [6, 5, 10, 10], "score": 0.9, "area": 100},
                {"id": 2, "unknown": True, "bbox": [30, 20, 10, 10], "score": 0.7, "area": 51},
                {"id": 3, "unknown": False, "bbox": [0, 0, 1, 1], "score": 0.5, "area": 1}]
    return rgb, SimpleNamespace(anomaly=anomaly, labels=labels, instances=instances, segments=segments)


def expected_overlay(rgb, prediction, alpha: float) -> np.ndarray:
    """Float blend, then the instance outlines by brute force: a pixel of the instance with a 4-neighbour outside
    it (or on the image border), and the 2-pixel box frame."""
    heat = inferno_reference(prediction.anomaly, 0.0, 1.0).astype(np.float64)
    out = (rgb.astype(np.float64) * (1 - alpha) + heat * alpha + 0.5).astype(np.uint8)
    ids = prediction.instances
    padded = np.pad(ids, 1, constant_values=-1)
    for segment in prediction.segments[:2]:
        inside = ids == segment["id"]
        neighbours = [padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
        out[inside & np.any([n != segment["id"] for n in neighbours], axis=0)] = INSTANCE_COLOR
    for segment in prediction.segments[:2]:
        x, y, w, h = segment["bbox"]
        frame = np.zeros(ids.shape, bool)
        frame[y:y + h, x:x + w] = True
        frame[y + 2:y + h - 2, x + 2:x + w - 2] = False
        out[frame] = INSTANCE_COLOR
    return out


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("alpha", [0.5, 0.3])
def test_frame_pictures_equal_plain_numpy(monkeypatch, threads, alpha):
    monkeypatch.setattr(bands, "THREADS", threads)
    monkeypatch.setattr(bands, "_pool", None)
    rgb, prediction = scene(45, 50)   # 45 rows: the last band is not a multiple of 4 rows
    header = Header(frame_id="cam")
    header.stamp.sec = 7
    messages = frame_messages(header, rgb, prediction, PICTURES | {"unknown_instances"},
                              RenderSettings(overlay_alpha=alpha), CITYSCAPES)
    assert list(messages) == ["anomaly", "anomaly_color", "labels", "labels_color", "overlay", "unknown_instances"]
    for name in PICTURES:
        assert messages[name].header == header and (messages[name].height, messages[name].width) == (45, 50)
        assert isinstance(messages[name].data, array.array)   # kept by rclpy as it is
    np.testing.assert_array_equal(image_to_array(messages["anomaly"]), prediction.anomaly)
    np.testing.assert_array_equal(image_to_array(messages["labels"]), prediction.labels)
    np.testing.assert_array_equal(image_to_array(messages["anomaly_color"]),
                                  inferno_reference(prediction.anomaly, 0.0, 1.0))
    np.testing.assert_array_equal(image_to_array(messages["labels_color"]), label_reference(prediction.labels))
    overlay = image_to_array(messages["overlay"]).astype(int)
    assert np.abs(overlay - expected_overlay(rgb, prediction, alpha)).max() <= (0 if alpha == 0.5 else 1)
    assert len(messages["unknown_instances"].markers) == 3   # DELETEALL + the two unknown instances


def test_overlay_alone_and_a_score_range():
    """Only the overlay wanted: its heatmap is rendered, but no anomaly_color message is made."""
    rgb, prediction = scene(32, 36, seed=1)
    settings = RenderSettings(score_min=0.2, score_max=0.6, overlay_alpha=1.0)
    messages = frame_messages(Header(), rgb, prediction, {"overlay"}, settings, CITYSCAPES)
    assert list(messages) == ["overlay"]
    overlay = image_to_array(messages["overlay"])
    outline = np.all(overlay == INSTANCE_COLOR, axis=-1)
    heat = inferno_reference(prediction.anomaly, 0.2, 0.6)
    np.testing.assert_array_equal(overlay[~outline], heat[~outline])   # alpha 1: the heatmap itself


def test_row_bands_cover_every_row_once_on_multiples_of_four():
    for height in (1, 3, 4, 45, 1024, 1023):
        for count in (1, 2, 3, 4, 7):
            bands = row_bands(height, count)
            assert len(bands) <= count and bands[0].start == 0 and bands[-1].stop == height
            assert all(a.stop == b.start for a, b in zip(bands, bands[1:], strict=False))
            assert all(band.start % 4 == 0 and band.stop > band.start for band in bands)


def test_image_message_buffers_are_what_is_published():
    header = Header(frame_id="x")
    for encoding, shape, dtype in (("rgb8", (3, 5, 3), np.uint8), ("mono8", (3, 5), np.uint8),
                                   ("32FC1", (3, 5), np.float32)):
        msg, pixels = image_message(header, encoding, 3, 5)
        assert pixels.shape == shape and pixels.dtype == dtype and not pixels.any()
        values = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
        pixels[...] = values
        assert msg.encoding == encoding and msg.header == header and msg.step == 5 * values.itemsize * (
            3 if encoding == "rgb8" else 1)
        np.testing.assert_array_equal(image_to_array(msg), values)
        np.testing.assert_array_equal(image_to_array(array_to_image(values, encoding, header)), values)
    with pytest.raises(ValueError, match="not 'bgr8'"):
        image_message(header, "bgr8", 3, 5)


def test_tensor_predictions_render_on_their_device():
    """Maps kept as torch tensors (on the model's GPU in the node; on the CPU here) give the same messages."""
    rgb, prediction = scene(36, 44, seed=2)
    on_device = SimpleNamespace(anomaly=torch.from_numpy(prediction.anomaly),
                                labels=torch.from_numpy(prediction.labels),
                                instances=torch.from_numpy(prediction.instances), segments=prediction.segments)
    settings = RenderSettings(overlay_alpha=0.5)
    expected = frame_messages(Header(), rgb, prediction, PICTURES, settings, CITYSCAPES)
    got = frame_messages(Header(), rgb, on_device, PICTURES, settings, CITYSCAPES)
    assert list(got) == list(expected)
    for name in PICTURES:
        np.testing.assert_array_equal(image_to_array(got[name]), image_to_array(expected[name]))
    np.testing.assert_array_equal(image_to_array(got["overlay"]), expected_overlay(rgb, prediction, 0.5))
