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

This module is the world, its render seeds and the record a bundle keeps of them; the drawing is
:mod:`acmr_core.data.demo_render`, and building the demo bundle is :mod:`acmr_core.pipelines.demo`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from acmr_core.data.classes import ClassTable, attribute_name
from acmr_core.data.demo_render import ATTRIBUTE_GROUPS, RENDER_SIZE, render_class
from acmr_core.errors import ACMRError, BundleError, quote_value
from acmr_core.fileio import atomic_write, write_json

# Render seeds. The bundle records which seeds trained it; evaluation refuses those.
TRAIN_SEED = 0
GALLERY_SEED = 1  # example images and the latent-space plot (never used to fit the model)
#: "Show examples" of a class in the app, and the render-your-class benchmark: never used to build a bundle.
EXAMPLES_SEED = 7
DEFAULT_EVAL_SEED = 2026
#: The render sizes a bundle's demo-world record may name (px, square).
RENDER_SIZES = range(16, 1025)


@dataclass(frozen=True)
class DemoWorldRecord:
    """What a demo-world bundle records of its renders (``provenance["demo_world"]``): evaluation refuses its
    seeds, and evaluation and serving both draw fresh images at its ``render_size``."""

    used_seeds: tuple[int, ...] = (TRAIN_SEED, GALLERY_SEED)
    train_seed: int = TRAIN_SEED
    plot_seed: int = GALLERY_SEED
    train_per_class: int | None = None
    plot_per_class: int | None = None
    render_size: int = RENDER_SIZE

    #: Where a bundle's provenance keeps the record.
    KEY: ClassVar[str] = "demo_world"

    def __post_init__(self) -> None:
        size = self.render_size
        if isinstance(size, bool) or not isinstance(size, int) or size not in RENDER_SIZES:
            raise BundleError(
                f"the demo-world record says render_size {quote_value(size)}; "
                f"expected {RENDER_SIZES.start} to {RENDER_SIZES.stop - 1} px"
            )

    def to_provenance(self) -> dict[str, Any]:
        return {**asdict(self), "used_seeds": list(self.used_seeds)}

    @classmethod
    def from_provenance(cls, provenance: Mapping[str, Any]) -> DemoWorldRecord | None:
        """The record of a bundle's provenance, or None for a bundle not rendered from the demo world; a
        record that is not one (a bad seed, size or count) is refused, naming the field."""
        record = provenance.get(cls.KEY)
        if not isinstance(record, Mapping):
            return None
        fields: dict[str, Any] = {"render_size": record.get("render_size", RENDER_SIZE)}
        try:
            fields["used_seeds"] = tuple(_whole(s, "used_seeds") for s in record.get("used_seeds", []))
            for key in ("train_seed", "plot_seed", "train_per_class", "plot_per_class"):
                if record.get(key) is not None:
                    fields[key] = _whole(record[key], key)
        except TypeError:
            raise BundleError("the demo-world record's used_seeds must be a list of seeds") from None
        return cls(**fields)


def _whole(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BundleError(f"the demo-world record says {key} {quote_value(value)}; expected a whole number")
    return value


# Groups a random-weight ResNet-101 reads reliably; shape is the weak one (see the module docstring).
STRONG_GROUPS = ("colour", "pattern", "size", "count", "background")

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
        return [attribute_name(group, value) for group, value in self.values.items()]


@dataclass(frozen=True)
class DemoWorld(ClassTable):
    """A set of demo classes over :data:`ATTRIBUTE_GROUPS`, with a deterministic renderer.

    Its class properties (seen / unseen indices, kinds) are :class:`~acmr_core.data.classes.ClassTable`'s,
    shared with the bundle's catalog; ``ClassCatalog.from_demo_world(world)`` is the catalog of its classes.
    """

    classes: tuple[DemoClass, ...]
    groups: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(ATTRIBUTE_GROUPS))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def class_names(self) -> list[str]:
        return list(self.names)

    @property
    def descriptions(self) -> tuple[str, ...]:
        return tuple(c.description for c in self.classes)

    @property
    def attribute_names(self) -> list[str]:
        """Grouped attribute names, ``"group: value"``, in a fixed order."""
        return [attribute_name(g, v) for g, values in self.groups.items() for v in values]

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

    @classmethod
    def of_classes(
        cls, names: Sequence[str], attribute_names: Sequence[str], attributes: np.ndarray, seen: np.ndarray
    ) -> DemoWorld:
        """The world of a bundle's classes, each mapped back to its combination by its attribute values, as
        a visitor's class is (renders are keyed on the combination, so these are the images it was built
        from); a class the demo world cannot draw is refused, named."""
        classes = []
        for name, row, is_seen in zip(names, np.asarray(attributes, np.float32), seen, strict=True):
            try:
                values = combination_from_attributes(dict(zip(attribute_names, row.tolist(), strict=True)))
            except ACMRError as error:
                raise ACMRError(f"{quote_value(name)}: {error}") from None
            classes.append(DemoClass(values=values, seen=bool(is_seen)))
        return cls(classes=tuple(classes))

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


# --- combinations beyond the classes ------------------------------------------------------------------

#: Render seed of the images that train the demo backbone's learnt part (never a bundle, gallery or
#: evaluation seed), and of its held-out validation renders of the seen classes.
BACKBONE_TRAIN_SEED = 11
BACKBONE_VALIDATION_SEED = 12
#: How many combinations outside the world are kept for the render-your-class check (never trained on).
HELD_OUT_COMBINATIONS = 30


def all_combinations() -> list[dict[str, str]]:
    """Every combination the renderer can draw (360), in the groups' value order."""
    return [
        dict(zip(ATTRIBUTE_GROUPS, values, strict=True)) for values in product(*ATTRIBUTE_GROUPS.values())
    ]


def fresh_combinations(known: Sequence[Mapping[str, str]], count: int, seed: int) -> list[dict[str, str]]:
    """A seeded sample of ``count`` drawable combinations that are none of ``known``, in drawing order."""
    fresh = [values for values in all_combinations() if values not in known]
    order = np.random.default_rng(seed).permutation(len(fresh))[: min(count, len(fresh))]
    return [fresh[i] for i in sorted(order)]


def held_out_combinations(world: DemoWorld) -> list[dict[str, str]]:
    """The combinations kept for "define your own class" checks: no class of ``world``, never trained on."""
    return fresh_combinations([c.values for c in world.classes], HELD_OUT_COMBINATIONS, 0)


def backbone_training_combinations(world: DemoWorld) -> list[dict[str, str]]:
    """What the demo backbone's learnt part may train on: every combination but the unseen classes' and the
    held-out ones. Covering nearly all of them leaves no shortcut (shape cannot be told from the rest)."""
    excluded = [c.values for c in world.classes if not c.seen] + held_out_combinations(world)
    return [values for values in all_combinations() if values not in excluded]


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
    known = {attribute_name(g, v) for g, values in ATTRIBUTE_GROUPS.items() for v in values}
    unknown = [name for name, value in attributes.items() if name not in known and float(value) >= 0.5]
    if unknown:
        raise ACMRError(f"the demo world cannot draw attribute {unknown[0]!r}")
    combination: dict[str, str] = {}
    for group, values in ATTRIBUTE_GROUPS.items():
        on = [v for v in values if float(attributes.get(attribute_name(group, v), 0.0)) >= 0.5]
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
        if not any(float(completed.get(attribute_name(group, v), 0.0)) >= 0.5 for v in values):
            completed[attribute_name(group, typical[group])] = 1.0
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
            int(on[:, index[key]].sum()) if (key := attribute_name(group, v)) in index else -1 for v in values
        ]
        typical[group] = values[int(np.argmax(counts))]
    return typical


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
    size: int = RENDER_SIZE,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Render ``size``-px images and run them through ``backbone``: ``(features (N, D), labels (N,), ids)``"""
    indices = list(range(len(world.classes)) if class_indices is None else class_indices)
    total = len(indices) * per_class
    features, labels, ids, batch = [], [], [], []
    with tqdm(total=total, desc=description, unit="img", disable=not progress) as bar:
        for image, label, image_id in world.renders(seed, per_class, indices, size):
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
    for class_index, (demo_class, kind) in enumerate(zip(world.classes, world.kinds, strict=True)):
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
