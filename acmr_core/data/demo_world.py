"""The demo world: procedurally rendered objects whose classes are defined by attributes.

It is the offline data behind the default model bundle: nothing is downloaded, every image is drawn with PIL
by the code below and is a pure function of ``(class, seed, index)``.

Each class is one combination of six attribute groups (colour, pattern, shape, size, count, background), so
the class-attribute matrix is one-hot per group and a class never seen in training is a *new combination* of
attribute values that all occur in some seen class — the situation zero-shot learning is about.

Why these attributes and classes: the default bundle uses a ResNet-101 with seeded *random* weights (no
pretrained weights can be downloaded here; residual branches scaled by :data:`DEFAULT_RESIDUAL_SCALE`). A
linear probe on its pooled features reads colour, background, size, count and stripe/dot pattern well, but
shape at about chance (docs/benchmarks/demo.md). So no two classes differ only in shape, and every unseen
class differs from every other class in at least two of the *strong* groups (colour, pattern, size, count,
background). And the seen classes are many (42) and *balanced* — every two groups' value pairs occur about
equally often — because attribute decoders trained on few, confounded seen classes learn the confound instead
of the attribute and fail on new combinations (the 18 hand-picked seen classes of the first world did).

This module is the world and its renderer only; building the demo bundle from it is
:mod:`acmr_core.pipelines.demo`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from acmr_core.errors import ACMRError
from acmr_core.fileio import atomic_write, write_json

# Render seeds. The bundle records which seeds trained it; evaluation refuses those.
TRAIN_SEED = 0
GALLERY_SEED = 1  # example images and the latent-space plot (never used to fit the model)
#: "Show examples" of a class in the app, and the render-your-class benchmark: never used to build a bundle.
EXAMPLES_SEED = 7
DEFAULT_EVAL_SEED = 2026
RENDER_SIZE = 224
# Supersampling factor: draw large, then downsample with a good filter, for anti-aliased edges.
_SUPERSAMPLE = 2

ATTRIBUTE_GROUPS: dict[str, tuple[str, ...]] = {
    "colour": ("red", "yellow", "green", "blue", "purple"),
    "pattern": ("plain", "striped", "dotted"),
    "shape": ("circle", "square", "triangle"),
    "size": ("small", "large"),
    "count": ("one", "three"),
    "background": ("light", "dark"),
}
# Groups a random-weight ResNet-101 reads reliably; shape is the weak one (see the module docstring).
STRONG_GROUPS = ("colour", "pattern", "size", "count", "background")
ATTRIBUTE_SEPARATOR = ": "

_COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "yellow": (240, 200, 30),
    "green": (44, 160, 44),
    "blue": (31, 100, 220),
    "purple": (148, 70, 189),
}
# Pattern marks are drawn in a fixed near-white ink: visible on every colour, on both backgrounds.
_INK_RGB = (245, 245, 245)
# Object radius (in output pixels) ranges per size value.
_RADIUS_RANGE = {"small": (22.0, 28.0), "large": (44.0, 54.0)}
# Background grey-level ranges per background value.
_BACKGROUND_LEVEL = {"light": (205, 240), "dark": (15, 55)}

# (colour, pattern, shape, size, count, background, seen), from benchmarks/design_demo_world.py --seen 42
# --unseen 6 --seed 0: every class has its own strong-group combination (no two differ only in shape); every
# unseen class differs from every other class in >= 2 strong groups; the seen classes are pairwise balanced
# (each two groups' value pairs about equally often) so that no attribute is confounded with another in
# training; every value of every group occurs in some seen class (tests check all of this).
_CLASS_TABLE: tuple[tuple[str, str, str, str, str, str, bool], ...] = (
    ("blue", "dotted", "square", "large", "one", "dark", False),
    ("blue", "dotted", "square", "small", "three", "dark", True),
    ("blue", "dotted", "triangle", "small", "one", "light", True),
    ("blue", "plain", "circle", "small", "one", "dark", True),
    ("blue", "plain", "circle", "small", "three", "light", True),
    ("blue", "plain", "triangle", "large", "three", "light", True),
    ("blue", "striped", "circle", "large", "one", "light", True),
    ("blue", "striped", "square", "large", "three", "dark", True),
    ("blue", "striped", "square", "small", "one", "dark", True),
    ("blue", "striped", "triangle", "small", "three", "light", True),
    ("green", "dotted", "circle", "large", "three", "light", True),
    ("green", "dotted", "square", "large", "one", "light", True),
    ("green", "dotted", "square", "small", "one", "dark", True),
    ("green", "dotted", "triangle", "small", "three", "dark", True),
    ("green", "plain", "circle", "large", "three", "dark", False),
    ("green", "plain", "triangle", "small", "one", "light", True),
    ("green", "striped", "circle", "large", "one", "dark", True),
    ("green", "striped", "circle", "small", "one", "dark", True),
    ("green", "striped", "square", "large", "three", "light", True),
    ("green", "striped", "triangle", "small", "three", "light", True),
    ("purple", "dotted", "circle", "large", "three", "dark", True),
    ("purple", "dotted", "square", "large", "one", "light", True),
    ("purple", "dotted", "triangle", "small", "three", "light", False),
    ("purple", "plain", "circle", "large", "one", "dark", True),
    ("purple", "plain", "circle", "small", "one", "light", True),
    ("purple", "plain", "square", "large", "three", "light", True),
    ("purple", "plain", "triangle", "small", "three", "dark", True),
    ("purple", "striped", "square", "small", "one", "dark", True),
    ("purple", "striped", "triangle", "large", "one", "light", True),
    ("red", "dotted", "circle", "small", "three", "dark", True),
    ("red", "dotted", "triangle", "large", "one", "light", True),
    ("red", "plain", "circle", "small", "three", "light", True),
    ("red", "plain", "square", "large", "one", "dark", True),
    ("red", "plain", "square", "large", "three", "light", True),
    ("red", "plain", "triangle", "small", "three", "dark", True),
    ("red", "striped", "circle", "large", "three", "dark", True),
    ("red", "striped", "circle", "small", "one", "light", False),
    ("red", "striped", "triangle", "large", "one", "dark", True),
    ("yellow", "dotted", "circle", "small", "one", "dark", True),
    ("yellow", "dotted", "circle", "small", "one", "light", True),
    ("yellow", "dotted", "square", "large", "three", "light", True),
    ("yellow", "dotted", "triangle", "large", "three", "dark", True),
    ("yellow", "plain", "square", "small", "one", "dark", True),
    ("yellow", "plain", "square", "small", "three", "light", True),
    ("yellow", "plain", "triangle", "large", "one", "light", False),
    ("yellow", "striped", "circle", "large", "three", "light", True),
    ("yellow", "striped", "square", "small", "three", "dark", False),
    ("yellow", "striped", "triangle", "large", "one", "dark", True),
)


@dataclass(frozen=True)
class DemoClass:
    """One class of the demo world: a value for every attribute group, and whether training sees it."""

    values: dict[str, str]
    seen: bool

    @property
    def name(self) -> str:
        """A readable, unique name such as ``large red striped circle on dark``."""
        v = self.values
        body = f"{v['size']} {v['colour']} {v['pattern']} {v['shape']}"
        if v["count"] == "three":
            body = f"three {body}s"
        return f"{body} on {v['background']}"

    @property
    def description(self) -> str:
        v = self.values
        how_many = "a single" if v["count"] == "one" else "three"
        noun = v["shape"] if v["count"] == "one" else f"{v['shape']}s"
        return f"{how_many} {v['size']} {v['pattern']} {v['colour']} {noun} on a {v['background']} background"

    @property
    def attribute_names(self) -> list[str]:
        return [f"{group}{ATTRIBUTE_SEPARATOR}{value}" for group, value in self.values.items()]


@dataclass(frozen=True)
class DemoWorld:
    """A set of demo classes over :data:`ATTRIBUTE_GROUPS`, with a deterministic renderer."""

    classes: tuple[DemoClass, ...]
    groups: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(ATTRIBUTE_GROUPS))

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def attribute_names(self) -> list[str]:
        """Grouped attribute names, ``"group: value"``, in a fixed order."""
        return [f"{g}{ATTRIBUTE_SEPARATOR}{v}" for g, values in self.groups.items() for v in values]

    def attribute_matrix(self) -> np.ndarray:
        """``(n_classes, n_attributes)`` float32, one-hot per attribute group."""
        index = {name: i for i, name in enumerate(self.attribute_names)}
        matrix = np.zeros((len(self.classes), len(index)), dtype=np.float32)
        for row, demo_class in enumerate(self.classes):
            for name in demo_class.attribute_names:
                matrix[row, index[name]] = 1.0
        return matrix

    @property
    def seen_mask(self) -> np.ndarray:
        return np.array([c.seen for c in self.classes], dtype=bool)

    @property
    def seen_classes(self) -> np.ndarray:
        return np.flatnonzero(self.seen_mask)

    @property
    def unseen_classes(self) -> np.ndarray:
        return np.flatnonzero(~self.seen_mask)

    def subset(self, names: Sequence[str]) -> DemoWorld:
        """A smaller world with the named classes (in the given order), e.g. for fast tests."""
        by_name = {c.name: c for c in self.classes}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ACMRError(
                f"unknown demo class {missing[0]!r}; see acmr_core.data.demo_world.default_world()"
            )
        return DemoWorld(classes=tuple(by_name[n] for n in names), groups=self.groups)

    def uncovered_values(self) -> list[str]:
        """Attribute values that no *seen* class has (empty for a proper zero-shot split)."""
        covered = {name for c in self.classes if c.seen for name in c.attribute_names}
        return [name for name in self.attribute_names if name not in covered]

    def validation_unseen(self, seed: int = 0) -> np.ndarray:
        """Seen classes to play "unseen" in the validation split, keeping the zero-shot property there too.

        As many as the world's unseen share (at least one), chosen in a seeded order, each only if the
        remaining validation-seen classes still cover every attribute value.
        """
        seen = self.seen_classes
        wanted = max(1, round(seen.size * self.unseen_classes.size / len(self.classes)))
        chosen: list[int] = []
        for candidate in np.random.default_rng(seed).permutation(seen):
            rest = [int(c) for c in seen if c != candidate and c not in chosen]
            covered = {name for c in rest for name in self.classes[c].attribute_names}
            if len(rest) >= 2 and covered >= set(self.attribute_names) - set(self.uncovered_values()):
                chosen.append(int(candidate))
            if len(chosen) == wanted:
                break
        return np.sort(np.asarray(chosen, dtype=np.int64))

    def render(self, class_index: int, seed: int, index: int, size: int = RENDER_SIZE) -> Image.Image:
        """Image ``index`` of class ``class_index`` for render ``seed``: a pure function of the three."""
        return render_combination(self.classes[class_index].values, seed, index, size)

    def image_id(self, class_index: int, seed: int, index: int) -> str:
        slug = self.classes[class_index].name.replace(" ", "-")
        return f"demo/s{seed}/{slug}/{index:04d}"

    def renders(
        self, seed: int, per_class: int, class_indices: Sequence[int] | None = None, size: int = RENDER_SIZE
    ) -> Iterator[tuple[Image.Image, int, str]]:
        """Yield ``(image, class_index, image_id)`` for ``per_class`` images of each chosen class."""
        indices = range(len(self.classes)) if class_indices is None else class_indices
        for class_index in indices:
            for i in range(per_class):
                yield (
                    self.render(class_index, seed, i, size),
                    int(class_index),
                    self.image_id(class_index, seed, i),
                )


def default_world() -> DemoWorld:
    """The 48-class demo world (42 seen, 6 unseen) of the shipped default bundle."""
    keys = tuple(ATTRIBUTE_GROUPS)
    classes = tuple(
        DemoClass(values=dict(zip(keys, row[:6], strict=True)), seen=row[6]) for row in _CLASS_TABLE
    )
    return DemoWorld(classes=classes)


# --- rendering -----------------------------------------------------------------------------------------


def render_combination(values: dict[str, str], seed: int, index: int, size: int = RENDER_SIZE) -> Image.Image:
    """Image ``index`` of an attribute combination for render ``seed``: a pure function of the three.

    Keyed on the combination's readable name (not a class position), so a subset of the world, or a
    user-defined class with the same values, renders exactly the same images.
    """
    key = [seed, index, *DemoClass(values=values, seen=False).name.encode()]
    return render_class(values, np.random.default_rng(np.random.SeedSequence(key)), size)


def combination_from_attributes(attributes: dict[str, float]) -> dict[str, str]:
    """The renderable combination of an attribute vector (``{"colour: red": 1.0, ...}``, values in [0, 1]).

    Every group needs exactly one value that is on (>= 0.5): that is what the renderer can draw. Anything
    else (two colours, no shape, an attribute the demo world does not know) is refused, naming the group.
    """
    known = {f"{g}{ATTRIBUTE_SEPARATOR}{v}" for g, values in ATTRIBUTE_GROUPS.items() for v in values}
    unknown = [name for name, value in attributes.items() if name not in known and float(value) >= 0.5]
    if unknown:
        raise ACMRError(f"the demo world cannot draw attribute {unknown[0]!r}")
    combination: dict[str, str] = {}
    for group, values in ATTRIBUTE_GROUPS.items():
        on = [v for v in values if float(attributes.get(f"{group}{ATTRIBUTE_SEPARATOR}{v}", 0.0)) >= 0.5]
        if len(on) != 1:
            found = ", ".join(on) if on else "none"
            raise ACMRError(
                f"to be drawn, a class needs exactly one {group} (one of {', '.join(values)}); it has {found}"
            )
        combination[group] = on[0]
    return combination


def complete_attributes(
    attributes: dict[str, float], typical: dict[str, str]
) -> tuple[dict[str, float], dict[str, str]]:
    """Fill in every group a class leaves empty, so it can be drawn: ``(completed attributes, assumed)``.

    A group with no value on (>= 0.5) gets ``typical[group]`` at 1.0, and ``assumed`` says so, for the
    visitor to be told; a group with two values on, or an attribute the world does not know, cannot be
    completed and is refused as :func:`combination_from_attributes` refuses it, naming the group.
    """
    completed = dict(attributes)
    assumed: dict[str, str] = {}
    for group, values in ATTRIBUTE_GROUPS.items():
        if not any(float(completed.get(f"{group}{ATTRIBUTE_SEPARATOR}{v}", 0.0)) >= 0.5 for v in values):
            completed[f"{group}{ATTRIBUTE_SEPARATOR}{typical[group]}"] = 1.0
            assumed[group] = typical[group]
    combination_from_attributes(completed)  # what is still wrong (two colours, unknown names) is refused
    return completed, assumed


def typical_values(unit_attributes: np.ndarray, attribute_names: list[str]) -> dict[str, str]:
    """Each group's most common value over a world's classes, given as (classes, attributes) values in
    [0, 1] (ties: the first in the group's order)."""
    on = np.asarray(unit_attributes) >= 0.5
    index = {name: position for position, name in enumerate(attribute_names)}
    typical = {}
    for group, values in ATTRIBUTE_GROUPS.items():
        counts = [
            int(on[:, index[key]].sum()) if (key := f"{group}{ATTRIBUTE_SEPARATOR}{v}") in index else -1
            for v in values
        ]
        typical[group] = values[int(np.argmax(counts))]
    return typical


def render_class(values: dict[str, str], rng: np.random.Generator, size: int = RENDER_SIZE) -> Image.Image:
    """Draw one image of an attribute combination, with random (but ``rng``-determined) nuisance variation."""
    canvas_size = size * _SUPERSAMPLE
    scale = canvas_size / RENDER_SIZE
    level = int(rng.integers(*_BACKGROUND_LEVEL[values["background"]]))
    tint = rng.integers(-8, 9, size=3)
    background = tuple(int(np.clip(level + t, 0, 255)) for t in tint)
    image = Image.new("RGB", (canvas_size, canvas_size), background)

    radius_low, radius_high = _RADIUS_RANGE[values["size"]]
    n_objects = 1 if values["count"] == "one" else 3
    centres = _object_centres(n_objects, rng) * scale
    base = np.array(_COLOUR_RGB[values["colour"]])
    for centre in centres:
        radius = float(rng.uniform(radius_low, radius_high)) * scale
        colour = tuple(int(c) for c in np.clip(base + rng.integers(-18, 19, size=3), 0, 255))
        mask = _shape_mask(values["shape"], centre, radius, float(rng.uniform(0, 2 * math.pi)), canvas_size)
        fill = _pattern_layer(values["pattern"], colour, radius, rng, canvas_size)
        image.paste(fill, (0, 0), mask)
    if _SUPERSAMPLE != 1:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return image


def _object_centres(n_objects: int, rng: np.random.Generator) -> np.ndarray:
    """Centres in output-pixel units, inside the central region that survives the backbone's centre crop."""
    middle = RENDER_SIZE / 2
    if n_objects == 1:
        return middle + rng.uniform(-22, 22, size=(1, 2))
    # Three objects on a jittered, randomly rotated triangle so they overlap little.
    start = rng.uniform(0, 2 * math.pi)
    angles = start + np.arange(3) * 2 * math.pi / 3 + rng.uniform(-0.25, 0.25, size=3)
    spread = rng.uniform(52, 62)
    offsets = np.stack([np.cos(angles), np.sin(angles)], axis=1) * spread
    return middle + offsets + rng.uniform(-6, 6, size=(3, 2))


def _shape_mask(shape: str, centre: np.ndarray, radius: float, angle: float, canvas_size: int) -> Image.Image:
    mask = Image.new("L", (canvas_size, canvas_size), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = float(centre[0]), float(centre[1])
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
    elif shape in ("square", "triangle"):
        corners = 4 if shape == "square" else 3
        # Equal-area-ish polygons: a square/triangle slightly larger than the circle's radius looks balanced.
        r = radius * (1.15 if shape == "square" else 1.3)
        points = [
            (
                cx + r * math.cos(angle + k * 2 * math.pi / corners),
                cy + r * math.sin(angle + k * 2 * math.pi / corners),
            )
            for k in range(corners)
        ]
        draw.polygon(points, fill=255)
    else:
        raise ACMRError(f"unknown shape {shape!r}; expected one of {', '.join(ATTRIBUTE_GROUPS['shape'])}")
    return mask


def _pattern_layer(
    pattern: str, colour: tuple[int, ...], radius: float, rng: np.random.Generator, canvas_size: int
) -> Image.Image:
    """The object's surface over the whole canvas; the shape mask cuts it out."""
    layer = Image.new("RGB", (canvas_size, canvas_size), colour)
    if pattern == "plain":
        return layer
    draw = ImageDraw.Draw(layer)
    # Marks scale with the object so a small striped object still shows a few stripes.
    period = max(radius * float(rng.uniform(0.45, 0.6)), 4.0)
    if pattern == "striped":
        angle = float(rng.uniform(0, math.pi))
        direction = np.array([math.cos(angle), math.sin(angle)])
        normal = np.array([-direction[1], direction[0]])
        middle = np.array([canvas_size / 2, canvas_size / 2])
        half = canvas_size  # long enough to cross the canvas in any direction
        width = max(int(period * 0.45), 2)
        for k in range(-int(canvas_size / period) - 1, int(canvas_size / period) + 2):
            base = middle + normal * k * period
            start, end = base - direction * half, base + direction * half
            draw.line([tuple(start), tuple(end)], fill=_INK_RGB, width=width)
    elif pattern == "dotted":
        dot = period * 0.22
        offset = rng.uniform(0, period, size=2)
        steps = np.arange(-1, canvas_size / period + 1) * period
        for y in steps + offset[1]:
            for x in steps + offset[0]:
                draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=_INK_RGB)
    else:
        raise ACMRError(
            f"unknown pattern {pattern!r}; expected one of {', '.join(ATTRIBUTE_GROUPS['pattern'])}"
        )
    return layer


# --- the demo bundle's backbone, and rendered features -----------------------------------------------------

#: Residual-branch scale of the demo bundle's random backbone (``backbone.seeded_random_state_dict``): 0.1
#: read pattern 82 / size 93 / count 93 % in the linear probe against 58 / 82 / 78 % for timm's zero-init.
DEFAULT_RESIDUAL_SCALE = 0.1


class FeatureExtractor(Protocol):
    """What :func:`extract_renders` needs of a backbone (:class:`acmr_core.features.backbone.Backbone`)."""

    batch_size: int

    @property
    def feature_dim(self) -> int: ...

    def features(self, images: Sequence[Image.Image]) -> np.ndarray: ...


def extract_renders(
    world: DemoWorld,
    backbone: FeatureExtractor,
    seed: int,
    per_class: int,
    class_indices: Sequence[int] | None = None,
    progress: bool = True,
    description: str = "render + extract",
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Render images and run them through ``backbone``: ``(features (N, D), labels (N,), image ids)``."""
    indices = list(range(len(world.classes)) if class_indices is None else class_indices)
    total = len(indices) * per_class
    features, labels, ids, batch = [], [], [], []
    with tqdm(total=total, desc=description, unit="img", disable=not progress) as bar:
        for image, label, image_id in world.renders(seed, per_class, indices):
            batch.append(image)
            labels.append(label)
            ids.append(image_id)
            if len(batch) == backbone.batch_size:
                features.append(backbone.features(batch))
                bar.update(len(batch))
                batch = []
        if batch:
            features.append(backbone.features(batch))
            bar.update(len(batch))
    if not features:
        return np.zeros((0, backbone.feature_dim), np.float32), np.zeros(0, np.int64), ()
    return np.concatenate(features), np.asarray(labels, dtype=np.int64), tuple(ids)


SHAPE_CAVEAT = (
    "The demo bundle's backbone has random weights: its features carry colour, pattern, background, size and "
    "count well, but shape (circle / square / triangle) only weakly, so shape is the attribute it most often "
    "gets wrong."
)


#: One gallery image per class: the app shows one per class, and 48 images keep assets/ small.
EXAMPLES_PER_CLASS = 1


def write_examples(
    directory: str | Path, world: DemoWorld | None = None, per_class: int = EXAMPLES_PER_CLASS
) -> list[Path]:
    """Write gallery example PNGs (:data:`GALLERY_SEED` renders, never used in training) + ``index.json``.

    File names are ``<seen|unseen>__<class-slug>__<i>.png``; the index maps each file to class and image id.
    """
    world = world or default_world()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written, index = [], []
    for class_index, demo_class in enumerate(world.classes):
        kind = "seen" if demo_class.seen else "unseen"
        slug = demo_class.name.replace(" ", "-")
        for i in range(per_class):
            path = directory / f"{kind}__{slug}__{i}.png"
            image = world.render(class_index, GALLERY_SEED, i)
            atomic_write(path, lambda handle, image=image: image.save(handle, format="PNG", optimize=True))
            written.append(path)
            index.append(
                {
                    "file": path.name,
                    "class": demo_class.name,
                    "kind": kind,
                    "image_id": world.image_id(class_index, GALLERY_SEED, i),
                }
            )
    write_json(directory / "index.json", index)
    return written
