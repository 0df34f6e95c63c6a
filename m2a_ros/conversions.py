"""sensor_msgs Image / CompressedImage <-> numpy, without cv_bridge (not available on every platform).

Every accepted input becomes a contiguous uint8 RGB [H, W, 3] array, the predictor's input:

- 8-bit colour: rgb8, bgr8, rgba8, bgra8 (alpha dropped); mono8 and 8UC1 (grey replicated to 3 channels).
- 16-bit: mono16, 16UC1, rgb16, bgr16, rgba16, bgra16: scaled to 8 bits by round(v * 255 / 65535); the
  message's ``is_bigendian`` is honoured.
- Bayer: bayer_{rggb,bggr,gbrg,grbg}{8,16}: each 2x2 cell becomes one RGB value (R, mean of the two Gs
  rounded half up, B) given to its four pixels ("superpixel" demosaicing: no colour bleeding across
  cells, half the colour resolution); width and height must be even.
- 32FC1: grey in [0, 1] (values clipped); NaN or infinity anywhere rejects the frame.
- CompressedImage: JPEG or PNG, recognised by content (the ``format`` string varies between drivers).

Anything else (unknown encodings, a step shorter than a row, a data size that does not match
step x height, empty or oversized images, corrupt compressed data) raises ``ImageConversionError``
whose message names the problem; ``kind`` classifies it for the node's diagnostics counters.

Reading is zero-copy (``np.frombuffer`` over the message buffer). rclpy's ``data`` setter stores
``array.array('B', value)``: a copy of whatever it is given, element by element for an ndarray (350 ms for 6 MB),
a memcpy for ``bytes`` or an ``array.array``. So writing fills the buffer the message already stores:
``array_to_image`` copies the array into it once (``tobytes()`` then the setter made two copies), and
``image_message`` hands out that buffer as an ndarray to render into (no copy at all).
"""
from __future__ import annotations

import array as pyarray
import io

import numpy as np

from m2a_ros.bands import run_bands

# Frames from this many pixels on are reordered in parallel row bands (smaller ones: not worth a thread hop).
PARALLEL_PIXELS = 1 << 18
# Frames above this many pixels are rejected unless the caller raises the limit (a 16-bit 8K frame is 200 MB).
DEFAULT_MAX_PIXELS = 4096 * 4096

_CHANNELS_8 = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8uc1": 1}
_CHANNELS_16 = {"rgb16": 3, "bgr16": 3, "rgba16": 4, "bgra16": 4, "mono16": 1, "16uc1": 1}
_BAYER = ("rggb", "bggr", "gbrg", "grbg")
SUPPORTED_ENCODINGS = (
    tuple(_CHANNELS_8) + tuple(_CHANNELS_16) + tuple(f"bayer_{p}8" for p in _BAYER)
    + tuple(f"bayer_{p}16" for p in _BAYER) + ("32fc1",)
)


class ImageConversionError(ValueError):
    """A frame that cannot become an RGB image; ``kind`` names the failure class for diagnostics."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _layout(encoding: str) -> tuple[np.dtype, int]:
    """(element dtype without byte order, channels) of a supported encoding."""
    if encoding in _CHANNELS_8:
        return np.dtype(np.uint8), _CHANNELS_8[encoding]
    if encoding in _CHANNELS_16:
        return np.dtype(np.uint16), _CHANNELS_16[encoding]
    if encoding.startswith("bayer_") and encoding[6:10] in _BAYER and encoding[10:] in ("8", "16"):
        return np.dtype(np.uint8 if encoding.endswith("8") else np.uint16), 1
    if encoding == "32fc1":
        return np.dtype(np.float32), 1
    raise ImageConversionError(
        "encoding", f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")


def _check_size(height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise ImageConversionError("size", f"empty image: {width}x{height}")
    if height * width > max_pixels:
        raise ImageConversionError(
            "size", f"image {width}x{height} has {height * width} pixels, above the limit of {max_pixels}")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.uint8:
        return values
    # round(v * 255 / 65535) in integers: 0 -> 0, 65535 -> 255, exact for every value.
    return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _demosaic(raw: np.ndarray, pattern: str) -> np.ndarray:
    """Superpixel demosaicing of a [H, W] Bayer mosaic (H, W even) -> [H, W, 3] of the mosaic's dtype."""
    height, width = raw.shape
    if height % 2 or width % 2:
        raise ImageConversionError("size", f"Bayer image {width}x{height} must have an even width and height")
    # The pattern names the colours of the cell's pixels in row-major order: (0, 0), (0, 1), (1, 0), (1, 1).
    planes = [raw[index // 2::2, index % 2::2] for index in range(4)]
    red, blue = planes[pattern.index("r")], planes[pattern.index("b")]
    first_green, second_green = (planes[i] for i, c in enumerate(pattern) if c == "g")
    greens = (first_green.astype(np.uint32) + second_green + 1) // 2
    rgb = np.stack([red, greens.astype(raw.dtype), blue], axis=-1)
    return np.repeat(np.repeat(rgb, 2, axis=0), 2, axis=1)


def _select_channels(values: np.ndarray, order: tuple[int, int, int]) -> np.ndarray:
    """[H, W, C] -> contiguous [H, W, 3] whose channel i is ``values[..., order[i]]``.

    One plane copy per channel: numpy's generic strided copy (``values[..., ::-1]``, ``np.repeat``) is 2-6x
    slower at camera size (bgr8 1024x2048: 11 ms against 2 ms). rgb8 without row padding stays a view.
    """
    if order == (0, 1, 2) and values.shape[2] == 3 and values.flags.c_contiguous:
        return values
    out = np.empty((*values.shape[:2], 3), values.dtype)

    def copy(rows: slice) -> None:
        for target, source in enumerate(order):
            out[rows, :, target] = values[rows, :, source]

    if values.shape[0] * values.shape[1] >= PARALLEL_PIXELS:
        run_bands(copy, values.shape[0])   # row bands on the node's threads (numpy releases the GIL)
    else:
        copy(slice(None))
    return out


def image_to_rgb(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """sensor_msgs/Image -> contiguous uint8 RGB [H, W, 3]; ``ImageConversionError`` for anything unusable."""
    encoding = msg.encoding.strip().lower()
    dtype, channels = _layout(encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    _check_size(height, width, max_pixels)
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageConversionError(
            "step", f"step {step} is shorter than one {encoding} row of width {width} ({row_bytes} bytes)")
    buffer = np.frombuffer(msg.data, np.uint8)
    if buffer.size != step * height:
        raise ImageConversionError(
            "step", f"data has {buffer.size} bytes but step x height = {step} x {height} = {step * height}")
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    # Rows may be padded (step > row_bytes): view them, then drop the padding.
    rows = buffer.reshape(height, step)[:, :row_bytes]
    values = np.ascontiguousarray(rows).view(dtype).reshape(height, width, channels)
    if encoding == "32fc1":
        if not np.isfinite(values).all():
            raise ImageConversionError("nan", "32FC1 image contains NaN or infinite values")
        grey = (np.clip(values[..., 0], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return _select_channels(grey[..., None], (0, 0, 0))
    if encoding.startswith("bayer_"):
        return np.ascontiguousarray(_to_uint8(_demosaic(values[..., 0], encoding[6:10])))
    values = _to_uint8(values)
    if channels == 1:
        return _select_channels(values, (0, 0, 0))
    return _select_channels(values, (2, 1, 0) if encoding.startswith("bgr") else (0, 1, 2))


def compressed_to_rgb(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG) -> contiguous uint8 RGB [H, W, 3]."""
    from PIL import Image, UnidentifiedImageError

    data = bytes(msg.data)
    if not data:
        raise ImageConversionError("compressed", "compressed image has no data")
    if not (data.startswith(b"\xff\xd8") or data.startswith(b"\x89PNG\r\n\x1a\n")):
        raise ImageConversionError(
            "compressed", f"compressed image (format {msg.format!r}) is neither JPEG nor PNG data")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            _check_size(height, width, max_pixels)  # before decoding: no decompression bombs
            return np.asarray(image.convert("RGB"))
    except ImageConversionError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageConversionError("compressed", f"corrupt compressed image (format {msg.format!r}): {exc}") from None


# Our output encodings: (element dtype, channels).
OUTPUT_LAYOUTS = {"rgb8": (np.dtype(np.uint8), 3), "mono8": (np.dtype(np.uint8), 1), "32FC1": (np.dtype(np.float32), 1)}


def _image_header(msg, header, height: int, width: int, encoding: str, step: int) -> None:
    msg.header = header
    msg.height, msg.width = height, width
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = step


def array_to_image(array: np.ndarray, encoding: str, header) -> object:
    """uint8 [H, W] / [H, W, 3] or float32 [H, W] -> sensor_msgs/Image with ``header`` (copied as is)."""
    from sensor_msgs.msg import Image

    array = np.ascontiguousarray(array)
    msg = Image()
    _image_header(msg, header, int(array.shape[0]), int(array.shape[1]), encoding, int(array.strides[0]))
    msg.data = pyarray.array("B")
    msg.data.frombytes(array.reshape(-1).view(np.uint8))  # the one copy, into the message's own buffer
    return msg


def image_message(header, encoding: str, height: int, width: int) -> tuple[object, np.ndarray]:
    """(sensor_msgs/Image of ``encoding`` with ``header``, its pixels as a writable [H, W(, C)] array).

    The array views the message's own buffer: what is written into it is what is published, without the copy
    ``array_to_image`` makes. ``encoding`` is one of ``OUTPUT_LAYOUTS``; the pixels start as zeros.
    """
    from sensor_msgs.msg import Image

    if encoding not in OUTPUT_LAYOUTS:
        raise ValueError(f"image_message writes {', '.join(OUTPUT_LAYOUTS)}, not {encoding!r}")
    dtype, channels = OUTPUT_LAYOUTS[encoding]
    step = width * channels * dtype.itemsize
    msg = Image()
    _image_header(msg, header, height, width, encoding, step)
    # Grow the message's own (empty) buffer in place: the setter would store a copy of a buffer passed to it.
    data = msg.data
    data.append(0)
    data *= step * height   # repeating one byte: the fastest zeroed allocation
    pixels = np.frombuffer(data, np.uint8).view(dtype)
    return msg, pixels.reshape((height, width, channels) if channels > 1 else (height, width))


def image_to_array(msg) -> np.ndarray:
    """Our own outputs back to numpy (tests, tools): rgb8 [H, W, 3], mono8 [H, W], 32FC1 [H, W]."""
    if msg.encoding not in OUTPUT_LAYOUTS:
        raise ImageConversionError("encoding", f"image_to_array reads rgb8, mono8 and 32FC1, not {msg.encoding!r}")
    dtype, channels = OUTPUT_LAYOUTS[msg.encoding]
    values = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
    values = values[:, : msg.width * channels * dtype.itemsize].copy().view(dtype)
    return values.reshape(msg.height, msg.width, channels)[..., 0] if channels == 1 else values.reshape(
        msg.height, msg.width, channels)
