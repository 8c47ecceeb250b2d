"""Plotly figure of the shared latent space (UMAP 2-D): images, class prototypes and the user's points.

Built from plain arrays so it is testable without a model. Plotly renders hover text and labels as HTML, so
every name that reaches the figure is escaped first (``&``, ``<``, ``>``: the entities plotly decodes back).
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
#: Colour means the kind of class, never one class: with two dozen classes (or CUB's 200) per-class colours
#: cannot be told apart and clash with colour-named classes ("blue circle" drawn magenta). The class is on
#: hover, and "highlight" picks one out. Colour-blind safe (Okabe-Ito blue, orange, bluish green).
KIND_COLOURS = {"seen": "#0072B2", "unseen": "#E69F00", "user": "#009E73"}
_KIND_WORDS = {
    "seen": "learned from photos",
    "unseen": "known only from its description",
    "user": "defined by you",
}
_FADED = 0.12


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
) -> go.Figure:
    """Scatter of the scene; ``classes`` (names) and ``kinds`` filter it; ``query`` is marked.

    Colours are the class kinds (legend); each class prototype is joined by a line to the centre of its images
    on the map, so a short line means "description and photos agree". ``highlight`` (a class name) draws that
    class's images, prototype and line strongly and fades everything else.
    """
    selected = _selected_classes(scene, classes, kinds)
    safe_names = [_escape(name) for name in scene.class_names]
    focus = _highlight_index(scene, highlight)
    figure = go.Figure()
    for kind in ("seen", "unseen"):
        figure.add_traces(_image_trace(scene, selected, kind, safe_names, focus))
    for kind in KINDS:
        figure.add_traces(_prototype_trace(scene, selected, kind, safe_names, focus))
    for shape in _alignment_lines(scene, selected, focus):
        figure.add_shape(shape)
    if query is not None:
        figure.add_trace(
            go.Scatter(
                x=[query.xy[0]],
                y=[query.xy[1]],
                mode="markers+text",
                name="your image",
                text=["your image"],
                textposition="bottom center",  # class labels sit above their points: no overlap
                marker={"symbol": "x", "size": 18, "color": "black", "line": {"width": 2, "color": "white"}},
                hovertemplate=f"your image<br>predicted: {_escape(query.label)}<extra></extra>",
            )
        )
    figure.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        # Below the map: above it, the legend would sit under the app's plot label.
        legend={"orientation": "h", "yanchor": "top", "y": -0.02, "x": 0.0, "font": {"size": 12}},
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


def _image_trace(
    scene: LatentScene, selected: np.ndarray, kind: str, safe_names: list[str], focus: int | None
) -> list[go.Scatter]:
    kind_of_class = np.asarray(scene.class_kinds)
    keep = selected[scene.image_class] & (kind_of_class[scene.image_class] == kind)
    if not keep.any():
        return []
    class_index = scene.image_class[keep]
    image_ids = np.asarray(scene.image_ids, dtype=object)[keep]
    return [
        go.Scatter(
            x=scene.image_xy[keep, 0],
            y=scene.image_xy[keep, 1],
            mode="markers",
            name=f"{kind} class images",
            marker={
                "symbol": _IMAGE_SYMBOL[kind],
                "size": 6 if focus is None else [10 if i == focus else 5 for i in class_index],
                "opacity": _opacities(class_index, focus, 0.55),
                "color": KIND_COLOURS[kind],
                "line": {"width": 1.2, "color": KIND_COLOURS[kind]} if kind == "unseen" else {"width": 0},
            },
            customdata=np.stack(
                [[safe_names[index] for index in class_index], [_escape(str(i)) for i in image_ids]],
                axis=1,
            ),
            hovertemplate=f"%{{customdata[0]}} ({kind})<br>image %{{customdata[1]}}<extra></extra>",
        )
    ]


def _prototype_trace(
    scene: LatentScene, selected: np.ndarray, kind: str, safe_names: list[str], focus: int | None
) -> list[go.Scatter]:
    indices = [index for index, value in enumerate(scene.class_kinds) if value == kind and selected[index]]
    if not indices:
        return []
    labelled = [index for index in indices if kind == "user" or index == focus]
    return [
        go.Scatter(
            x=scene.class_xy[indices, 0],
            y=scene.class_xy[indices, 1],
            mode="markers+text" if labelled else "markers",
            name="your classes" if kind == "user" else f"{kind} class prototypes",
            # Only your classes and the highlighted one are labelled: two dozen labels overlap.
            text=[safe_names[index] if index in labelled else "" for index in indices] if labelled else None,
            textposition="top center",
            marker={
                "symbol": _PROTOTYPE_SYMBOL[kind],
                "size": 18 if kind == "user" else 12,
                "opacity": _opacities(np.asarray(indices), focus, 1.0),
                "color": KIND_COLOURS[kind],
                # Open symbols draw their outline in the kind colour; filled ones get a black rim.
                "line": {"width": 2, "color": KIND_COLOURS[kind]}
                if kind == "unseen"
                else {"width": 1.5, "color": "black"},
            },
            customdata=[safe_names[index] for index in indices],
            hovertemplate=(f"%{{customdata}}<br>class prototype: {_KIND_WORDS[kind]}<extra></extra>"),
        )
    ]


def _alignment_lines(scene: LatentScene, selected: np.ndarray, focus: int | None) -> list[dict]:
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
                "line": {
                    "color": KIND_COLOURS[scene.class_kinds[index]],
                    "width": 3 if focus is not None and strong else 1.5,
                },
                "opacity": 0.9 if strong else _FADED,
                "layer": "below",
                # One legend entry for all the lines (plotly shapes can carry a legend entry).
                "showlegend": not shapes,
                "legendgroup": "alignment lines",
                "name": "class prototype → centre of its images",
            }
        )
    return shapes
