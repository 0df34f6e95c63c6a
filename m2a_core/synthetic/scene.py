"""A procedural Cityscapes-like road scene: perspective road, sidewalks, buildings, vegetation, sky, poles,
signs, traffic lights, vehicles, people and riders (all 19 trainIds), optionally with anomalies.

Geometry is a pinhole camera over a flat ground: a point ``X`` metres to the right, ``Z`` metres up, at
depth ``d`` projects to ``x = centre(s) + X * s``, ``y = horizon + (camera_height - Z) * s`` with
``s = focal / d`` pixels per metre; ``centre`` bends with depth for curved roads. The ground is classified
per pixel (vectorised); upright things are PIL polygons drawn far to near into three maps at once:
labels, palette indices (colours) and instance ids. ``textures.render`` then makes the image.

Labels use trainIds 0..18, ``ANOMALY_LABEL`` (254) for anomaly objects and 255 for void (the ego hood).
Everything depends only on the random generator: the same seed gives the same bytes.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from m2a_core.synthetic.anomalies import Sprite, anomaly_sprite
from m2a_core.synthetic.textures import (
    ANOMALY_LABEL,
    DARK_GLASS,
    HELMETS,
    LAMP,
    LANE_PAINT,
    SKIN,
    TYRE,
    VOID_LABEL,
    Palette,
    class_color,
    render,
    sign_rim,
)

ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(11, 19)
THING_LABELS = frozenset(range(11, 19)) | {ANOMALY_LABEL}
MIN_DEPTH = 0.8


@dataclass(frozen=True)
class Camera:
    height: int
    width: int
    horizon: float       # image row of the horizon (camera pitch)
    camera_height: float  # metres above the ground
    focal: float         # pixels
    curve: float         # lateral bend of the road at the horizon, in image widths

    @property
    def max_scale(self) -> float:
        return (self.height - self.horizon) / self.camera_height

    def centre(self, scale):
        return self.width / 2 + self.curve * self.width * (1.0 - scale / self.max_scale) ** 2

    def project(self, x: float, z: float, depth: float) -> tuple[float, float]:
        scale = self.focal / max(depth, MIN_DEPTH)
        return float(self.centre(scale) + x * scale), float(self.horizon + (self.camera_height - z) * scale)

    def scale(self, depth: float) -> float:
        return self.focal / max(depth, MIN_DEPTH)


@dataclass
class Frame:
    image: np.ndarray           # uint8 [H, W, 3]
    labels: np.ndarray          # uint8 [H, W]: trainIds, 254 anomaly, 255 void
    instances: np.ndarray       # int32 [H, W]: 0 stuff, else the id of a thing or anomaly
    instance_labels: dict[int, int] = field(default_factory=dict)  # instance id -> label
    anomaly_families: dict[int, str] = field(default_factory=dict)  # anomaly instance id -> shape family

    @property
    def anomaly_mask(self) -> np.ndarray:
        return self.labels == ANOMALY_LABEL


class Canvas:
    """Label, colour (palette index) and instance maps that every drawing call updates together."""

    def __init__(self, labels: np.ndarray, paint: np.ndarray, palette: Palette) -> None:
        height, width = labels.shape
        self.labels = Image.fromarray(labels, "L")
        self.paint = Image.fromarray(paint.astype(np.int32), "I")
        self.instances = Image.new("I", (width, height), 0)
        self.draws = [ImageDraw.Draw(im) for im in (self.labels, self.paint, self.instances)]
        self.shadows: list[tuple[float, list[tuple[float, float]]]] = []
        self.palette = palette
        self.instance_labels: dict[int, int] = {}

    def new_instance(self, label: int) -> int:
        instance = len(self.instance_labels) + 1
        self.instance_labels[instance] = label
        return instance

    def _values(self, label: int, color, instance: int) -> tuple[int, int, int]:
        return label, self.palette.add(color), instance

    def polygon(self, points, label: int, color, instance: int = 0) -> None:
        points = [(float(x), float(y)) for x, y in points]
        for draw, value in zip(self.draws, self._values(label, color, instance), strict=True):
            draw.polygon(points, fill=value)

    def rectangle(self, box, label: int, color, instance: int = 0) -> None:
        x0, y0, x1, y1 = box
        box = [min(x0, x1), min(y0, y1), max(max(x0, x1), min(x0, x1) + 0.6), max(max(y0, y1), min(y0, y1) + 0.6)]
        for draw, value in zip(self.draws, self._values(label, color, instance), strict=True):
            draw.rectangle(box, fill=value)

    @staticmethod
    def _ellipse_box(box) -> list[float]:
        """Ordered corners, at least one pixel each way (PIL needs x1 >= x0 and y1 >= y0)."""
        x0, y0, x1, y1 = box
        return [min(x0, x1), min(y0, y1), max(max(x0, x1), min(x0, x1) + 1), max(max(y0, y1), min(y0, y1) + 1)]

    def ellipse(self, box, label: int, color, instance: int = 0, width: int = 0) -> None:
        box = self._ellipse_box(box)
        for draw, value in zip(self.draws, self._values(label, color, instance), strict=True):
            if width:
                draw.ellipse(box, outline=value, width=width)
            else:
                draw.ellipse(box, fill=value)

    def claim_ellipse(self, box, label: int, instance: int = 0) -> None:
        """Label an ellipse without painting it: what shows through a spoked wheel belongs to the wheel."""
        box = self._ellipse_box(box)
        self.draws[0].ellipse(box, fill=label)
        self.draws[2].ellipse(box, fill=instance)

    def line(self, points, label: int, color, width: float, instance: int = 0) -> None:
        points = [(float(x), float(y)) for x, y in points]
        for draw, value in zip(self.draws, self._values(label, color, instance), strict=True):
            draw.line(points, fill=value, width=max(int(round(width)), 1))

    def sprite(self, sprite: Sprite, left: int, top: int, label: int, instance: int) -> None:
        """Paste a sprite's pixels (its own colours) with its mask."""
        mask = Image.fromarray(sprite.mask.astype(np.uint8) * 255, "L")
        first = self.palette.add_many(sprite.image.reshape(-1, 3))
        h, w = sprite.mask.shape
        indices = Image.fromarray((first + np.arange(h * w, dtype=np.int32)).reshape(h, w), "I")
        self.labels.paste(label, (left, top, left + w, top + h), mask)
        self.paint.paste(indices, (left, top), mask)
        self.instances.paste(instance, (left, top, left + w, top + h), mask)

    def cast_shadow(self, points, darkness: float) -> None:
        self.shadows.append((darkness, [(float(x), float(y)) for x, y in points]))

    def shadow_map(self) -> np.ndarray:
        """Light factor per pixel (1 lit); where shadows overlap the darkest wins."""
        shadow = Image.new("L", self.labels.size, 255)
        draw = ImageDraw.Draw(shadow)
        for darkness, points in sorted(self.shadows, key=lambda item: item[0]):
            draw.polygon(points, fill=int(255 * (1 - darkness)))
        return np.asarray(shadow, np.float32) / 255.0


@dataclass
class Layout:
    """The road's cross-section in metres (X = 0 is the camera) and what lies beside it."""
    road_left: float
    road_right: float
    lane_width: float
    sidewalk_left: float
    sidewalk_right: float
    beyond: tuple[str, str]  # per side (left, right): "sidewalk" (city block) or "terrain" (verge)
    tram: bool

    def edge(self, side: int) -> float:
        """X of the outer sidewalk edge on side -1 (left) or +1 (right)."""
        return self.road_left - self.sidewalk_left if side < 0 else self.road_right + self.sidewalk_right

    def curb(self, side: int) -> float:
        return self.road_left if side < 0 else self.road_right


def sample_camera(rng: np.random.Generator, height: int, width: int) -> Camera:
    return Camera(height=height, width=width, horizon=height * rng.uniform(0.36, 0.5),
                  camera_height=rng.uniform(1.2, 2.2), focal=width * rng.uniform(0.55, 0.8),
                  curve=rng.uniform(-0.22, 0.22))


def sample_layout(rng: np.random.Generator) -> Layout:
    lanes = int(rng.integers(2, 5))
    lane_width = rng.uniform(2.9, 3.6)
    ego_lane = int(rng.integers(0, lanes))
    road_left = -(ego_lane + rng.uniform(0.3, 0.7)) * lane_width
    beyond = tuple("terrain" if rng.uniform() < 0.35 else "sidewalk" for _ in range(2))
    return Layout(road_left=road_left, road_right=road_left + lanes * lane_width, lane_width=lane_width,
                  sidewalk_left=rng.uniform(1.5, 4.5), sidewalk_right=rng.uniform(1.5, 4.5),
                  beyond=beyond, tram=bool(rng.uniform() < 0.35))


def draw_ground(rng: np.random.Generator, camera: Camera, layout: Layout, palette: Palette
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel labels and palette indices of sky (above the horizon) and ground (below)."""
    height, width = camera.height, camera.width
    labels = np.full((height, width), SKY, np.uint8)
    paint = np.full((height, width), palette.add(class_color(rng, SKY)), np.int32)
    first_row = int(np.ceil(camera.horizon + 0.5))
    rows = np.arange(first_row, height, dtype=np.float32)[:, None] + 0.5
    scale = (rows - camera.horizon) / camera.camera_height
    lateral = (np.arange(width, dtype=np.float32)[None, :] + 0.5 - camera.centre(scale)) / scale
    depth = np.broadcast_to(camera.focal / scale, lateral.shape)

    road_color, walk_color = palette.add(class_color(rng, ROAD)), palette.add(class_color(rng, SIDEWALK))
    curb_color = palette.add(tuple(min(int(c * 1.25), 255) for c in palette.colors[walk_color][0]))
    terrain_color = palette.add(class_color(rng, TERRAIN))
    lane_color = palette.add(LANE_PAINT)
    ground = np.full(lateral.shape, SIDEWALK, np.uint8)
    ground_paint = np.full(lateral.shape, walk_color, np.int32)
    for side, kind in zip((-1, 1), layout.beyond, strict=True):
        if kind == "terrain":
            outside = lateral < layout.edge(-1) if side < 0 else lateral > layout.edge(1)
            ground[outside], ground_paint[outside] = TERRAIN, terrain_color
    on_road = (lateral >= layout.road_left) & (lateral <= layout.road_right)
    ground[on_road], ground_paint[on_road] = ROAD, road_color
    curb = ~on_road & ((np.abs(lateral - layout.road_left) < 0.25) | (np.abs(lateral - layout.road_right) < 0.25))
    ground_paint[curb] = curb_color

    # Paint on the road is still "road": lane lines, edge lines, a crosswalk, tram rails.
    lanes = np.arange(layout.road_left + layout.lane_width, layout.road_right - 0.5, layout.lane_width)
    marks = np.zeros(lateral.shape, bool)
    dash_period, dash = rng.uniform(8, 14), rng.uniform(2.5, 4.5)
    for lane_x in lanes:
        marks |= (np.abs(lateral - lane_x) < 0.08) & ((depth % dash_period) < dash)
    for edge_x in (layout.road_left + 0.35, layout.road_right - 0.35):
        marks |= np.abs(lateral - edge_x) < 0.07
    if rng.uniform() < 0.25:
        start = rng.uniform(8, 40)
        marks |= (depth > start) & (depth < start + 4) & ((lateral % 1.2) < 0.6)
    ground_paint[marks & on_road] = lane_color
    if layout.tram:
        rail_color = palette.add((150, 150, 155))
        centre = (layout.road_left + layout.road_right) / 2
        rails = (np.abs(lateral - centre + 0.72) < 0.05) | (np.abs(lateral - centre - 0.72) < 0.05)
        ground_paint[rails & on_road] = rail_color
    labels[first_row:], paint[first_row:] = ground, ground_paint
    return labels, paint


def draw_facade(canvas: Canvas, camera: Camera, x: float, near: float, far: float, top: float,
                label: int, color, bottom: float = 0.0, piece: float = 8.0) -> None:
    """A vertical wall parallel to the road (building front, wall, fence, hedge) in pieces that follow curves."""
    stops = np.linspace(near, far, max(int(np.ceil((far - near) / piece)), 1) + 1)
    for d0, d1 in zip(stops[:-1], stops[1:], strict=True):
        canvas.polygon([camera.project(x, bottom, d0), camera.project(x, bottom, d1),
                        camera.project(x, top, d1), camera.project(x, top, d0)], label, color)


def upright_box(camera: Camera, x: float, half_width: float, bottom: float, top: float, depth: float):
    x0, y1 = camera.project(x - half_width, bottom, depth)
    x1, y0 = camera.project(x + half_width, top, depth)
    return [x0, y0, x1, y1]


def draw_background(rng: np.random.Generator, canvas: Canvas, camera: Camera, layout: Layout) -> None:
    """Distant skyline, then buildings, walls, fences and hedges along both sides, far to near."""
    for x in np.arange(-80.0, 80.0, rng.uniform(6, 14)):
        label = BUILDING if rng.uniform() < 0.6 else VEGETATION
        top = rng.uniform(4, 30) if label == BUILDING else rng.uniform(4, 12)
        canvas.rectangle(upright_box(camera, x, rng.uniform(3, 8), 0, top, 190.0), label, class_color(rng, label))
    for side in (-1, 1):
        base = layout.edge(side) + side * (rng.uniform(3, 15) if layout.beyond[(side + 1) // 2] == "terrain" else 0)
        segments, depth = [], rng.uniform(0.0, 4.0)
        while depth < 170:
            length = rng.uniform(8, 35)
            segments.append((depth, depth + length))
            depth += length
        for near, far in reversed(segments):
            roll = rng.uniform()
            if roll < 0.12:
                continue  # a gap: sky and whatever is behind
            x = base + side * rng.uniform(0, 1.5)
            if roll < 0.25:
                draw_facade(canvas, camera, x, near, far, rng.uniform(3, 10), VEGETATION,
                            class_color(rng, VEGETATION))
            else:
                draw_facade(canvas, camera, x, near, far, rng.uniform(6, 30), BUILDING, class_color(rng, BUILDING))
        # Low boundaries in front: wall, fence or hedge along stretches of the outer sidewalk edge.
        for _ in range(int(rng.integers(0, 4))):
            near = rng.uniform(2, 60)
            far = near + rng.uniform(5, 40)
            label = (WALL, FENCE, VEGETATION)[int(rng.integers(3))]
            x = layout.edge(side) + side * 0.1
            draw_facade(canvas, camera, x, near, far, rng.uniform(0.8, 2.6), label, class_color(rng, label))
        if rng.uniform() < 0.5:  # a building shadow across part of the road
            near = rng.uniform(3, 30)
            far = near + rng.uniform(4, 25)
            reach = layout.curb(side) - side * rng.uniform(1, 8)
            edge = layout.edge(side)
            canvas.cast_shadow([camera.project(edge, 0, near), camera.project(edge, 0, far),
                                camera.project(reach, 0, far), camera.project(reach, 0, near)],
                               rng.uniform(0.2, 0.45))


# ---- upright objects: each function draws one object at lateral x and depth d --------------------------
Draw = Callable[[Canvas, Camera], None]


def tree(rng, x: float, depth: float) -> Draw:
    trunk_color, crown = (90, 70, 50), class_color(rng, VEGETATION)
    height, radius = rng.uniform(4, 9), rng.uniform(1.2, 3.0)

    def draw(canvas: Canvas, camera: Camera) -> None:
        canvas.rectangle(upright_box(camera, x, 0.15, 0, height * 0.6, depth), VEGETATION, trunk_color)
        for dx, dz, r in ((0, 0, 1.0), (-0.5, -0.3, 0.7), (0.5, -0.2, 0.75), (0, 0.4, 0.6)):
            canvas.ellipse(upright_box(camera, x + dx * radius, radius * r, height - radius * (1 - dz) - radius * r,
                                       height - radius * (1 - dz) + radius * r, depth), VEGETATION, crown)
    return draw


def pole(rng, x: float, depth: float, side: int) -> Draw:
    height, half = rng.uniform(3.5, 9.0), rng.uniform(0.06, 0.12)
    color = class_color(rng, POLE)
    attachment = rng.choice(["none", "sign", "light", "arm_light"], p=[0.25, 0.35, 0.2, 0.2])
    sign_color, shape = class_color(rng, SIGN), rng.choice(["circle", "triangle", "rect"])
    lit = LAMP[int(rng.integers(3))]
    arm = rng.uniform(2.0, 5.0)

    def light(canvas: Canvas, camera: Camera, lx: float, top: float) -> None:
        box = upright_box(camera, lx, 0.18, top - 0.95, top, depth)
        canvas.rectangle(box, LIGHT, class_color(rng, LIGHT))
        lamp = upright_box(camera, lx, 0.1, top - 0.3 - 0.3 * int(rng.integers(3)), top - 0.1, depth)
        lamp[3] = lamp[1] + (lamp[2] - lamp[0])
        canvas.ellipse(lamp, LIGHT, lit)

    def draw(canvas: Canvas, camera: Camera) -> None:
        canvas.rectangle(upright_box(camera, x, half, 0, height, depth), POLE, color)
        if attachment == "sign":
            x0, y0, x1, y1 = upright_box(camera, x, 0.4, height - 0.8, height, depth)
            rim = max(abs(x1 - x0) * 0.15, 0.5)  # the face inset by the rim, on every side
            for inset, paint in ((0.0, sign_rim(sign_color)), (rim, sign_color)):
                a0, b0, a1, b1 = x0 + inset, y0 + inset, x1 - inset, y1 - inset
                if shape == "circle":
                    canvas.ellipse([a0, b0, a1, b1], SIGN, paint)
                elif shape == "triangle":  # the face's apex drops by two rims: the slanted rim is as wide
                    canvas.polygon([((a0 + a1) / 2, b0 + inset), (a1, b1), (a0, b1)], SIGN, paint)
                else:
                    canvas.rectangle([a0, b0, a1, b1], SIGN, paint)
        elif attachment == "light":
            light(canvas, camera, x, height)
        elif attachment == "arm_light":
            end = x - side * arm
            canvas.polygon([camera.project(x, height, depth), camera.project(end, height, depth),
                            camera.project(end, height - 0.12, depth), camera.project(x, height - 0.12, depth)],
                           POLE, color)
            light(canvas, camera, end, height - 0.1)
    return draw


def person(rng, x: float, depth: float, label: int = PERSON, lift: float = 0.0, height: float | None = None
           ) -> Draw:
    height = height or rng.uniform(1.55, 1.95)
    shirt, trousers = class_color(rng, label), class_color(rng, label)
    # Riders wear helmets: with their high-visibility jackets, what tells them from pedestrians at a glance.
    head = HELMETS[int(rng.integers(len(HELMETS)))] if label == RIDER else SKIN[int(rng.integers(len(SKIN)))]
    stride = rng.uniform(0.0, 0.08)

    def draw(canvas: Canvas, camera: Camera, instance: int | None = None) -> None:
        instance = instance or canvas.new_instance(label)
        h = height
        for leg in (-1, 1):
            canvas.rectangle(upright_box(camera, x + leg * (0.07 + stride), 0.06, lift, lift + 0.47 * h, depth),
                             label, trousers, instance)
        canvas.rectangle(upright_box(camera, x, 0.15 * h, lift + 0.45 * h, lift + 0.83 * h, depth), label, shirt,
                         instance)
        for arm in (-1, 1):
            canvas.rectangle(upright_box(camera, x + arm * 0.18 * h, 0.035 * h, lift + 0.48 * h, lift + 0.82 * h,
                                         depth), label, shirt, instance)
        canvas.ellipse(upright_box(camera, x, 0.065 * h, lift + 0.83 * h, lift + h, depth), label, head, instance)
    return draw


def car(rng, x: float, depth: float, label: int = CAR) -> Draw:
    dims = {CAR: (0.9, 1.45), TRUCK: (1.25, rng.uniform(3.0, 3.8)), BUS: (1.27, 3.2), TRAIN: (1.3, 3.6)}
    half, height = dims[label]
    body = class_color(rng, label)
    second = class_color(rng, label)
    light_color = (200, 30, 30) if rng.uniform() < 0.6 else (235, 235, 210)

    def draw(canvas: Canvas, camera: Camera) -> None:
        instance = canvas.new_instance(label)
        x0, y0, x1, y1 = upright_box(camera, x, half * 1.05, 0, 0.3, depth)
        canvas.cast_shadow([(x0, y1 - (y1 - y0) * 0.3), (x1, y1 - (y1 - y0) * 0.3), (x1 + 2, y1 + 2), (x0 - 2, y1 + 2)],
                           0.5)
        for wheel in (-1, 1):
            canvas.rectangle(upright_box(camera, x + wheel * (half - 0.2), 0.17, 0, 0.55, depth), label, TYRE,
                             instance)
        if label == CAR:
            canvas.rectangle(upright_box(camera, x, half, 0.25, 0.95, depth), label, body, instance)
            top = [camera.project(x - half * 0.92, 0.95, depth), camera.project(x + half * 0.92, 0.95, depth),
                   camera.project(x + half * 0.7, height, depth), camera.project(x - half * 0.7, height, depth)]
            canvas.polygon(top, label, body, instance)
            glass = [camera.project(x - half * 0.8, 1.0, depth), camera.project(x + half * 0.8, 1.0, depth),
                     camera.project(x + half * 0.65, height - 0.08, depth),
                     camera.project(x - half * 0.65, height - 0.08, depth)]
            canvas.polygon(glass, label, DARK_GLASS, instance)
        else:
            canvas.rectangle(upright_box(camera, x, half, 0.3, height, depth), label, body, instance)
            if label in (BUS, TRAIN):
                canvas.rectangle(upright_box(camera, x, half * 0.9, 1.3 if label == BUS else 1.5, height - 0.5,
                                             depth), label, DARK_GLASS, instance)
            if label == TRAIN:
                canvas.rectangle(upright_box(camera, x, half, 0.3, 1.0, depth), label, second, instance)
                canvas.rectangle(upright_box(camera, x, 0.05, height, height + 1.2, depth), label, (60, 60, 60),
                                 instance)  # pantograph
            if label == TRUCK:
                canvas.rectangle(upright_box(camera, x, half, 0.3, 1.0, depth), label, second, instance)
        for lamp in (-1, 1):
            canvas.rectangle(upright_box(camera, x + lamp * (half - 0.15), 0.12, 0.75, 0.9, depth), label,
                             light_color, instance)
    return draw


def two_wheeler(rng, x: float, depth: float, label: int, ridden: bool) -> Draw:
    """Bicycle or motorcycle seen from behind, usually with its rider (label rider)."""
    color = class_color(rng, label)
    rider = person(rng, x, depth, RIDER, lift=0.35, height=rng.uniform(1.2, 1.4)) if ridden else None
    half = 0.3 if label == MOTORCYCLE else 0.04

    def draw(canvas: Canvas, camera: Camera) -> None:
        instance = canvas.new_instance(label)
        canvas.rectangle(upright_box(camera, x, 0.06 if label == BICYCLE else 0.1, 0, 0.7, depth), label, TYRE,
                         instance)
        canvas.rectangle(upright_box(camera, x, half, 0.3, 0.95, depth), label, color, instance)
        canvas.rectangle(upright_box(camera, x, 0.32, 1.0, 1.06, depth), label, color, instance)  # handlebar
        if rider is not None:
            rider(canvas, camera)
    return draw


def parked_bicycle(rng, x: float, depth: float) -> Draw:
    """Side view: two spoked wheels and a frame. As Cityscapes annotates bicycles, a wheel is labelled as a
    whole disc: the background seen between the spokes is bicycle too."""
    color = class_color(rng, BICYCLE)

    def draw(canvas: Canvas, camera: Camera) -> None:
        instance = canvas.new_instance(BICYCLE)
        scale = camera.scale(depth)
        ring = max(int(0.07 * scale), 1)
        for wheel in (-0.55, 0.55):
            box = upright_box(camera, x + wheel, 0.34, 0, 0.68, depth)
            canvas.claim_ellipse(box, BICYCLE, instance)
            centre = camera.project(x + wheel, 0.34, depth)
            for angle in (0.0, np.pi / 3, 2 * np.pi / 3):
                dx, dy = 0.34 * scale * np.cos(angle), 0.34 * scale * np.sin(angle)
                canvas.line([(centre[0] - dx, centre[1] - dy), (centre[0] + dx, centre[1] + dy)], BICYCLE, TYRE,
                            1, instance)
            canvas.ellipse(box, BICYCLE, TYRE, instance, ring)
        frame = [camera.project(x - 0.55, 0.34, depth), camera.project(x, 0.8, depth),
                 camera.project(x + 0.55, 0.34, depth), camera.project(x - 0.1, 0.34, depth),
                 camera.project(x, 0.8, depth)]
        canvas.line(frame, BICYCLE, color, max(0.07 * scale, 1), instance)
    return draw


def anomaly(rng, x: float, depth: float, size: float, families: dict[int, str]) -> Draw:
    """An anomaly object of ``size`` metres standing on the ground at (x, depth)."""
    sprite_rng = np.random.default_rng(rng.integers(2**63))

    def draw(canvas: Canvas, camera: Camera) -> None:
        width = max(int(round(size * camera.scale(depth))), 5)
        sprite = anomaly_sprite(sprite_rng, width)
        h, w = sprite.mask.shape
        cx, ground_y = camera.project(x, 0, depth)
        left, top = int(round(cx - w / 2)), int(round(ground_y - h * sprite_rng.uniform(0.85, 1.0)))
        instance = canvas.new_instance(ANOMALY_LABEL)
        families[instance] = sprite.family
        canvas.cast_shadow([(left, ground_y - h * 0.1), (left + w, ground_y - h * 0.1), (left + w + 2, ground_y + 2),
                            (left - 2, ground_y + 2)], 0.4)
        canvas.sprite(sprite, left, top, ANOMALY_LABEL, instance)
    return draw


def populate(rng: np.random.Generator, layout: Layout) -> tuple[list[tuple[float, Draw]], list]:
    """(depth, draw) for every upright object of the scene (no anomalies), and the road users as
    (x, depth, half width) so anomalies can be placed where they are not hidden."""
    items: list[tuple[float, Draw]] = []
    road_users: list[tuple[float, float, float]] = []  # (x, depth, half width) of things on the road
    lane_centres = np.arange(layout.road_left + layout.lane_width / 2, layout.road_right, layout.lane_width)

    def sidewalk_x(side: int, inner: float = 0.3, outer: float = 0.3) -> float:
        return sidewalk_position(rng, layout, side, inner, outer)

    for side in (-1, 1):
        spacing, depth = rng.uniform(12, 35), rng.uniform(2, 15)
        while depth < 110:
            items.append((depth, pole(rng, layout.curb(side) + side * 0.5, depth, side)))
            depth += spacing * rng.uniform(0.7, 1.3)
        if rng.uniform() < 0.6:
            spacing, depth = rng.uniform(8, 20), rng.uniform(6, 20)
            while depth < 90:
                items.append((depth, tree(rng, layout.edge(side) - side * 0.8, depth)))
                depth += spacing * rng.uniform(0.8, 1.2)
        for _ in range(int(rng.integers(0, 5))):  # parked cars along the curb
            items.append((d := rng.uniform(5, 70), car(rng, layout.curb(side) - side * 1.1, d)))
            road_users.append((layout.curb(side) - side * 1.1, d, 1.0))
        for _ in range(int(rng.integers(0, 6))):
            items.append((d := rng.uniform(4, 50), person(rng, sidewalk_x(side), d)))
        if rng.uniform() < 0.6:
            items.append((d := rng.uniform(4, 30), parked_bicycle(rng, sidewalk_x(side, 0.6, 0.6), d)))

    for lane in lane_centres:
        depth = rng.uniform(6, 25)
        while depth < 120 and rng.uniform() < 0.7:
            roll = rng.uniform()
            label = CAR if roll < 0.75 else TRUCK if roll < 0.88 else BUS
            x = lane + rng.uniform(-0.3, 0.3)
            items.append((depth, car(rng, x, depth, label)))
            road_users.append((x, depth, 1.3))
            depth += rng.uniform(12, 40)
    if layout.tram:
        d = rng.uniform(8, 45)
        items.append((d, car(rng, (layout.road_left + layout.road_right) / 2, d, TRAIN)))
        road_users.append(((layout.road_left + layout.road_right) / 2, d, 1.3))
    for _ in range(int(rng.integers(1, 4))):  # riders near the road edge
        label = BICYCLE if rng.uniform() < 0.5 else MOTORCYCLE
        side = -1 if rng.uniform() < 0.5 else 1
        d = rng.uniform(4, 30)
        x = layout.curb(side) - side * rng.uniform(0.6, 1.5)
        items.append((d, two_wheeler(rng, x, d, label, True)))
        road_users.append((x, d, 0.4))
    if rng.uniform() < 0.5:  # a parked motorcycle
        side = -1 if rng.uniform() < 0.5 else 1
        items.append((d := rng.uniform(5, 30), two_wheeler(rng, sidewalk_x(side), d, MOTORCYCLE, False)))
    for _ in range(int(rng.integers(0, 3))):  # pedestrians crossing
        x = rng.uniform(layout.road_left, layout.road_right)
        items.append((d := rng.uniform(6, 35), person(rng, x, d)))
        road_users.append((x, d, 0.4))

    return items, road_users


def sidewalk_position(rng: np.random.Generator, layout: Layout, side: int, inner: float, outer: float) -> float:
    """A lateral position on the sidewalk of ``side``, ``inner`` m from the curb and ``outer`` m inside its edge."""
    lo, hi = sorted((layout.curb(side) + side * inner, layout.edge(side) - side * outer))
    return rng.uniform(lo, hi)


def place_anomalies(rng: np.random.Generator, camera: Camera, layout: Layout, road_users: list, count: int
                    ) -> tuple[list[tuple[float, Draw]], dict[int, str]]:
    """(depth, draw) of ``count`` anomalies, 70% on the road in front of the road users, the rest beside it;
    and the dict their draws record instance id -> shape family in."""
    items: list[tuple[float, Draw]] = []
    families: dict[int, str] = {}
    # The nearest ground visible above the bottom rows (and above an ego hood).
    nearest = camera.focal / camera.max_scale * 1.35
    for _ in range(count):
        size = float(np.exp(rng.uniform(np.log(0.15), np.log(1.8))))
        for _attempt in range(20):  # a spot inside the frame
            if rng.uniform() < 0.7:  # an obstacle on the road, in front of the road users it would hide behind
                x = rng.uniform(layout.road_left + 0.3, layout.road_right - 0.3)
                blockers = [d for ux, d, half in road_users if abs(ux - x) < half + size / 2 + 0.5]
                far = min([45.0] + [d - 3.0 for d in blockers])
                d = rng.uniform(nearest, far) if far > nearest + 1 else rng.uniform(nearest, nearest + 1)
            else:
                side = -1 if rng.uniform() < 0.5 else 1
                x, d = sidewalk_position(rng, layout, side, 0.2, -1.0), rng.uniform(max(nearest, 4.0), 35)
            column = camera.project(x, 0, d)[0]
            if size * camera.scale(d) < column < camera.width - size * camera.scale(d):
                break
        items.append((d, anomaly(rng, x, d, size, families)))
    return items, families


def draw_ego_hood(rng: np.random.Generator, canvas: Canvas, camera: Camera) -> None:
    height, width = camera.height, camera.width
    top = height * (1 - rng.uniform(0.05, 0.12))
    canvas.ellipse([-0.2 * width, top, 1.2 * width, height + (height - top) * 2], VOID_LABEL, (25, 25, 28))


def generate_frame(rng: np.random.Generator | int, height: int = 512, width: int = 1024, anomalies: int = 0
                   ) -> Frame:
    """One scene; ``anomalies`` objects of unknown classes are placed on and beside the road."""
    if height < 32 or width < 32:
        raise ValueError(f"frames must be at least 32x32 pixels, got {height}x{width}")
    if anomalies < 0:
        raise ValueError(f"anomalies must be >= 0, got {anomalies}")
    rng = np.random.default_rng(rng)
    camera, layout, palette = sample_camera(rng, height, width), sample_layout(rng), Palette()
    labels, paint = draw_ground(rng, camera, layout, palette)
    canvas = Canvas(labels, paint, palette)
    draw_background(rng, canvas, camera, layout)
    # Anomalies draw from their own stream: the same seed with and without them gives the same scene.
    anomaly_rng = np.random.default_rng(rng.integers(2**63))
    items, road_users = populate(rng, layout)
    anomaly_items, families = place_anomalies(anomaly_rng, camera, layout, road_users, anomalies)
    items += anomaly_items
    for _, draw in sorted(items, key=lambda item: -item[0]):
        draw(canvas, camera)
    if rng.uniform() < 0.35:
        draw_ego_hood(rng, canvas, camera)
    labels = np.asarray(canvas.labels).copy()
    instances = np.asarray(canvas.instances, np.int32).copy()
    instances[~np.isin(labels, list(THING_LABELS))] = 0
    # Shadows fall on the ground only: an object drawn later over a shadowed spot stays lit.
    shadow = np.where(np.isin(labels, (ROAD, SIDEWALK, TERRAIN)), canvas.shadow_map(), np.float32(1.0))
    image = render(labels, np.asarray(canvas.paint, np.int32), palette, shadow, camera.horizon, rng)
    return Frame(image, labels, instances, dict(canvas.instance_labels), families)
