"""Appearance of the known classes: colour distributions, grain, blotches and patterns, plus lighting.

Each Cityscapes trainId has its own colour family and texture so a small network can tell the classes
apart, with per-object colour jitter, per-frame pattern periods and lighting for variation. Shapes are
painted as indices into a per-frame palette (``Palette``); ``render`` turns (labels, palette indices)
into the final RGB image in a few vectorised passes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

# Internal label of anomaly pixels while a scene is drawn (the writers map it to each layout's value).
ANOMALY_LABEL = 254
VOID_LABEL = 255

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Appearance:
    colors: tuple[RGB, ...]  # base colours an object of the class picks from
    jitter: float            # per-object colour jitter (std, 0..255 units)
    grain: float             # fine per-pixel noise, fraction of the colour
    blotch: float            # coarse low-frequency variation, fraction of the colour
    pattern: str = "none"    # class pattern drawn on top, see _pattern_factor


# Colours are the scene's own, not the label palette: muted road greys, green vegetation, blue-grey sky...
# Classes of similar shape keep disjoint colour families (bus / train / truck, motorcycle / bicycle), so shape and
# colour together tell every class apart.
APPEARANCE: dict[int, Appearance] = {
    0: Appearance(((92, 88, 96), (80, 80, 84), (104, 98, 104)), 6, 0.07, 0.08),                  # road
    1: Appearance(((150, 140, 140), (170, 160, 150), (135, 128, 135)), 8, 0.05, 0.05, "tiles"),  # sidewalk
    2: Appearance(((150, 130, 110), (120, 120, 125), (160, 95, 75), (185, 175, 160), (95, 90, 90)),
                  14, 0.04, 0.10, "windows"),                                                    # building
    3: Appearance(((130, 130, 120), (150, 145, 135), (110, 110, 115)), 8, 0.05, 0.05, "panels"),  # wall
    4: Appearance(((120, 110, 95), (90, 95, 90), (140, 140, 140)), 8, 0.03, 0.03, "bars"),      # fence
    5: Appearance(((125, 125, 125), (95, 95, 100), (150, 150, 150)), 6, 0.02, 0.0),              # pole
    6: Appearance(((45, 45, 40), (60, 55, 30)), 4, 0.02, 0.0),                                     # light
    7: Appearance(((210, 200, 40), (230, 230, 225), (40, 70, 160), (190, 40, 40)), 8, 0.02, 0.0),  # sign
    8: Appearance(((60, 95, 40), (45, 80, 35), (85, 110, 50)), 10, 0.18, 0.30, "leaves"),         # vegetation
    9: Appearance(((120, 140, 70), (135, 125, 80), (105, 125, 65)), 10, 0.14, 0.15),              # terrain
    10: Appearance(((150, 180, 215), (180, 200, 225), (200, 205, 210)), 10, 0.0, 0.04, "sky"),    # sky
    11: Appearance(((60, 60, 75), (110, 85, 70), (50, 50, 50), (140, 130, 120), (90, 40, 40)),
                   12, 0.04, 0.0),                                                                 # person
    12: Appearance(((200, 225, 50), (40, 40, 45), (225, 235, 90)), 10, 0.04, 0.0),                # rider
    13: Appearance(((205, 205, 210), (30, 30, 35), (140, 145, 150), (40, 50, 90), (110, 30, 30),
                    (170, 160, 130)), 8, 0.02, 0.02),                                              # car
    14: Appearance(((190, 190, 185), (55, 65, 110), (150, 60, 40)), 10, 0.03, 0.04),              # truck
    15: Appearance(((220, 200, 60), (40, 90, 150)), 8, 0.02, 0.02),                               # bus
    16: Appearance(((70, 130, 90), (40, 90, 60)), 8, 0.02, 0.02),                                 # train
    17: Appearance(((45, 45, 45), (150, 30, 30)), 8, 0.03, 0.0),                                  # motorcycle
    18: Appearance(((30, 60, 140), (200, 200, 200)), 10, 0.02, 0.0),                              # bicycle
}
ANOMALY_APPEARANCE = Appearance(((128, 128, 128),), 0, 0.03, 0.0)
VOID_APPEARANCE = Appearance(((25, 25, 28),), 3, 0.02, 0.0)

# Parts that share an object's label but have their own colour (windows, tyres, skin, lit lamps).
DARK_GLASS: RGB = (35, 40, 50)
TYRE: RGB = (22, 22, 22)
SKIN: tuple[RGB, ...] = ((225, 185, 150), (160, 110, 80), (95, 65, 45))
HELMETS: tuple[RGB, ...] = ((235, 235, 235), (215, 40, 40), (30, 30, 30))
LAMP: tuple[RGB, ...] = ((255, 40, 30), (255, 190, 20), (40, 255, 90))
LANE_PAINT: RGB = (225, 225, 215)
# Sign rims by face colour, as road signs have them (white: red rim, yellow: black, blue and red: white): a white
# face alone looks like the sky behind it.
SIGN_RIMS: dict[RGB, RGB] = {(230, 230, 225): (190, 40, 40), (210, 200, 40): (30, 30, 30),
                             (40, 70, 160): (230, 230, 225), (190, 40, 40): (230, 230, 225)}


def sign_rim(face: RGB) -> RGB:
    """The rim colour of a sign whose (jittered) face colour is ``face``: that of the nearest base face."""
    nearest = min(SIGN_RIMS, key=lambda base: sum((a - b) ** 2 for a, b in zip(base, face, strict=True)))
    return SIGN_RIMS[nearest]


def appearance(label: int) -> Appearance:
    if label == ANOMALY_LABEL:
        return ANOMALY_APPEARANCE
    if label == VOID_LABEL:
        return VOID_APPEARANCE
    return APPEARANCE[label]


def jittered(rng: np.random.Generator, color: RGB, std: float) -> RGB:
    # Mostly brightness, a little hue: objects of a class vary without drifting into other colour families.
    c = np.clip(np.asarray(color, float) + rng.normal(0.0, std * 0.35, 3) + rng.normal(0.0, std), 0, 255)
    return tuple(int(v) for v in c)


def class_color(rng: np.random.Generator, label: int) -> RGB:
    """A colour for one object of a class: one of its base colours, jittered."""
    look = appearance(label)
    return jittered(rng, look.colors[int(rng.integers(len(look.colors)))], look.jitter)


class Palette:
    """Per-frame colour table: shapes are painted as indices into it (PIL draws integers fast)."""

    def __init__(self) -> None:
        self.colors: list[np.ndarray] = []
        self.size = 0

    def add(self, color: RGB) -> int:
        self.colors.append(np.asarray(color, np.float32).reshape(1, 3))
        self.size += 1
        return self.size - 1

    def add_many(self, colors: np.ndarray) -> int:
        """Append [N, 3] colours (a sprite's pixels); return the index of the first."""
        self.colors.append(np.asarray(colors, np.float32).reshape(-1, 3))
        first = self.size
        self.size += len(self.colors[-1])
        return first

    def table(self) -> np.ndarray:
        return np.concatenate(self.colors, 0)


def noise_field(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Smooth noise in about [-1, 1]: random values on a coarse grid, bilinearly upsampled."""
    grid = rng.uniform(-1.0, 1.0, (max(2, height // cell + 2), max(2, width // cell + 2))).astype(np.float32)
    image = Image.fromarray(grid, mode="F").resize((width, height), Image.BILINEAR)
    return np.asarray(image)


def grain_field(rng: np.random.Generator, height: int, width: int, tile: int = 128) -> np.ndarray:
    """Per-pixel noise in about [-1, 1]: a random tile repeated at a random offset (fast, no visible seam
    at this amplitude)."""
    base = rng.uniform(-1.0, 1.0, (tile, tile)).astype(np.float32)
    reps = (height // tile + 2, width // tile + 2)
    dy, dx = int(rng.integers(tile)), int(rng.integers(tile))
    return np.tile(base, reps)[dy:dy + height, dx:dx + width]


@dataclass(frozen=True)
class Lighting:
    gain: float          # overall exposure
    tint: np.ndarray     # per-channel colour temperature
    side_gradient: float  # brighter on the sun's side
    noise_std: float     # sensor noise, 0..255 units

    @staticmethod
    def sample(rng: np.random.Generator) -> Lighting:
        warm = rng.uniform(-0.07, 0.07)
        return Lighting(gain=float(rng.uniform(0.6, 1.25)),
                        tint=np.array([1 + warm, 1.0, 1 - warm], np.float32) * rng.uniform(0.97, 1.03, 3),
                        side_gradient=float(rng.uniform(-0.15, 0.15)), noise_std=float(rng.uniform(1.0, 4.0)))


def _pattern_factor(label: np.ndarray, horizon: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative class patterns (windows, tiles, fence bars, ...) in screen space, periods per frame."""
    height, width = label.shape
    ys = np.arange(height, dtype=np.int32)[:, None]
    xs = np.arange(width, dtype=np.int32)[None, :]
    factor = np.ones((height, width), np.float32)

    px, py = int(rng.integers(10, 26)), int(rng.integers(12, 30))
    ox, oy = int(rng.integers(px)), int(rng.integers(py))
    windows = (((xs + ox) % px) < px * 0.55) & (((ys + oy) % py) < py * 0.5)
    factor[(label == 2) & windows] = rng.uniform(0.45, 0.65)

    # Sidewalk tiles: joints that get denser towards the horizon (perspective).
    depth_rows = np.maximum(ys - horizon, 1.0)
    tile = np.maximum((depth_rows * 0.12).astype(np.int32), 2)
    joints = ((xs % (tile * 2)) == 0) | ((ys % tile) == 0)
    factor[(label == 1) & joints] = 0.8

    bar = int(rng.integers(4, 9))
    bars = ((xs % bar) < 2) | ((ys % (bar * 2)) < 2)
    fence = label == 4
    factor[fence] = np.where(bars, 0.65, 1.2)[fence]

    panel = int(rng.integers(6, 14))
    factor[(label == 3) & ((ys % panel) == 0)] = 0.75

    sky = label == 10
    factor[sky] = np.broadcast_to(1.0 + 0.25 * (ys / max(horizon, 1.0)).clip(0, 1), label.shape)[sky]
    return factor


def render(label: np.ndarray, paint: np.ndarray, palette: Palette, shadow: np.ndarray, horizon: float,
           rng: np.random.Generator) -> np.ndarray:
    """Final RGB uint8 image from the label map, palette indices and the shadow map (1 = lit)."""
    height, width = label.shape
    image = palette.table()[paint]  # [H, W, 3] float32

    grain_amp = np.zeros(256, np.float32)
    blotch_amp = np.zeros(256, np.float32)
    for value in list(APPEARANCE) + [ANOMALY_LABEL, VOID_LABEL]:
        grain_amp[value] = appearance(value).grain
        blotch_amp[value] = appearance(value).blotch
    modulation = (1.0 + grain_amp[label] * grain_field(rng, height, width)
                  + blotch_amp[label] * noise_field(rng, height, width, int(rng.integers(16, 48))))
    modulation *= _pattern_factor(label, horizon, rng)

    light = Lighting.sample(rng)
    xs = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    modulation *= light.gain * (1.0 + light.side_gradient * xs) * shadow
    image *= modulation[..., None]
    image *= light.tint
    image += grain_field(rng, height, width, 64)[..., None] * light.noise_std * 1.7
    return np.clip(image, 0, 255).astype(np.uint8)
