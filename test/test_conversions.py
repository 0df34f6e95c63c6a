"""sensor_msgs Image / CompressedImage -> RGB: every encoding against hand-built expectations, every error."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from m2a_ros.conversions import (
    ImageConversionError,
    array_to_image,
    compressed_to_rgb,
    image_to_array,
    image_to_rgb,
)

from helpers import random_image


def make_image(values: np.ndarray, encoding: str, padding: int = 0, bigendian: bool = False) -> Image:
    """An Image message holding ``values`` row by row, each row followed by ``padding`` junk bytes."""
    height, width = values.shape[:2]
    dtype = values.dtype.newbyteorder(">" if bigendian else "<") if values.dtype.itemsize > 1 else values.dtype
    rows = np.ascontiguousarray(values.astype(dtype)).reshape(height, -1).view(np.uint8)
    junk = np.full((height, padding), 0xAB, np.uint8)
    data = np.concatenate([rows, junk], axis=1)
    return Image(height=height, width=width, encoding=encoding, is_bigendian=int(bigendian),
                 step=data.shape[1], data=data.tobytes())


@pytest.mark.parametrize("padding", [0, 7])
def test_8bit_colour_encodings(padding):
    rgb = random_image(0, 5, 7)
    alpha = np.random.default_rng(1).integers(0, 256, (5, 7, 1), dtype=np.uint8)
    cases = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, alpha], -1),
        "bgra8": np.concatenate([rgb[..., ::-1], alpha], -1),
    }
    for encoding, values in cases.items():
        out = image_to_rgb(make_image(values, encoding, padding))
        assert out.dtype == np.uint8 and out.flags.c_contiguous, encoding
        np.testing.assert_array_equal(out, rgb, err_msg=encoding)


def test_mono8_is_grey_in_every_channel():
    grey = random_image(2, 4, 6)[..., 0]
    out = image_to_rgb(make_image(grey, "mono8", padding=3))
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], grey)


@pytest.mark.parametrize("bigendian", [False, True])
def test_16bit_scaled_to_8bit(bigendian):
    values = np.array([[0, 1, 128, 129, 257], [32767, 32768, 65278, 65279, 65535]], np.uint16)
    # round(v * 255 / 65535), computed in floating point here
    expected = np.floor(values.astype(np.float64) * 255.0 / 65535.0 + 0.5).astype(np.uint8)
    out = image_to_rgb(make_image(values, "mono16", bigendian=bigendian))
    np.testing.assert_array_equal(out[..., 0], expected)
    assert expected[0].tolist() == [0, 0, 0, 1, 1] and expected[1].tolist() == [127, 128, 254, 254, 255]
    rgb16 = np.stack([values, values[::-1], np.full_like(values, 65535)], -1)
    out = image_to_rgb(make_image(rgb16[..., ::-1], "bgr16", padding=2, bigendian=bigendian))
    np.testing.assert_array_equal(out[..., 0], expected)
    np.testing.assert_array_equal(out[..., 1], expected[::-1])
    assert (out[..., 2] == 255).all()


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_cells_become_their_colour(pattern):
    # 2 x 3 cells, each with its own R, B and two different greens.
    rng = np.random.default_rng(3)
    red, blue = rng.integers(0, 256, (2, 3)), rng.integers(0, 256, (2, 3))
    green_a, green_b = rng.integers(0, 256, (2, 3)), rng.integers(0, 256, (2, 3))
    mosaic = np.zeros((4, 6), np.uint8)
    greens = iter((green_a, green_b))
    for index, colour in enumerate(pattern):
        plane = {"r": red, "b": blue}.get(colour)
        mosaic[index // 2::2, index % 2::2] = plane if plane is not None else next(greens)
    out = image_to_rgb(make_image(mosaic, f"bayer_{pattern}8"))
    for cy in range(2):
        for cx in range(3):
            cell = out[2 * cy:2 * cy + 2, 2 * cx:2 * cx + 2].reshape(4, 3)
            green = (int(green_a[cy, cx]) + int(green_b[cy, cx]) + 1) // 2  # mean, half rounded up
            assert (cell == [red[cy, cx], green, blue[cy, cx]]).all(), (pattern, cy, cx, cell)
    # 16-bit Bayer: the same cells, scaled
    out16 = image_to_rgb(make_image(mosaic.astype(np.uint16) * 257, f"bayer_{pattern}16"))
    np.testing.assert_array_equal(out16, out)


def test_32fc1_is_grey_clipped_to_unit_range():
    values = np.array([[0.0, 0.5, 1.0, 2.0, -1.0, 0.25]], np.float32)
    out = image_to_rgb(make_image(values, "32FC1"))
    assert out[0, :, 0].tolist() == [0, 128, 255, 255, 0, 64]


@pytest.mark.parametrize("bad, kind, message", [
    (lambda: make_image(np.zeros((2, 2), np.uint8), "yuv422"), "encoding", "unsupported image encoding 'yuv422'"),
    (lambda: Image(height=2, width=4, encoding="rgb8", step=11, data=bytes(22)), "step", "shorter than one"),
    (lambda: Image(height=2, width=4, encoding="rgb8", step=12, data=bytes(20)), "step", "data has 20 bytes"),
    (lambda: Image(height=0, width=0, encoding="rgb8", step=0, data=b""), "size", "empty image"),
    (lambda: make_image(np.zeros((3, 4), np.uint8), "bayer_rggb8"), "size", "even width and height"),
    (lambda: make_image(np.array([[0.1, np.nan]], np.float32), "32FC1"), "nan", "NaN"),
    (lambda: make_image(np.array([[np.inf, 0.0]], np.float32), "32FC1"), "nan", "infinite"),
])
def test_bad_frames_name_the_problem(bad, kind, message):
    with pytest.raises(ImageConversionError, match=message.replace("(", r"\(")) as info:
        image_to_rgb(bad())
    assert info.value.kind == kind


def test_oversized_frame_is_rejected_before_copying():
    msg = make_image(np.zeros((30, 40), np.uint8), "mono8")
    with pytest.raises(ImageConversionError, match="1200 pixels, above the limit of 1000") as info:
        image_to_rgb(msg, max_pixels=1000)
    assert info.value.kind == "size"
    assert image_to_rgb(msg, max_pixels=1200).shape == (30, 40, 3)


def _encode(rgb: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_compressed_png_exact_and_jpeg_close():
    rgb = random_image(4, 24, 40)
    png = CompressedImage(format="rgb8; png compressed rgb8", data=_encode(rgb, "PNG"))
    np.testing.assert_array_equal(compressed_to_rgb(png), rgb)
    smooth = np.repeat(np.repeat(random_image(5, 3, 5), 8, 0), 8, 1)  # 8x8 blocks: JPEG keeps them well
    jpeg = CompressedImage(format="jpeg", data=_encode(smooth, "JPEG", quality=95, subsampling=0))
    out = compressed_to_rgb(jpeg)
    assert out.shape == smooth.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - smooth).mean() < 3


@pytest.mark.parametrize("data, message", [
    (b"", "no data"),
    (b"GIF89a....", "neither JPEG nor PNG"),
    (None, "corrupt compressed image"),
])
def test_corrupt_compressed(data, message):
    if data is None:
        data = _encode(random_image(6, 16, 16), "PNG")[:60]  # truncated in the middle of the pixels
    with pytest.raises(ImageConversionError, match=message) as info:
        compressed_to_rgb(CompressedImage(format="png", data=data))
    assert info.value.kind == "compressed"


def test_compressed_oversized_rejected():
    msg = CompressedImage(format="png", data=_encode(random_image(7, 40, 50), "PNG"))
    with pytest.raises(ImageConversionError, match="above the limit"):
        compressed_to_rgb(msg, max_pixels=1999)


def test_outputs_round_trip_with_header_unchanged():
    header = Header(frame_id="camera_optical")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    cases = [(random_image(8, 5, 9), "rgb8"), (random_image(9, 5, 9)[..., 0], "mono8"),
             (np.random.default_rng(10).normal(size=(5, 9)).astype(np.float32), "32FC1")]
    for array, encoding in cases:
        msg = array_to_image(array, encoding, header)
        assert msg.header == header and msg.encoding == encoding
        assert (msg.height, msg.width) == (5, 9) and msg.step == 9 * array.itemsize * (3 if array.ndim == 3 else 1)
        np.testing.assert_array_equal(image_to_array(msg), array)


@pytest.mark.parametrize("encoding", ["bgr8", "bgra8", "mono8", "rgba16"])
def test_camera_size_frames_reorder_in_parallel_bands(encoding):
    """Above PARALLEL_PIXELS the channel reordering runs in row bands on threads: same result as plain indexing."""
    from m2a_ros.conversions import PARALLEL_PIXELS

    height, width = 515, 520   # more than PARALLEL_PIXELS, an odd number of rows (the last band is short)
    assert height * width >= PARALLEL_PIXELS
    rgb = random_image(21, height, width)
    if encoding == "mono8":
        values, expected = rgb[..., :1], np.repeat(rgb[..., :1], 3, axis=2)
    elif encoding == "rgba16":
        values = np.concatenate([rgb, rgb[..., :1]], axis=2).astype(np.uint16) * 257   # 8-bit v -> 16-bit v * 257
        expected = rgb
    else:
        values = rgb[..., ::-1] if encoding == "bgr8" else np.concatenate([rgb[..., ::-1], rgb[..., :1]], axis=2)
        expected = rgb
    np.testing.assert_array_equal(image_to_rgb(make_image(np.ascontiguousarray(values), encoding)), expected)
