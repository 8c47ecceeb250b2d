"""Plotly figure of the shared latent space (UMAP 2-D): images, class prototypes and the user's points.

Built from plain arrays so it is testable without a model. Plotly renders hover text and labels as HTML, so
every name that reaches the figure is escaped first (``&``, ``<``, ``>``: the entities plotly decodes back).

How it reads: colour is the class (a photo and its class's description share one), the marker symbol is the
kind (● photo of a seen class, ○ of an unseen one; ◆ seen, ◇ unseen, ★ your class's description). Where
things are drawn is :mod:`acmr_core.viz.map_layout`'s: each class's photos in a tinted cloud round its
description, classes pushed apart so none hides another, labels where they collide with none. Photos are
drawn above the descriptions, your classes above the photos and your image above everything.
"""

from __future__ import annotations

import html
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from acmr_core.viz.map_layout import (
    BOX_HEIGHT,
    BOX_WIDTH,
    MapLayout,
    PlacedLabel,
    annotation,
    cached_layout,
    place_labels,
)

KINDS = ("seen", "unseen", "user")
_IMAGE_SYMBOL = {"seen": "circle", "unseen": "circle-open"}
_PROTOTYPE_SYMBOL = {"seen": "diamond", "unseen": "diamond-open", "user": "star"}
#: One colour per class, cycled: plotly's Dark24 without its near-black (the visitor's image is black), all
#: dark enough to read as small dots on white. Beyond 23 classes colours repeat; _class_colours gives
#: neighbours on the map different ones, and hover and "highlight" name the class.
CLASS_PALETTE = (
    "#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF", "#B68100", "#750D86", "#EB663B",
    "#511CFB", "#00A08B", "#FB00D1", "#FC0080", "#B2828D", "#6C7C32", "#778AAE", "#862A16",
    "#A777F1", "#620042", "#1616A7", "#DA60CA", "#6C4516", "#0D2A63", "#AF0038",
)  # fmt: skip
_KIND_WORDS = {
    "seen": "learned from photos",
    "unseen": "known only from its description",
    "user": "defined by you",
}
_FADED = 0.12
_PHOTO_OPACITY = 0.9
_PROTOTYPE_OPACITY = 0.8
_USER_SIZE = 16
_QUERY_SIZE = 16
_CLOUD_TINT = 0.16  # the opacity of the disc behind a class's photo cloud
_LABEL_FONT = 11
_HEIGHT, _LIGHT_HEIGHT = 640, 400
_MARGIN = {"l": 4, "r": 4, "t": 30, "b": 4}
_LEGEND_HEIGHT = 150
_LABEL_CHARS = 36  # longer labels are cut on the map ("…"), but the highlighted one; hover shows them whole
# Drawing layers (plotly's zorder; higher is in front). Trace order stays images, prototypes, yours, query.
_Z_PROTOTYPE, _Z_PHOTO, _Z_USER, _Z_QUERY = 0, 1, 2, 3


@dataclass(frozen=True)
class LatentScene:
    """Everything drawn: 2-D points of image latents (one class each) and of class (semantic) latents."""

    class_names: Sequence[str]
    class_kinds: Sequence[str]  # "seen" | "unseen" | "user", one per class
    class_xy: np.ndarray  # (n_classes, 2) semantic latent of each class
    image_xy: np.ndarray  # (n_images, 2) visual latent of each cached image
    image_class: np.ndarray  # (n_images,) index into class_names
    image_ids: Sequence[str]

    def __post_init__(self) -> None:
        n_classes = len(self.class_names)
        if len(self.class_kinds) != n_classes or self.class_xy.shape != (n_classes, 2):
            raise ValueError("class names, kinds and coordinates must have one entry per class")
        if self.image_xy.shape != (len(self.image_ids), 2) or self.image_class.shape != (
            len(self.image_ids),
        ):
            raise ValueError("image coordinates, classes and ids must have one entry per image")
        unknown = set(self.class_kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown class kinds {sorted(unknown)}")


@dataclass(frozen=True)
class QueryPoint:
    """The last uploaded image, highlighted in the plot."""

    xy: tuple[float, float]
    label: str


def latent_figure(
    scene: LatentScene,
    classes: Collection[str] | None = None,
    kinds: Collection[str] = KINDS,
    query: QueryPoint | None = None,
    height: int | None = None,
    highlight: str | None = None,
    draft: QueryPoint | None = None,
    photos: bool = True,
    shared: bool = False,
) -> go.Figure:
    """Scatter of the scene; ``classes`` (names) and ``kinds`` filter it; ``query`` (the visitor's image,
    its label the class it was given) and ``draft`` (a class being defined, not yet added) are marked.
    ``photos=False`` draws the class descriptions only (a light map, redrawn on every edit of a draft),
    lower (``height`` by default 640 px, 400 without photos) and without a legend.

    A photo and its class's description share a colour (see :func:`class_colours`) and sit together: the
    photos in a tinted cloud round the description (:func:`~acmr_core.viz.map_layout.layout_map`, computed
    over the whole scene so a class stays put whatever is shown). The legend names the kinds, one entry
    each. A description the photos do not surround is joined to their cloud by a line: a long line means
    "description and photos disagree". ``highlight`` (a class name) draws that class strongly, labelled, and
    fades everything else. ``shared``: the user classes are everyone's (``--shared-classes``), so they are
    called "added classes", not "your classes".
    """
    layout = cached_layout(scene.class_xy, scene.image_xy, scene.image_class)
    drawn = _Drawn(
        scene=scene,
        selected=_selected_classes(scene, classes, kinds),
        safe_names=[_escape(name) for name in scene.class_names],
        # Over the whole scene, not the filtered part: a class keeps its colour whatever is shown.
        colours=class_colours(scene.class_xy),
        focus=_highlight_index(scene, highlight),
        layout=layout,
        shared=shared,
    )
    given = _highlight_index(scene, query.label) if query is not None else None
    figure = go.Figure()
    for kind in ("seen", "unseen") if photos else ():
        figure.add_traces(_image_trace(drawn, kind))
    for kind in KINDS:
        figure.add_traces(_prototype_trace(drawn, kind))
    # All at once: add_shape re-validates every earlier shape (200 classes took seconds).
    shapes = _cloud_discs(drawn, given) if photos else []
    if photos:
        shapes += _alignment_lines(drawn)
    placed_draft = layout.place(draft.xy) if draft is not None else None
    placed_query = layout.place(query.xy) if query is not None else None
    if query is not None and given is not None and drawn.selected[given]:
        shapes.append(_given_line(placed_query, tuple(layout.class_xy[given])))
    if draft is not None:
        figure.add_trace(_draft_trace(draft, placed_draft))
    if query is not None:
        figure.add_trace(_query_trace(query, placed_query))
    height = height or (_HEIGHT if photos else _LIGHT_HEIGHT)
    # The plot's height on screen (less the margins and, with photos, a phone's legend of up to 5 lines).
    plot_height = height - _MARGIN["t"] - _MARGIN["b"] - (_LEGEND_HEIGHT if photos else 0)
    labels = _labels(drawn, given, photos, draft, placed_draft, placed_query, plot_height / BOX_HEIGHT)
    figure.update_layout(
        shapes=shapes,
        annotations=[annotation(label, _LABEL_FONT) for label in labels],
        height=height,
        showlegend=photos,
        margin=_MARGIN,
        # Below the map (above it, the legend would sit under the app's plot label), inside the figure:
        # plotly wraps a horizontal legend's entries to the figure's width and makes room for them.
        legend={
            "orientation": "h",
            "yanchor": "top",
            "y": -0.01,
            "x": 0.0,
            "font": {"size": 11},
            "itemwidth": 30,
            "title": {"text": "colour = class", "side": "top"},
        },
        # The map's axes have no units or meaning (positions keep who is near whom): no ticks. The ranges
        # are the layout's box; a wider plot stretches it, which only adds room.
        xaxis={**_BARE_AXIS, "range": [0.0, BOX_WIDTH]},
        yaxis={**_BARE_AXIS, "range": [0.0, BOX_HEIGHT]},
        plot_bgcolor="white",
        hoverlabel={"namelength": -1},
        hovermode="closest",
        hoverdistance=12,
    )
    return figure


_BARE_AXIS = {
    "showticklabels": False,
    "title": None,
    "zeroline": False,
    "showgrid": False,
    "fixedrange": False,
}


def class_colours(class_xy: np.ndarray, palette: Sequence[str] = CLASS_PALETTE) -> list[str]:
    """One palette colour per class: all different up to the palette's size, then spread out on the map.

    Greedy in class order, so appending a class (yours) never recolours the earlier ones: each class takes
    the colour whose nearest use so far is farthest from it (an unused colour first, lowest index first).
    """
    points = np.nan_to_num(np.asarray(class_xy, dtype=np.float64))
    chosen = np.zeros(len(points), dtype=np.int64)
    for index in range(len(points)):
        nearest_use = np.full(len(palette), np.inf)
        if index:
            distance = np.linalg.norm(points[:index] - points[index], axis=1)
            np.minimum.at(nearest_use, chosen[:index], distance)
        chosen[index] = int(np.argmax(nearest_use))
    return [palette[index] for index in chosen]


def _escape(text: str) -> str:
    # quote=False: plotly shows "&quot;" literally, and quotes cannot open a tag.
    return html.escape(text, quote=False)


def _selected_classes(
    scene: LatentScene, classes: Collection[str] | None, kinds: Collection[str]
) -> np.ndarray:
    wanted_kinds = set(kinds)
    mask = np.array([kind in wanted_kinds for kind in scene.class_kinds], dtype=bool)
    if classes:
        wanted = set(classes)
        mask &= np.array([name in wanted for name in scene.class_names], dtype=bool)
    return mask


def _highlight_index(scene: LatentScene, highlight: str | None) -> int | None:
    if not highlight:
        return None
    try:
        return list(scene.class_names).index(highlight)
    except ValueError:
        return None  # a class deleted meanwhile: nothing to highlight


def _opacities(class_index: np.ndarray, focus: int | None, normal: float) -> float | list[float]:
    if focus is None:
        return normal
    return [1.0 if index == focus else _FADED for index in class_index]


@dataclass(frozen=True)
class _Drawn:
    """What every trace of one figure is drawn from: the scene, the classes shown, escaped names, class
    colours, the highlighted class and where everything is drawn."""

    scene: LatentScene
    selected: np.ndarray  # (n_classes,) bool
    safe_names: list[str]
    colours: list[str]
    focus: int | None
    layout: MapLayout
    shared: bool = False


def _image_trace(drawn: _Drawn, kind: str) -> list[go.Scatter]:
    scene, selected, safe_names, colours, focus = (
        drawn.scene, drawn.selected, drawn.safe_names, drawn.colours, drawn.focus,
    )  # fmt: skip
    kind_of_class = np.asarray(scene.class_kinds)
    keep = selected[scene.image_class] & (kind_of_class[scene.image_class] == kind)
    if not keep.any():
        return []
    class_index = scene.image_class[keep]
    image_ids = np.asarray(scene.image_ids, dtype=object)[keep]
    point_colours = [colours[index] for index in class_index]
    size = drawn.layout.photo_size
    return [
        go.Scatter(
            x=drawn.layout.image_xy[keep, 0],
            y=drawn.layout.image_xy[keep, 1],
            mode="markers",
            name=f"{kind} class images",
            zorder=_Z_PHOTO,
            marker={
                "symbol": _IMAGE_SYMBOL[kind],
                "size": size
                if focus is None
                else [size + 1 if i == focus else size - 1 for i in class_index],
                "opacity": _opacities(class_index, focus, _PHOTO_OPACITY),
                "color": point_colours,
                # Open circles are drawn by their outline; a thin white rim parts touching filled dots.
                "line": {"width": 1.5, "color": point_colours}
                if kind == "unseen"
                else {"width": 0.5, "color": "white"},
            },
            # The image id travels with the point (for callers of the API) but is not shown: it is an
            # internal path, and what a visitor wants to know is the class.
            customdata=np.stack(
                [[safe_names[index] for index in class_index], [_escape(str(i)) for i in image_ids]],
                axis=1,
            ),
            hovertemplate=f"photo of <b>%{{customdata[0]}}</b><br>({_PHOTO_WORDS[kind]})<extra></extra>",
        )
    ]


_PHOTO_WORDS = {
    "seen": "a seen class: the model learned from photos like it",
    "unseen": "an unseen class: the model never saw one in training",
}


def _prototype_trace(drawn: _Drawn, kind: str) -> list[go.Scatter]:
    scene, selected, safe_names, colours, focus = (
        drawn.scene, drawn.selected, drawn.safe_names, drawn.colours, drawn.focus,
    )  # fmt: skip
    indices = [index for index, value in enumerate(scene.class_kinds) if value == kind and selected[index]]
    if not indices:
        return []
    point_colours = [colours[index] for index in indices]
    user = kind == "user"
    normal = _USER_SIZE if user else drawn.layout.description_size
    return [
        go.Scatter(
            x=drawn.layout.class_xy[indices, 0],
            y=drawn.layout.class_xy[indices, 1],
            mode="markers",
            name=("added classes" if drawn.shared else "your classes")
            if user
            else f"{kind} class prototypes",
            # Yours stay above the photos; the others sit beneath them (in their cloud's hole).
            zorder=_Z_USER if user else _Z_PROTOTYPE,
            marker={
                "symbol": _PROTOTYPE_SYMBOL[kind],
                "size": _prototype_sizes(indices, focus, normal),
                "opacity": _opacities(np.asarray(indices), focus, 1.0 if user else _PROTOTYPE_OPACITY),
                "color": point_colours,
                # Open symbols are drawn by their outline in the class colour; filled ones get a black rim.
                "line": {"width": 2.0, "color": point_colours}
                if kind == "unseen"
                else {"width": 1.0, "color": "black"},
            },
            customdata=[safe_names[index] for index in indices],
            hovertemplate=(
                f"description of <b>%{{customdata}}</b><br>"
                f"class prototype: {_kind_words(kind, drawn.shared)}<extra></extra>"
            ),
        )
    ]


def _kind_words(kind: str, shared: bool) -> str:
    return "added by a user of this app" if kind == "user" and shared else _KIND_WORDS[kind]


def _prototype_sizes(indices: list[int], focus: int | None, normal: float) -> float | list[float]:
    if focus is None:
        return normal
    return [normal + 4 if index == focus else normal for index in indices]


def _draft_trace(draft: QueryPoint, at: tuple[float, float]) -> go.Scatter:
    """The class being defined, before it is added: where its description lands (issue 25's live preview)."""
    return go.Scatter(
        x=[at[0]],
        y=[at[1]],
        mode="markers",
        name="your draft",
        zorder=_Z_QUERY,
        marker={
            "symbol": "star-open",
            "size": 20,
            "color": "black",
            "line": {"width": 2.5, "color": "black"},
        },
        hovertemplate=f"your draft: <b>{_escape(draft.label)}</b> (not added yet)<extra></extra>",
    )


def _query_trace(query: QueryPoint, at: tuple[float, float]) -> go.Scatter:
    return go.Scatter(
        x=[at[0]],
        y=[at[1]],
        mode="markers",
        name="your image",
        zorder=_Z_QUERY,  # above everything, your classes included
        marker={
            "symbol": "x",
            "size": _QUERY_SIZE,
            "color": "black",
            "line": {"width": 1.5, "color": "white"},
        },
        hovertemplate=f"your image<br>given the class <b>{_escape(query.label)}</b><extra></extra>",
    )


def _cloud_discs(drawn: _Drawn, given: int | None) -> list[dict]:
    """A tinted disc in its class's colour behind each class's photo cloud (the class it was given, ringed
    in black): the grouping reads at a glance, whatever the colours."""
    layout, scene = drawn.layout, drawn.scene
    has_photos = np.bincount(scene.image_class, minlength=len(scene.class_names)) > 0
    shapes = []
    for index in np.flatnonzero(drawn.selected & has_photos[: len(drawn.selected)]):
        x, y = layout.cloud_centre[index]
        radius = layout.cloud_radius[index] + 1.5
        faded = drawn.focus is not None and index != drawn.focus
        ringed = index == given
        shapes.append(
            {
                "type": "circle",
                "x0": float(x - radius), "x1": float(x + radius),
                "y0": float(y - radius), "y1": float(y + radius),
                "fillcolor": drawn.colours[index],
                "opacity": _CLOUD_TINT / 3 if faded else _CLOUD_TINT if not ringed else 0.3,
                "line": {"width": 2.5 if ringed else 0, "color": "black"},
                "layer": "below",
            }
        )  # fmt: skip
    return shapes


def _given_line(query: tuple[float, float], description: tuple[float, float]) -> dict:
    """Your image, joined to the description of the class it was given."""
    return {
        "type": "line",
        "x0": query[0], "y0": query[1], "x1": float(description[0]), "y1": float(description[1]),
        "line": {"color": "black", "width": 1.5, "dash": "dot"},
        "layer": "above",
    }  # fmt: skip


def _alignment_lines(drawn: _Drawn) -> list[dict]:
    """A line from each selected class's description to the centre of its photo cloud (classes with images):
    a point where the description sits in its cloud, a long line where photos and description disagree."""
    scene, layout, focus = drawn.scene, drawn.layout, drawn.focus
    shapes = []
    for index in np.flatnonzero(drawn.selected):
        if not (scene.image_class == index).any():
            continue
        strong = focus is None or index == focus
        shapes.append(
            {
                "type": "line",
                "x0": float(layout.class_xy[index, 0]),
                "y0": float(layout.class_xy[index, 1]),
                "x1": float(layout.cloud_centre[index, 0]),
                "y1": float(layout.cloud_centre[index, 1]),
                "line": {"color": drawn.colours[index], "width": 3 if focus is not None and strong else 1.5},
                "opacity": 0.9 if strong else _FADED,
                "layer": "below",
                # One legend entry for all the lines (plotly shapes can carry a legend entry).
                "showlegend": not shapes,
                "legendgroup": "alignment lines",
                "name": "description → centre of its photos",
            }
        )
    return shapes


# ---- labels ------------------------------------------------------------------------------------------


def _labels(
    drawn: _Drawn,
    given: int | None,
    photos: bool,
    draft: QueryPoint | None,
    placed_draft: tuple[float, float] | None,
    placed_query: tuple[float, float] | None,
    y_scale: float,
) -> list[PlacedLabel]:
    """Your image, your draft, the class your image was given, the highlighted class and your classes, in
    that order of precedence: each at the first spot that no earlier label takes."""
    layout, scene, selected = drawn.layout, drawn.scene, drawn.selected
    items: list[tuple[str, tuple[float, float], float]] = []
    if placed_query is not None:
        items.append(("your image", placed_query, _QUERY_SIZE / 2))
    if placed_draft is not None and draft is not None:
        items.append((f"draft: {_short(draft.label)}", placed_draft, 10.0))
    named = [index for index in (given, drawn.focus) if index is not None and selected[index]]
    named += [
        i for i, kind in enumerate(scene.class_kinds) if kind == "user" and selected[i] and i not in named
    ]
    for index in dict.fromkeys(named):
        prefix = "given: " if index == given else ""
        radius = float(layout.cloud_radius[index]) if photos else layout.description_size / 2
        name = scene.class_names[index]
        text = prefix + name if index == drawn.focus else _short(prefix + name)  # the highlighted one whole
        items.append((text, tuple(layout.class_xy[index]), radius))
    obstacles = _marker_discs(drawn, photos)
    return [
        PlacedLabel(_escape(label.text), label.point, label.centre, label.leader)
        for label in place_labels(items, obstacles, font_size=_LABEL_FONT, y_scale=y_scale)
    ]


def _short(name: str) -> str:
    return name if len(name) <= _LABEL_CHARS else name[: _LABEL_CHARS - 1].rstrip() + "…"


def _marker_discs(drawn: _Drawn, photos: bool) -> np.ndarray:
    """Every drawn marker as (x, y, radius) in the layout's pixels: what a label should not cover."""
    layout, selected = drawn.layout, drawn.selected
    rows = [
        np.column_stack([layout.class_xy[selected], np.full(selected.sum(), layout.description_size / 2)])
    ]
    if photos:
        shown = selected[drawn.scene.image_class]
        rows.append(np.column_stack([layout.image_xy[shown], np.full(shown.sum(), layout.photo_size / 2)]))
    return np.vstack(rows) if rows else np.zeros((0, 3))
