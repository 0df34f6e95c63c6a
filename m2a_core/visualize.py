"""Pictures people look at: colour heatmaps, label colours and overlays (uint8 RGB arrays).

These run on every frame of the ROS node at camera resolution, so they avoid numpy's slow paths (measured on
1024x2048 frames, ``m2a bench node``): colour look-ups use Pillow's palette expansion (one C pass, ~2 ms instead of
~30 ms for ``table[index]``), score-to-index scaling uses numpy's vectorised ``clip`` (NaN handled only when present:
``fmax`` has no SIMD loop), and blending is integer arithmetic on two 8-bit channels per 32-bit lane, in cache-sized
pieces (~2.5 ms instead of ~25 ms in float32). Every function that makes a frame-sized picture can write into a
given ``out`` array (the node renders straight into its messages' buffers) and works on row ranges, so callers may
split a frame between threads (numpy and Pillow release the GIL in these loops). The results equal the
straightforward formulas (``test_visualize.py``); blending rounds ``alpha`` to a multiple of 1/256, so a blended value
may differ from the float formula by one.
"""
from __future__ import annotations

import sys
from functools import lru_cache

import numpy as np

from m2a_core.classes import IGNORE_ID, UNKNOWN_ID, ClassSet

UNKNOWN_COLOR = (255, 255, 255)
ALPHA_ONE = 256   # integer blending weight of alpha = 1


def is_tensor(value) -> bool:
    """A torch tensor (checked without importing torch: where it is not loaded, nothing is a tensor).

    The colouring functions accept tensors on any device and compute there with the same integer formulas (the
    node colours on the model's GPU and copies uint8 back once); results are tensors on that device.
    """
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


@lru_cache(maxsize=8)
def colormap_lut(name: str = "inferno") -> np.ndarray:
    """A [256, 3] uint8 lookup table of a matplotlib colour map."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(f"unknown colour map {name!r}") from None
    lut = (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)
    lut.setflags(write=False)  # cached and shared between callers
    return lut


def lookup_colors(table: np.ndarray, index: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``table[index]``: a [256, 3] uint8 table looked up with uint8 indices -> [..., 3] uint8.

    2-D indices go through Pillow's palette expansion (the fast path); without ``out`` the result is then
    read-only (it views Pillow's output buffer): copy it before drawing on it. With ``out`` (uint8 [..., 3]) the
    colours are written there.
    """
    table = np.asarray(table, np.uint8)
    if table.shape != (256, 3):
        raise ValueError(f"colour table must be [256, 3], got {list(table.shape)}")
    if is_tensor(index):
        import torch

        if index.dtype != torch.uint8 or out is not None:
            raise ValueError(f"colour indices must be uint8 (and no out= for tensors), got {index.dtype}")
        return torch.tensor(table, device=index.device)[index.long()]   # a copy: the cached table is read-only
    index = np.asarray(index)
    if index.dtype != np.uint8:
        raise ValueError(f"colour indices must be uint8, got {index.dtype}")
    if out is not None and (out.dtype != np.uint8 or out.shape != (*index.shape, 3)):
        raise ValueError(f"out must be uint8 {[*index.shape, 3]}, got {out.dtype} {list(out.shape)}")
    if index.ndim != 2 or index.size == 0:
        return np.take(table, index, axis=0, out=out)
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(index))  # mode L, shares the array's memory
    picture.putpalette(table.tobytes())                      # L -> P with this palette
    colors = np.asarray(picture.convert("RGB"))
    if out is None:
        return colors
    np.copyto(out, colors)
    return out


def score_indices(scores: np.ndarray, vmin: float = 0.0, vmax: float = 1.0,
                  out: np.ndarray | None = None) -> np.ndarray:
    """Float [H, W] scores -> uint8 colour-map indices: (score - vmin) * 255 / (vmax - vmin), truncated and
    clipped to [0, 255]; NaN -> 0 (vmin), +inf -> 255. Written into ``out`` (uint8, the scores' shape) if given."""
    if vmax <= vmin:
        raise ValueError(f"vmax ({vmax}) must be greater than vmin ({vmin})")
    scale = 255.0 / (vmax - vmin)
    if is_tensor(scores):
        import torch

        if out is not None:
            raise ValueError("score_indices: no out= for tensors")
        scaled = scores.sub(vmin).mul_(scale) if vmin != 0.0 else scores.mul(scale)
        return scaled.clamp_(0.0, 255.0).nan_to_num_(0.0).to(torch.uint8)
    scores = np.asarray(scores)
    if out is None:
        out = np.empty(scores.shape, np.uint8)
    elif out.shape != scores.shape or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 {list(scores.shape)}, got {out.dtype} {list(out.shape)}")
    # In the scores' own float type (float32 for predictions), in place on one temporary.
    if vmin != 0.0:
        scaled = np.subtract(scores, vmin)
        np.multiply(scaled, scale, out=scaled)
    else:  # score - 0.0 is the score: skip that pass
        scaled = np.multiply(scores, scale)
    np.clip(scaled, 0.0, 255.0, out=scaled)   # vectorised; keeps NaN (fmax would map it, at 3x the cost)
    if np.isnan(scaled.min()):                # min propagates NaN: one cheap reduction in the usual NaN-free case
        scaled[np.isnan(scaled)] = 0.0
    np.copyto(out, scaled, casting="unsafe")  # truncation: every value is in [0, 255]
    return out


def colorize_scores(scores: np.ndarray, vmin: float = 0.0, vmax: float = 1.0, cmap: str = "inferno",
                    out: np.ndarray | None = None) -> np.ndarray:
    """Float [H, W] scores -> uint8 RGB [H, W, 3] (read-only unless written into ``out``); scores are clipped to
    [vmin, vmax] (NaN -> vmin)."""
    return lookup_colors(colormap_lut(cmap), score_indices(scores, vmin, vmax), out)


def label_palette(class_set: ClassSet) -> np.ndarray:
    """[256, 3] uint8: class colours, white for unknown, black for ignore and unused ids."""
    palette = np.zeros((256, 3), np.uint8)
    palette[: class_set.num_classes] = np.asarray(class_set.colors, np.uint8)
    palette[UNKNOWN_ID] = UNKNOWN_COLOR
    palette[IGNORE_ID] = (0, 0, 0)
    return palette


def colorize_labels(labels: np.ndarray, class_set: ClassSet, out: np.ndarray | None = None) -> np.ndarray:
    """Label ids [H, W] -> class colours uint8 RGB [H, W, 3] (read-only unless written into ``out``)."""
    if is_tensor(labels):
        import torch

        return lookup_colors(label_palette(class_set), labels.to(torch.uint8), out)
    return lookup_colors(label_palette(class_set), np.asarray(labels).astype(np.uint8, copy=False), out)


def alpha_weight(alpha: float) -> int:
    """``alpha`` in [0, 1] as an integer weight out of ``ALPHA_ONE`` (the blending precision)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return int(round(alpha * ALPHA_ONE))


LOW_BYTES = np.uint32(0x00FF00FF)    # bytes 0 and 2 of a 32-bit lane: two 8-bit channels, 16 bits apart
HIGH_BYTES = np.uint32(0xFF00FF00)
HALF_LSB = np.uint32(0x00800080)     # + ALPHA_ONE // 2 in both 16-bit halves: round to nearest
BLEND_CHUNK = 1 << 18                # 32-bit lanes per piece (1 MB): the temporaries stay in cache


def _blend_lanes(image: np.ndarray, color: np.ndarray, weight: int, out: np.ndarray) -> None:
    """(image * (256 - weight) + color * weight + 128) >> 8 per byte, on uint32 views (4 bytes per lane).

    The even and the odd bytes of each lane are spread to 16-bit halves (255 * 256 + 128 < 2**16: no carry into
    the next half), so one uint32 operation blends two channels: ~2x fewer element operations than uint16.
    """
    keep, take = np.uint32(ALPHA_ONE - weight), np.uint32(weight)
    size = min(BLEND_CHUNK, image.size)
    low, high, term = (np.empty(size, np.uint32) for _ in range(3))
    for start in range(0, image.size, BLEND_CHUNK):
        a, c = image[start:start + BLEND_CHUNK], color[start:start + BLEND_CHUNK]
        n = a.size
        lo, hi, t = low[:n], high[:n], term[:n]
        np.bitwise_and(a, LOW_BYTES, out=lo)
        lo *= keep
        np.bitwise_and(c, LOW_BYTES, out=t)
        t *= take
        lo += t
        lo += HALF_LSB
        lo >>= 8
        lo &= LOW_BYTES
        np.right_shift(a, 8, out=hi)
        hi &= LOW_BYTES
        hi *= keep
        np.right_shift(c, 8, out=t)
        t &= LOW_BYTES
        t *= take
        hi += t
        hi += HALF_LSB
        hi &= HIGH_BYTES                      # (>> 8, then << 8 back into the odd bytes)
        np.bitwise_or(lo, hi, out=out[start:start + n])


def _as_lanes(array: np.ndarray) -> np.ndarray | None:
    """A flat uint32 view of a C-contiguous, 4-byte aligned uint8 array whose size is a multiple of 4, else None."""
    if not (array.dtype == np.uint8 and array.flags.c_contiguous and array.size % 4 == 0
            and array.ctypes.data % 4 == 0):
        return None
    return array.reshape(-1).view(np.uint32)


def blend(image: np.ndarray, color: np.ndarray, alpha: float = 0.5, where: np.ndarray | None = None,
          out: np.ndarray | None = None) -> np.ndarray:
    """Alpha-blend ``color`` over ``image`` (both uint8 RGB), optionally only where ``where`` is True.

    round(image * (1 - a) + color * a) with a = ``alpha`` rounded to a multiple of 1/256, in integers (exact for
    alpha 0, 0.25, 0.5, 0.75, 1; otherwise within one of the float formula). Written into ``out`` (uint8, the
    image's shape; it may be ``image`` itself) if given.
    """
    weight = alpha_weight(alpha)
    if is_tensor(image) or is_tensor(color):
        import torch

        if where is not None or out is not None:
            raise ValueError("blend: no where= or out= for tensors")
        mixed = torch.as_tensor(image).to(torch.int32) * (ALPHA_ONE - weight)
        mixed += torch.as_tensor(color, device=mixed.device).to(torch.int32) * weight
        return ((mixed + ALPHA_ONE // 2) >> 8).to(torch.uint8)
    image, color = np.asarray(image), np.asarray(color)
    if out is None:
        out = np.empty(np.broadcast_shapes(image.shape, color.shape), np.uint8)
    elif out.dtype != np.uint8 or out.shape != np.broadcast_shapes(image.shape, color.shape):
        raise ValueError(f"out must be uint8 {list(image.shape)}, got {out.dtype} {list(out.shape)}")
    if where is not None:
        mixed = blend(image, color, alpha)
        np.copyto(out, image)
        out[where] = mixed[where]
        return out
    lanes = [_as_lanes(a) for a in (image, color, out)] if image.shape == color.shape else [None]
    if all(lane is not None for lane in lanes):
        _blend_lanes(*lanes[:2], weight, lanes[2])
        return out
    # Any other layout (broadcast colour, views, odd sizes): the same formula on uint16 (255 * 256 + 128 < 2**16).
    mixed = np.multiply(image, np.uint16(ALPHA_ONE - weight), dtype=np.uint16)
    mixed += np.multiply(color, np.uint16(weight), dtype=np.uint16)
    mixed += np.uint16(ALPHA_ONE // 2)
    mixed >>= 8                                   # / ALPHA_ONE
    np.copyto(out, mixed, casting="unsafe")
    return out


def anomaly_overlay(image: np.ndarray, scores: np.ndarray, vmin: float = 0.0, vmax: float = 1.0,
                    alpha: float = 0.6, cmap: str = "inferno", min_score: float | None = None) -> np.ndarray:
    """The camera image with the heatmap blended on; with ``min_score`` only where the score reaches it."""
    heat = colorize_scores(scores, vmin, vmax, cmap)
    where = None if min_score is None else scores >= min_score
    return blend(image, heat, alpha, where)
