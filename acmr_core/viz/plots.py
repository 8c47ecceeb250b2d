"""Plotly figure of the shared latent space (UMAP 2-D): images, class prototypes and the user's points.

Built from plain arrays so it is testable without a model. Plotly renders hover text and labels as HTML, so
every name that reaches the figure is escaped first (``&``, ``<``, ``>``: the entities plotly decodes back).

How it reads: colour is the class (a photo and its class's description share one), the marker symbol is the
kind (● photo of a seen class, ○ of an unseen one; ◆ seen, ◇ unseen, ★ your class's description). Photos
are drawn above the descriptions (a well-aligned model puts every photo under its class's diamond), your
classes above the photos and your image above everything.
"""

from __future__ import annotations

import html
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

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
_PHOTO_SIZE = 7
_PHOTO_OPACITY = 0.75  # overlapping photos stay visible through each other
_PROTOTYPE_SIZE = 18  # larger than a photo: its rim shows round the photos drawn on top of it
_PROTOTYPE_OPACITY = 0.55
_USER_SIZE = 22
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
    height: int = 620,
    highlight: str | None = None,
    draft: QueryPoint | None = None,
    photos: bool = True,
) -> go.Figure:
    """Scatter of the scene; ``classes`` (names) and ``kinds`` filter it; ``query`` (the visitor's image)
    and ``draft`` (a class being defined, not yet added) are marked. ``photos=False`` draws the class
    descriptions only (a light map, redrawn on every edit of a draft).

    A photo and its class's prototype share a colour (see :func:`class_colours`); the legend names the kinds,
    one entry each. Each class prototype is joined by a line to the centre of its images on the map, so a
    short line means "description and photos agree". ``highlight`` (a class name) draws that class's images,
    prototype and line strongly and fades everything else.
    """
    drawn = _Drawn(
        scene=scene,
        selected=_selected_classes(scene, classes, kinds),
        safe_names=[_escape(name) for name in scene.class_names],
        # Over the whole scene, not the filtered part: a class keeps its colour whatever is shown.
        colours=class_colours(scene.class_xy),
        focus=_highlight_index(scene, highlight),
    )
    scene, selected, colours, focus = drawn.scene, drawn.selected, drawn.colours, drawn.focus
    figure = go.Figure()
    for kind in ("seen", "unseen") if photos else ():
        figure.add_traces(_image_trace(drawn, kind))
    for kind in KINDS:
        figure.add_traces(_prototype_trace(drawn, kind))
    # All at once: add_shape re-validates every earlier shape (200 classes took seconds).
    if photos:
        figure.update_layout(shapes=_alignment_lines(scene, selected, colours, focus))
    if draft is not None:
        figure.add_trace(_draft_trace(draft))
    if query is not None:
        figure.add_trace(_query_trace(query))
    figure.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        # Below the map: above it, the legend would sit under the app's plot label. Its swatches take one
        # class's colour (plotly shows the first point's), so the title says what colour means.
        legend={
            "orientation": "h",
            "yanchor": "top",
            "y": -0.02,
            "x": 0.0,
            "font": {"size": 12},
            "title": {"text": "colour = class;", "side": "left"},
        },
        # The map's axes have no units or meaning (UMAP keeps neighbourhoods, not directions): no ticks.
        xaxis={"showticklabels": False, "title": None, "zeroline": False, "showgrid": False},
        yaxis={
            "showticklabels": False,
            "title": None,
            "zeroline": False,
            "showgrid": False,
            "scaleanchor": "x",
        },
        plot_bgcolor="white",
        hoverlabel={"namelength": -1},
    )
    return figure


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
    colours and the highlighted class."""

    scene: LatentScene
    selected: np.ndarray  # (n_classes,) bool
    safe_names: list[str]
    colours: list[str]
    focus: int | None


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
    return [
        go.Scatter(
            x=scene.image_xy[keep, 0],
            y=scene.image_xy[keep, 1],
            mode="markers",
            name=f"{kind} class images",
            zorder=_Z_PHOTO,
            marker={
                "symbol": _IMAGE_SYMBOL[kind],
                "size": _PHOTO_SIZE if focus is None else [9 if i == focus else 5 for i in class_index],
                "opacity": _opacities(class_index, focus, _PHOTO_OPACITY),
                "color": point_colours,
                # Open circles are drawn by their outline; a thin white rim parts overlapping filled dots.
                "line": {"width": 1.5, "color": point_colours}
                if kind == "unseen"
                else {"width": 0.5, "color": "white"},
            },
            customdata=np.stack(
                [[safe_names[index] for index in class_index], [_escape(str(i)) for i in image_ids]],
                axis=1,
            ),
            hovertemplate=(
                f"photo of <b>%{{customdata[0]}}</b> ({kind} class)<br>"
                "image %{customdata[1]}<extra></extra>"
            ),
        )
    ]


def _prototype_trace(drawn: _Drawn, kind: str) -> list[go.Scatter]:
    scene, selected, safe_names, colours, focus = (
        drawn.scene, drawn.selected, drawn.safe_names, drawn.colours, drawn.focus,
    )  # fmt: skip
    indices = [index for index, value in enumerate(scene.class_kinds) if value == kind and selected[index]]
    if not indices:
        return []
    labelled = [index for index in indices if kind == "user" or index == focus]
    point_colours = [colours[index] for index in indices]
    user = kind == "user"
    return [
        go.Scatter(
            x=scene.class_xy[indices, 0],
            y=scene.class_xy[indices, 1],
            mode="markers+text" if labelled else "markers",
            name="your classes" if user else f"{kind} class prototypes",
            # Yours stay above the photos (they have none of their own to hide); the others sit beneath them.
            zorder=_Z_USER if user else _Z_PROTOTYPE,
            # Only your classes and the highlighted one are labelled: two dozen labels overlap.
            text=[safe_names[index] if index in labelled else "" for index in indices] if labelled else None,
            textposition="top center",
            marker={
                "symbol": _PROTOTYPE_SYMBOL[kind],
                "size": _prototype_sizes(indices, focus, _USER_SIZE if user else _PROTOTYPE_SIZE),
                "opacity": _opacities(np.asarray(indices), focus, 1.0 if user else _PROTOTYPE_OPACITY),
                "color": point_colours,
                # Open symbols are drawn by their outline in the class colour; filled ones get a black rim.
                "line": {"width": 2.5, "color": point_colours}
                if kind == "unseen"
                else {"width": 1.5 if user else 1.0, "color": "black"},
            },
            customdata=[safe_names[index] for index in indices],
            hovertemplate=(
                f"description of <b>%{{customdata}}</b><br>"
                f"class prototype: {_KIND_WORDS[kind]}<extra></extra>"
            ),
        )
    ]


def _prototype_sizes(indices: list[int], focus: int | None, normal: int) -> int | list[int]:
    if focus is None:
        return normal
    # The highlighted class's diamond grows, so it still shows round its own (enlarged) photos on top.
    return [normal + 8 if index == focus else normal for index in indices]


def _draft_trace(draft: QueryPoint) -> go.Scatter:
    """The class being defined, before it is added: where its description lands (issue 25's live preview)."""
    return go.Scatter(
        x=[draft.xy[0]],
        y=[draft.xy[1]],
        mode="markers+text",
        name="your draft",
        zorder=_Z_QUERY,
        text=[_escape(draft.label)],
        textposition="top center",
        marker={
            "symbol": "star-open",
            "size": 24,
            "color": "black",
            "line": {"width": 2.5, "color": "black"},
        },
        hovertemplate=f"your draft: <b>{_escape(draft.label)}</b> (not added yet)<extra></extra>",
    )


def _query_trace(query: QueryPoint) -> go.Scatter:
    return go.Scatter(
        x=[query.xy[0]],
        y=[query.xy[1]],
        mode="markers+text",
        name="your image",
        zorder=_Z_QUERY,  # above everything, your classes included
        text=["your image"],
        textposition="bottom center",  # class labels sit above their points: no overlap
        marker={"symbol": "x", "size": 20, "color": "black", "line": {"width": 2, "color": "white"}},
        hovertemplate=f"your image<br>predicted: {_escape(query.label)}<extra></extra>",
    )


def _alignment_lines(
    scene: LatentScene, selected: np.ndarray, colours: list[str], focus: int | None
) -> list[dict]:
    """A line from each selected class's prototype to the 2-D centre of its images (classes with images)."""
    shapes = []
    for index in np.flatnonzero(selected):
        own = scene.image_class == index
        if not own.any():
            continue
        centre = scene.image_xy[own].mean(axis=0)
        strong = focus is None or index == focus
        shapes.append(
            {
                "type": "line",
                "x0": float(scene.class_xy[index, 0]),
                "y0": float(scene.class_xy[index, 1]),
                "x1": float(centre[0]),
                "y1": float(centre[1]),
                "line": {"color": colours[index], "width": 3 if focus is not None and strong else 1.5},
                "opacity": 0.9 if strong else _FADED,
                "layer": "below",
                # One legend entry for all the lines (plotly shapes can carry a legend entry).
                "showlegend": not shapes,
                "legendgroup": "alignment lines",
                "name": "class prototype → centre of its images",
            }
        )
    return shapes
