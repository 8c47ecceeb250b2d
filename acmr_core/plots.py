"""Plotly figure of the shared latent space (UMAP 2-D): images, class prototypes and the user's points.

Built from plain arrays so it is testable without a model. Plotly renders hover text and labels as HTML, so
every name that reaches the figure is escaped first (``&``, ``<``, ``>``: the entities plotly decodes back).
"""

from __future__ import annotations

import html
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.colors
import plotly.graph_objects as go

KINDS = ("seen", "unseen", "user")
_IMAGE_SYMBOL = {"seen": "circle", "unseen": "circle-open"}
_PROTOTYPE_SYMBOL = {"seen": "diamond", "unseen": "diamond-open", "user": "star"}


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


def class_colours(n_classes: int) -> list[str]:
    """One distinguishable colour per class: a qualitative palette, or an even sweep when there are many."""
    palette = plotly.colors.qualitative.Dark24 + plotly.colors.qualitative.Light24
    if n_classes <= len(palette):
        return list(palette[:n_classes])
    return plotly.colors.sample_colorscale("Turbo", np.linspace(0.0, 1.0, n_classes).tolist())


def latent_figure(
    scene: LatentScene,
    classes: Collection[str] | None = None,
    kinds: Collection[str] = KINDS,
    query: QueryPoint | None = None,
    height: int = 620,
) -> go.Figure:
    """Scatter of the scene; ``classes`` (names) and ``kinds`` filter it; ``query`` is highlighted."""
    selected = _selected_classes(scene, classes, kinds)
    colours = class_colours(len(scene.class_names))
    safe_names = [_escape(name) for name in scene.class_names]
    figure = go.Figure()
    for kind in ("seen", "unseen"):
        figure.add_traces(_image_trace(scene, selected, kind, colours, safe_names))
    for kind in KINDS:
        figure.add_traces(_prototype_trace(scene, selected, kind, colours, safe_names))
    if query is not None:
        figure.add_trace(
            go.Scatter(
                x=[query.xy[0]],
                y=[query.xy[1]],
                mode="markers+text",
                name="your image",
                text=["your image"],
                textposition="top center",
                marker={"symbol": "x", "size": 18, "color": "black", "line": {"width": 2, "color": "white"}},
                hovertemplate=f"your image<br>predicted: {_escape(query.label)}<extra></extra>",
            )
        )
    figure.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        title={"text": "Shared latent space (UMAP 2-D): images ● and class prototypes ◆", "x": 0.01},
        legend={"orientation": "h", "yanchor": "bottom", "y": -0.12, "x": 0.0},
        xaxis={"showticklabels": False, "title": None, "zeroline": False},
        yaxis={"showticklabels": False, "title": None, "zeroline": False, "scaleanchor": "x"},
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


def _image_trace(
    scene: LatentScene, selected: np.ndarray, kind: str, colours: list[str], safe_names: list[str]
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
                "size": 6,
                "opacity": 0.7,
                "color": [colours[index] for index in class_index],
                "line": {"width": 1.2} if kind == "unseen" else {"width": 0},
            },
            customdata=np.stack(
                [[safe_names[index] for index in class_index], [_escape(str(i)) for i in image_ids]],
                axis=1,
            ),
            hovertemplate=f"%{{customdata[0]}} ({kind})<br>image %{{customdata[1]}}<extra></extra>",
        )
    ]


def _prototype_trace(
    scene: LatentScene, selected: np.ndarray, kind: str, colours: list[str], safe_names: list[str]
) -> list[go.Scatter]:
    indices = [index for index, value in enumerate(scene.class_kinds) if value == kind and selected[index]]
    if not indices:
        return []
    is_user = kind == "user"
    return [
        go.Scatter(
            x=scene.class_xy[indices, 0],
            y=scene.class_xy[indices, 1],
            mode="markers+text" if is_user else "markers",
            name="your classes" if is_user else f"{kind} class prototypes",
            text=[safe_names[index] for index in indices] if is_user else None,
            textposition="top center",
            marker={
                "symbol": _PROTOTYPE_SYMBOL[kind],
                "size": 18 if is_user else 12,
                "color": "gold" if is_user else [colours[index] for index in indices],
                # Open symbols draw their outline in the class colour; filled ones get a black rim.
                "line": {"width": 1.5} if kind == "unseen" else {"width": 1.5, "color": "black"},
            },
            customdata=[safe_names[index] for index in indices],
            hovertemplate=f"%{{customdata}} ({kind} class prototype)<extra></extra>",
        )
    ]
