"""Image files in and out, with errors that name the file (never a PIL traceback)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from m2a_core.checkpoint import atomic_write
from m2a_core.errors import M2AError


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise M2AError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise M2AError(f"cannot read image {path}: {exc}") from None


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 [H, W] or [H, W, 3] array as PNG, atomically."""
    image = Image.fromarray(np.ascontiguousarray(array))
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    atomic_write(path, write)
