"""Where the latent map draws things: photo clouds round their class, classes pushed apart, labels that miss.

UMAP keeps neighbourhoods, and on a well-aligned model it puts all of a class's photos on one spot under its
description: drawn as they are, five photos are one dot hidden by a diamond, and neighbouring classes sit on
top of one another. The map therefore draws, in a box of nominal screen pixels (the smallest plot the app
shows, a phone's):

* each class's photos in a **cloud** of rings round the centre of their UMAP points, their order round the
  ring following their real direction from that centre, and the class's description in the hole at the
  middle when it lies there (a misaligned description stays where UMAP put it, joined by a line);
* every class (cloud and description together) **moved as little as needed** so that no two overlap;
* a photo far from its class's centre (a stray) **where it is**, not in the cloud;
* labels at the first place round their point that collides with no other label (a leader line when far).

Everything else drawn (your image, a draft) moves with the class nearest to it. Positions therefore keep who
is near whom, not distances; the axes meant nothing before either.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: The box the layout is computed in, in screen pixels: a phone's plot area (a wider plot only stretches it,
#: which adds room and never overlap).
BOX_WIDTH = 300.0
BOX_HEIGHT = 440.0
_MARGIN = 14.0
_GAP = 3.0  # between the discs of two classes
_MAX_PHOTO = 7.0  # photo marker diameter (px) when there is room
_MIN_PHOTO = 4.0
_CROWDING = 0.3  # the share of the box the photos may cover before they are drawn smaller
_RELAX_STEPS = 400
_STRAY_FACTOR = 3.0  # a photo this many cloud radii from its class's centre is drawn where it is
#: Average glyph width as a share of the font size, and the line height: a generous guess for sans-serif
#: text, so estimated label boxes are never smaller than the rendered ones.
_GLYPH = 0.62
_LINE = 1.35
_LEADER_PX = 25.0


@dataclass(frozen=True)
class MapLayout:
    """Display positions (nominal pixels, y up) of every description and photo, and how to place others."""

    class_xy: np.ndarray  # (C, 2)
    image_xy: np.ndarray  # (N, 2)
    photo_size: float  # marker diameter, px
    description_size: float
    cloud_centre: np.ndarray  # (C, 2) where each class's photo cloud is centred (its description if none)
    cloud_radius: np.ndarray  # (C,) the cloud's outer radius, px (a class without photos: its description's)
    _anchors: np.ndarray  # (C, 2) original class positions, normalised to the box
    _shift: np.ndarray  # (C, 2) how far each class was moved
    _scale: np.ndarray  # (2,) data units -> px
    _offset: np.ndarray  # (2,)

    def place(self, xy: Sequence[float]) -> tuple[float, float]:
        """Where another point of the original map (your image, a draft) is drawn: moved with the class
        whose original position is nearest to it."""
        point = np.asarray(xy, dtype=np.float64) * self._scale + self._offset
        if not len(self._anchors):
            return float(point[0]), float(point[1])
        nearest = int(np.argmin(np.linalg.norm(self._anchors - point, axis=1)))
        moved = point + self._shift[nearest]
        return float(moved[0]), float(moved[1])


def layout_map(class_xy: np.ndarray, image_xy: np.ndarray, image_class: np.ndarray) -> MapLayout:
    """The display layout of a scene (see the module's docstring)."""
    class_xy = np.nan_to_num(np.asarray(class_xy, dtype=np.float64))
    image_xy = np.nan_to_num(np.asarray(image_xy, dtype=np.float64)).reshape(-1, 2)
    image_class = np.asarray(image_class, dtype=np.int64)
    scale, offset = _normalisation(np.vstack([class_xy, image_xy]))
    anchors = class_xy * scale + offset
    photos = image_xy * scale + offset
    n_classes = len(anchors)
    photo_size = _photo_size(len(photos))
    description_size = round(photo_size * 1.7)
    hole = description_size / 2 + photo_size / 2 + 1.0
    centres = anchors.copy()
    offsets = np.zeros_like(photos)
    cloud = np.full(n_classes, description_size / 2 + 1.0)  # a class without photos: its description
    stray = np.zeros(len(photos), dtype=bool)
    for index in range(n_classes):
        own = np.flatnonzero(image_class == index)
        if not own.size:
            continue
        centres[index] = photos[own].mean(axis=0)
        slots, cloud[index] = _cloud_slots(own.size, photo_size, hole)
        real = photos[own] - centres[index]
        far = np.linalg.norm(real, axis=1) > _STRAY_FACTOR * cloud[index]
        stray[own[far]] = True
        kept = own[~far]
        order = np.argsort(np.arctan2(real[~far, 1], real[~far, 0]), kind="stable")
        offsets[kept[order]] = slots[: kept.size]
        offsets[own[far]] = real[far]
        if np.linalg.norm(anchors[index] - centres[index]) <= hole:
            anchors[index] = centres[index]  # the description sits in its cloud's hole
    discs, owner, disc_radius = _discs(anchors, centres, cloud, description_size / 2 + 1.0)
    shift = _relax(discs, owner, disc_radius, n_classes)
    placed_centres = centres + shift
    placed_photos = placed_centres[image_class] + offsets  # a stray keeps its real offset from the centre
    return MapLayout(
        class_xy=anchors + shift,
        image_xy=placed_photos,
        photo_size=photo_size,
        description_size=description_size,
        cloud_centre=placed_centres,
        cloud_radius=cloud,
        _anchors=class_xy * scale + offset,
        _shift=shift,
        _scale=scale,
        _offset=offset,
    )


_LAYOUTS: dict[bytes, MapLayout] = {}
_LAYOUTS_KEPT = 16
_LAYOUTS_LOCK = threading.Lock()


def cached_layout(class_xy: np.ndarray, image_xy: np.ndarray, image_class: np.ndarray) -> MapLayout:
    """:func:`layout_map`, reused while the points are the same: a draft's every edit redraws the map, and
    the relaxation is the slowest part of a figure. The last few layouts are kept (one per class list)."""
    key = b"|".join(
        np.ascontiguousarray(part).tobytes()
        for part in (
            np.asarray(class_xy, dtype=np.float64),
            np.asarray(image_xy, dtype=np.float64),
            np.asarray(image_class, dtype=np.int64),
        )
    )
    with _LAYOUTS_LOCK:
        layout = _LAYOUTS.get(key)
    if layout is None:
        layout = layout_map(class_xy, image_xy, image_class)
        with _LAYOUTS_LOCK:
            if len(_LAYOUTS) >= _LAYOUTS_KEPT:
                _LAYOUTS.pop(next(iter(_LAYOUTS)))  # the oldest
            _LAYOUTS[key] = layout
    return layout


def _normalisation(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale and offset (per axis) that fit ``points`` into the box less its margin."""
    if not len(points):
        return np.ones(2), np.array([BOX_WIDTH / 2, BOX_HEIGHT / 2])
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.maximum(high - low, 1e-9)
    room = np.array([BOX_WIDTH, BOX_HEIGHT]) - 2 * (_MARGIN + 2 * _MAX_PHOTO)
    scale = room / span
    return scale, (_MARGIN + 2 * _MAX_PHOTO) - low * scale


def _photo_size(n_photos: int) -> float:
    """Photos are drawn smaller when so many that, at full size, they would cover much of the box."""
    if not n_photos:
        return _MAX_PHOTO
    fitting = math.sqrt(_CROWDING * BOX_WIDTH * BOX_HEIGHT / n_photos)
    return float(min(_MAX_PHOTO, max(_MIN_PHOTO, math.floor(fitting))))


def _cloud_slots(count: int, size: float, hole: float) -> tuple[np.ndarray, float]:
    """``count`` positions on rings round a hole of radius ``hole`` (marker diameter ``size``), and the
    cloud's outer radius. Each ring is filled at the spacing of one marker plus a little."""
    slots: list[tuple[float, float]] = []
    ring = hole + size / 2
    pitch = size + 1.5
    while len(slots) < count:
        capacity = max(1, int(2 * math.pi * ring / pitch))
        take = min(capacity, count - len(slots))
        # A part-filled outer ring spreads its few markers evenly, starting at the top.
        for step in range(take):
            angle = math.pi / 2 + 2 * math.pi * step / take
            slots.append((ring * math.cos(angle), ring * math.sin(angle)))
        ring += pitch
    return np.array(slots), ring - pitch + size / 2


def _discs(
    anchors: np.ndarray, centres: np.ndarray, cloud: np.ndarray, description_radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The discs that must not overlap, each owned by a class: its cloud (with its description in the hole,
    or its description alone when it has no photos), plus its description on its own when that lies
    outside the cloud (a misaligned class)."""
    discs, owner, radius = [], [], []
    for index in range(len(anchors)):
        discs.append(centres[index])
        owner.append(index)
        radius.append(cloud[index])
        if not np.array_equal(anchors[index], centres[index]):
            discs.append(anchors[index])
            owner.append(index)
            radius.append(description_radius)
    return np.array(discs).reshape(-1, 2), np.array(owner, dtype=np.int64), np.array(radius)


def _relax(discs: np.ndarray, owner: np.ndarray, radius: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class shifts that part overlapping discs of different classes, each moving as little as it can,
    and keep every disc inside the box. Deterministic (coincident discs part along a fixed direction)."""
    shift = np.zeros((n_classes, 2))
    if len(discs) < 2:
        return shift
    other = owner[:, None] != owner[None, :]
    needed = radius[:, None] + radius[None, :] + _GAP
    # Coincident discs part along a direction that depends on their indices only.
    fixed = np.arange(len(discs), dtype=np.float64)
    fallback = np.stack([np.cos(fixed * 2.399), np.sin(fixed * 2.399)], axis=1)
    counts = np.bincount(owner, minlength=n_classes).astype(np.float64)[:, None]
    low = radius[:, None] + _MARGIN / 2
    high = np.array([BOX_WIDTH, BOX_HEIGHT]) - low
    for _ in range(_RELAX_STEPS):
        position = discs + shift[owner]
        delta = position[:, None, :] - position[None, :, :]
        distance = np.linalg.norm(delta, axis=2)
        overlap = np.where(other, needed - distance, 0.0)
        inside = np.clip(position, low, high) - position
        if overlap.max() <= 0.05 and not np.abs(inside).max() > 0.05:
            break
        direction = np.where(
            distance[:, :, None] > 1e-6,
            delta / np.maximum(distance, 1e-6)[:, :, None],
            (fallback[:, None, :] - fallback[None, :, :]),
        )
        push = (np.clip(overlap, 0.0, None)[:, :, None] * direction).sum(axis=1) * 0.5 + inside
        moved = np.zeros_like(shift)
        np.add.at(moved, owner, push)
        shift += moved / counts
    return shift


# ---- labels ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlacedLabel:
    """A label's box centre (nominal px) for the point at ``point``; ``leader`` when drawn away from it."""

    text: str
    point: tuple[float, float]
    centre: tuple[float, float]
    leader: bool


def label_box(text: str, font_size: float) -> tuple[float, float]:
    """A generous estimate of a one-line label's width and height in px."""
    return len(text) * font_size * _GLYPH + 4.0, font_size * _LINE


def place_labels(
    items: Sequence[tuple[str, tuple[float, float], float]],
    obstacles: np.ndarray,
    font_size: float = 11.0,
    y_scale: float = 1.0,
) -> list[PlacedLabel]:
    """Put each label (text, point, the point's marker radius) at the first spot round its point that
    overlaps no label placed before and stays inside the box; among those, the one that best trades the
    markers it covers (``obstacles``: (M, 3) centre x, y and radius) against its distance from the point.
    In order: earlier items get the better spots. ``y_scale``: screen pixels per box unit upright, when the
    plot is lower than the box (a small map)."""
    placed: list[PlacedLabel] = []
    boxes: list[tuple[float, float, float, float]] = []
    for text, point, marker_radius in items:
        width, height = label_box(text, font_size)
        # A plot lower than the box: a line of text takes more of the box.
        height /= min(y_scale, 1.0)
        best: tuple[float, tuple[float, float], bool] | None = None
        for spot, leader in _candidates(point, marker_radius, width, height):
            # Slid inside the box where it sticks out (a long label near an edge); far from its point, a
            # leader line joins them.
            centre = (_within(spot[0], width, BOX_WIDTH), _within(spot[1], height, BOX_HEIGHT))
            leader = leader or abs(centre[0] - point[0]) > width / 2 + marker_radius
            box = (
                centre[0] - width / 2,
                centre[1] - height / 2,
                centre[0] + width / 2,
                centre[1] + height / 2,
            )
            if not _inside_box(box) or any(_overlaps(box, other) for other in boxes):
                continue
            # A marker covered costs as much as a leader line of _LEADER_PX: near, unless it hides markers.
            covered = _covered(box, obstacles)
            cost = covered + math.dist(centre, point) / _LEADER_PX
            if best is None or cost < best[0]:
                best = (cost, centre, leader)
            if not covered:  # spots come nearest first: none further on can cost less
                break
        if best is None:  # nowhere free: on its point (rare: dozens of long labels in a small box)
            best = (0.0, (point[0], point[1] + marker_radius + height / 2), False)
        _, centre, leader = best
        boxes.append(
            (centre[0] - width / 2, centre[1] - height / 2, centre[0] + width / 2, centre[1] + height / 2)
        )
        placed.append(PlacedLabel(text, point, centre, leader))
    return placed


def _candidates(
    point: tuple[float, float], radius: float, width: float, height: float
) -> list[tuple[tuple[float, float], bool]]:
    """Spots round a point, nearest first: above, below, right, left, then rings further out (leader)."""
    x, y = point
    near = radius + 2.0
    spots = [
        ((x, y + near + height / 2), False),
        ((x, y - near - height / 2), False),
        ((x + near + width / 2, y), False),
        ((x - near - width / 2, y), False),
    ]
    for distance in (18.0, 30.0, 45.0, 65.0, 90.0, 120.0, 160.0, 210.0):
        for step in range(16):
            angle = math.pi / 2 + 2 * math.pi * step / 16
            spots.append(
                (
                    (
                        x + math.cos(angle) * (distance + width / 2),
                        y + math.sin(angle) * (distance + height / 2),
                    ),
                    True,
                )
            )
    return spots


def _within(centre: float, size: float, limit: float) -> float:
    """A box centre moved so that the box (``size`` long) lies within [2, limit - 2], where it fits."""
    return min(max(centre, 2 + size / 2), limit - 2 - size / 2) if size <= limit - 4 else centre


def _inside_box(box: tuple[float, float, float, float]) -> bool:
    return box[0] >= 2 and box[1] >= 2 and box[2] <= BOX_WIDTH - 2 and box[3] <= BOX_HEIGHT - 2


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _covered(box: tuple[float, float, float, float], obstacles: np.ndarray) -> float:
    if not len(obstacles):
        return 0.0
    x, y, r = obstacles[:, 0], obstacles[:, 1], obstacles[:, 2]
    hit = (x + r > box[0]) & (x - r < box[2]) & (y + r > box[1]) & (y - r < box[3])
    return float(hit.sum())


def annotation(label: PlacedLabel, font_size: float) -> dict:
    """A label as a plotly annotation: at its spot, or away from it with a thin leader line to its point."""
    common = {
        "text": label.text,
        "font": {"size": font_size, "color": "black"},
        "bgcolor": "rgba(255,255,255,0.75)",
        "borderpad": 1,
        "xref": "x",
        "yref": "y",
    }
    if not label.leader:
        return {**common, "x": label.centre[0], "y": label.centre[1], "showarrow": False}
    return {
        **common,
        "x": label.point[0], "y": label.point[1], "ax": label.centre[0], "ay": label.centre[1],
        "axref": "x", "ayref": "y", "showarrow": True, "arrowhead": 0, "arrowwidth": 1,
        "arrowcolor": "#555", "standoff": 4,
    }  # fmt: skip
