"""Input preprocessing exactly as the official evaluation does it.

detectron2's ``ResizeShortestEdge(1024, max_size=2048)`` with PIL bilinear resizing of the uint8 image
(a 1024x2048 frame is untouched), then per-channel normalisation and zero padding (after normalisation)
at the bottom and right to a multiple of 32.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from m2a_core.errors import M2AError


def check_image(image: np.ndarray) -> np.ndarray:
    """Accept an RGB uint8 [H, W, 3] array; anything else is a clear error."""
    if not isinstance(image, np.ndarray):
        raise M2AError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise M2AError(f"image must be RGB with shape [H, W, 3], got shape {tuple(image.shape)}")
    if image.dtype != np.uint8:
        raise M2AError(f"image must be uint8, got {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise M2AError(f"image is empty: shape {tuple(image.shape)}")
    return image


def resized_shape(height: int, width: int, short_side: int | None, max_size: int | None) -> tuple[int, int]:
    """detectron2 ``ResizeShortestEdge.get_output_shape``: short side to ``short_side``, long side capped."""
    if short_side is None:
        return height, width
    scale = short_side / min(height, width)
    new_h, new_w = (short_side, scale * width) if height < width else (scale * height, short_side)
    if max_size is not None and max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_pil(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL bilinear resize of a uint8 image (the official path); identity when the size already matches."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def to_tensor(image: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] on ``device`` (0..255 scale)."""
    array = np.ascontiguousarray(image)
    if not array.flags.writeable:  # PIL hands out read-only buffers; torch wants writable memory
        array = array.copy()
    return torch.from_numpy(array).to(device).permute(2, 0, 1).float()


def resize_tensor(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Device-side bilinear resize of a [3, H, W] float image (a deviation from PIL; see README)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def normalize_and_pad(images: list[torch.Tensor], mean: tuple[float, ...], std: tuple[float, ...],
                      size_divisibility: int = 32) -> torch.Tensor:
    """Normalise [3, H, W] images (0..255) and zero-pad them into one [B, 3, Hp, Wp] batch."""
    device = images[0].device
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(3, 1, 1)
    max_h = max(int(im.shape[1]) for im in images)
    max_w = max(int(im.shape[2]) for im in images)
    pad_h = -(-max_h // size_divisibility) * size_divisibility
    pad_w = -(-max_w // size_divisibility) * size_divisibility
    batch = torch.zeros(len(images), 3, pad_h, pad_w, dtype=torch.float32, device=device)
    for i, im in enumerate(images):
        batch[i, :, : im.shape[1], : im.shape[2]] = (im - mean_t) / std_t
    return batch
